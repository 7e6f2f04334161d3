//! Results waiting for the master: written to local disk before they are sent, removed only when
//! the master acknowledged them, so a master outage or a slave restart loses nothing.
//!
//! Reports are idempotent at the master (same task, attempt and lease), so sending one twice after
//! a crash between "sent" and "removed" is harmless.

use pyti_wire::job::ResultReport;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Largest outbox entry read back (a report carries bounded raw data; anything bigger is damage).
const MAX_ENTRY_BYTES: u64 = 64 * 1024 * 1024;

/// A directory of pending reports, one JSON file each.
#[derive(Debug, Clone)]
pub struct Outbox {
    dir: PathBuf,
}

/// The outbox could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error(
        "cannot use the outbox at {path}: {source}; check the slave's state directory is writable"
    )]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot encode a report: {0}")]
    Encode(#[from] serde_json::Error),
}

/// Runs outbox file work on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, OutboxError> + Send + 'static,
) -> Result<T, OutboxError> {
    tokio::task::spawn_blocking(work).await.unwrap_or_else(|e| {
        Err(OutboxError::Io {
            path: PathBuf::from("<outbox>"),
            source: std::io::Error::other(format!("outbox task failed: {e}")),
        })
    })
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OutboxError + '_ {
    move |source| OutboxError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Outbox {
    /// Opens (creating) the outbox directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Outbox, OutboxError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        Ok(Outbox { dir })
    }

    fn entry_path(&self, report: &ResultReport) -> PathBuf {
        self.dir
            .join(format!("{}.{}.json", report.task_id, report.attempt))
    }

    /// Stores `report` durably (write, fsync, rename) and returns its entry's path. The file
    /// work runs on the blocking pool, never on the async executor.
    pub async fn store(&self, report: &ResultReport) -> Result<PathBuf, OutboxError> {
        let (outbox, report) = (self.clone(), report.clone());
        blocking(move || outbox.store_now(&report)).await
    }

    /// Forgets an entry once the master acknowledged it.
    pub async fn remove(&self, entry: &Path) -> Result<(), OutboxError> {
        let (outbox, entry) = (self.clone(), entry.to_path_buf());
        blocking(move || outbox.remove_now(&entry)).await
    }

    /// Every pending report, oldest first; unreadable entries are moved aside and logged.
    pub async fn pending(&self) -> Result<Vec<(PathBuf, ResultReport)>, OutboxError> {
        let outbox = self.clone();
        blocking(move || outbox.pending_now()).await
    }

    fn store_now(&self, report: &ResultReport) -> Result<PathBuf, OutboxError> {
        let path = self.entry_path(report);
        let temp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec(report)?;
        let mut file = std::fs::File::create(&temp).map_err(io(&temp))?;
        file.write_all(&bytes).map_err(io(&temp))?;
        file.sync_all().map_err(io(&temp))?;
        std::fs::rename(&temp, &path).map_err(io(&path))?;
        if let Ok(dir) = std::fs::File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        Ok(path)
    }

    fn remove_now(&self, entry: &Path) -> Result<(), OutboxError> {
        match std::fs::remove_file(entry) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(entry)(e)),
            _ => Ok(()),
        }
    }

    fn pending_now(&self) -> Result<Vec<(PathBuf, ResultReport)>, OutboxError> {
        let mut entries: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&self.dir)
            .map_err(io(&self.dir))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .map(|e| {
                let modified = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                (modified, e.path())
            })
            .collect();
        entries.sort();
        let mut out = Vec::new();
        for (_, path) in entries {
            let parsed = std::fs::metadata(&path)
                .ok()
                .filter(|m| m.len() <= MAX_ENTRY_BYTES)
                .and_then(|_| std::fs::read(&path).ok())
                .and_then(|bytes| serde_json::from_slice::<ResultReport>(&bytes).ok());
            match parsed {
                Some(report) => out.push((path, report)),
                None => {
                    let aside = path.with_extension("damaged");
                    tracing::warn!(entry = %path.display(), "outbox entry is unreadable; moved aside to {}", aside.display());
                    let _ = std::fs::rename(&path, &aside);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyti_wire::job::ReportOutcome;

    fn report(task_id: i64, attempt: u32) -> ResultReport {
        ResultReport {
            task_id,
            attempt,
            lease_id: "lease-1".into(),
            outcome: ReportOutcome::Infrastructure {
                reason: "the VM did not boot".into(),
            },
        }
    }

    #[tokio::test]
    async fn a_stored_report_survives_until_removed_and_a_reopen_sees_it() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        let entry = outbox.store(&report(7, 2)).await.unwrap();
        outbox.store(&report(8, 1)).await.unwrap();

        let reopened = Outbox::open(dir.path()).unwrap();
        let pending = reopened.pending().await.unwrap();
        let mut ids: Vec<(i64, u32)> = pending
            .iter()
            .map(|(_, r)| (r.task_id, r.attempt))
            .collect();
        ids.sort();
        assert_eq!(ids, [(7, 2), (8, 1)]);
        assert_eq!(
            pending.iter().find(|(_, r)| r.task_id == 7).unwrap().1,
            report(7, 2)
        );

        reopened.remove(&entry).await.unwrap();
        reopened.remove(&entry).await.unwrap(); // removing twice is fine
        let left: Vec<i64> = reopened
            .pending()
            .await
            .unwrap()
            .iter()
            .map(|(_, r)| r.task_id)
            .collect();
        assert_eq!(left, [8]);
    }

    #[tokio::test]
    async fn a_damaged_entry_is_moved_aside_not_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        std::fs::write(dir.path().join("9.1.json"), b"{ not json").unwrap();
        assert!(outbox.pending().await.unwrap().is_empty());
        assert!(dir.path().join("9.1.damaged").exists());
        assert!(!dir.path().join("9.1.json").exists());
    }
}
