//! Keeping the shared cache bounded: least recently used files go first, and staging
//! directories a crashed slave left behind are removed.

use super::{WheelhouseError, WheelhouseSettings};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Default bound on the file cache: a few hundred typical wheelhouses.
pub const DEFAULT_MAX_CACHE_BYTES: u64 = 8 * 1024 * 1024 * 1024;
/// A staging directory older than this belongs to no running task (the longest task is a few
/// steps of at most six hours each, and a wheelhouse is dropped when its task ends).
const STALE_STAGING_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// What [`prune_cache`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub removed_files: u64,
    pub freed_bytes: u64,
    /// Bytes the file cache holds afterwards.
    pub kept_bytes: u64,
    pub removed_staging_dirs: u64,
}

/// Removes the least recently used cached files until the cache holds at most `max_bytes`, and
/// staging directories older than a day. Safe while other tasks run: a staged wheelhouse holds
/// hard links, so removing a cached file never breaks one, and a resolution whose files were
/// pruned is simply resolved again.
pub async fn prune_cache(
    settings: &WheelhouseSettings,
    max_bytes: u64,
) -> Result<PruneReport, WheelhouseError> {
    let cache_dir = settings.cache_dir.clone();
    tokio::task::spawn_blocking(move || prune_blocking(&cache_dir, max_bytes, SystemTime::now()))
        .await
        .map_err(|e| WheelhouseError::Helper(format!("prune task failed: {e}")))?
}

fn prune_blocking(
    cache_dir: &Path,
    max_bytes: u64,
    now: SystemTime,
) -> Result<PruneReport, WheelhouseError> {
    let mut report = PruneReport::default();
    let mut blobs: Vec<(SystemTime, u64, PathBuf)> = Vec::new();
    let root = cache_dir.join("blobs");
    for shard in read_dir_or_empty(&root)? {
        if shard.file_name() == "tmp" || !shard.path().is_dir() {
            continue;
        }
        for entry in read_dir_or_empty(&shard.path())? {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_file() {
                // Staging touches a file's modification time: it is the last use.
                let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                blobs.push((used, meta.len(), entry.path()));
            }
        }
    }
    let mut total: u64 = blobs.iter().map(|b| b.1).sum();
    blobs.sort();
    for (_, size, path) in blobs {
        if total <= max_bytes {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            total -= size;
            report.removed_files += 1;
            report.freed_bytes += size;
        }
    }
    report.kept_bytes = total;
    for dir in read_dir_or_empty(&cache_dir.join("staging"))? {
        let old = dir
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|modified| now.duration_since(modified).ok())
            .is_some_and(|age| age > STALE_STAGING_AGE);
        if old && std::fs::remove_dir_all(dir.path()).is_ok() {
            report.removed_staging_dirs += 1;
        }
    }
    Ok(report)
}

fn read_dir_or_empty(dir: &Path) -> Result<Vec<std::fs::DirEntry>, WheelhouseError> {
    match std::fs::read_dir(dir) {
        Ok(entries) => Ok(entries.filter_map(Result::ok).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(WheelhouseError::Io {
            action: "cannot list",
            path: dir.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(cache: &Path, name: &str, size: usize, age_secs: u64) -> PathBuf {
        let dir = cache.join("blobs").join(&name[..2]);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, vec![0u8; size]).unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(age_secs))
            .unwrap();
        path
    }

    #[test]
    fn the_least_recently_used_files_go_first() {
        let cache = tempfile::tempdir().unwrap();
        let oldest = blob(cache.path(), "aa01", 100, 300);
        let middle = blob(cache.path(), "bb02", 100, 200);
        let newest = blob(cache.path(), "cc03", 100, 100);
        let report = prune_blocking(cache.path(), 150, SystemTime::now()).unwrap();
        assert_eq!(report.removed_files, 2);
        assert_eq!(report.freed_bytes, 200);
        assert_eq!(report.kept_bytes, 100);
        assert!(!oldest.exists() && !middle.exists() && newest.exists());
        let again = prune_blocking(cache.path(), 150, SystemTime::now()).unwrap();
        assert_eq!(again.removed_files, 0);
    }

    #[test]
    fn stale_staging_directories_are_removed_and_fresh_ones_kept() {
        let cache = tempfile::tempdir().unwrap();
        let fresh = cache.path().join("staging/wheelhouse-fresh");
        std::fs::create_dir_all(&fresh).unwrap();
        let later = SystemTime::now() + STALE_STAGING_AGE + Duration::from_secs(60);
        let report = prune_blocking(cache.path(), u64::MAX, SystemTime::now()).unwrap();
        assert_eq!(report.removed_staging_dirs, 0);
        assert!(fresh.exists());
        let report = prune_blocking(cache.path(), u64::MAX, later).unwrap();
        assert_eq!(report.removed_staging_dirs, 1);
        assert!(!fresh.exists());
        // An empty cache directory is not an error.
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(
            prune_blocking(&empty.path().join("absent"), 0, SystemTime::now()).unwrap(),
            PruneReport::default()
        );
    }
}
