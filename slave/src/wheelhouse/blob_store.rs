//! The shared file cache: every downloaded wheel or sdist, stored once under its sha256.
//!
//! Content addressing makes the cache safe to share between slots and processes: a file is
//! written to a temporary name, hashed, made read-only and renamed into place, so a reader sees
//! either nothing or the whole, verified file. Wheelhouses are staged as hard links into it.

use super::resolver::RemoteFile;
use super::{helper, WheelhouseError, WheelhouseSettings};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The content-addressed store under `<cache>/blobs`.
pub(crate) struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    pub async fn open(cache_dir: &Path) -> Result<BlobStore, WheelhouseError> {
        let root = cache_dir.join("blobs");
        tokio::fs::create_dir_all(root.join("tmp"))
            .await
            .map_err(WheelhouseError::io("cannot create", &root))?;
        Ok(BlobStore { root })
    }

    /// Where the file with this sha256 lives (whether or not it is there yet).
    pub fn path_of(&self, sha256: &str) -> PathBuf {
        let prefix = sha256.get(..2).unwrap_or("00");
        self.root.join(prefix).join(sha256)
    }

    pub fn contains(&self, sha256: &str) -> bool {
        self.path_of(sha256).is_file()
    }

    /// Copies a local package file into the store (bounded by `max_bytes`).
    pub async fn ingest_local(
        &self,
        path: &Path,
        max_bytes: u64,
    ) -> Result<(String, u64), WheelhouseError> {
        let temp = self.temp_path()?;
        let source = path.to_path_buf();
        let dest = temp.clone();
        let copied = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
            let mut input = std::fs::File::open(&source)?.take(max_bytes + 1);
            let mut output = std::fs::File::create_new(&dest)?;
            std::io::copy(&mut input, &mut output)
        })
        .await
        .map_err(|e| WheelhouseError::Helper(format!("copy task failed: {e}")))?
        .map_err(WheelhouseError::io("cannot copy", path))?;
        if copied > max_bytes {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(crate::package::PackageError::TooLarge {
                path: path.to_path_buf(),
                size: copied,
                limit: max_bytes,
            }
            .into());
        }
        self.commit(&temp, None, &path.display().to_string()).await
    }

    /// Downloads `url` into the store (bounded), checking `expected_sha256` if given.
    pub async fn download(
        &self,
        settings: &WheelhouseSettings,
        url: &str,
        expected_sha256: Option<&str>,
        max_bytes: u64,
        package_url: bool,
    ) -> Result<(String, u64), WheelhouseError> {
        let temp = self.temp_path()?;
        let request = helper::FetchRequest {
            url,
            dest: &temp,
            max_bytes,
        };
        let result = helper::fetch(settings, &[request], package_url)
            .await
            .and_then(|mut results| results.pop().unwrap_or(Ok(0)));
        if let Err(error) = result {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(error);
        }
        self.commit(&temp, expected_sha256, url).await
    }

    /// Makes resolved files available, downloading (in parallel) only those the store lacks.
    /// Returns each file's sha256, size and the bytes downloaded for it (0 on a cache hit).
    pub async fn fetch_locked(
        &self,
        settings: &WheelhouseSettings,
        files: &[&RemoteFile],
        max_bytes: u64,
    ) -> Result<Vec<(String, u64, u64)>, WheelhouseError> {
        let mut out = vec![None; files.len()];
        let mut missing = Vec::new();
        for (index, file) in files.iter().enumerate() {
            match tokio::fs::metadata(self.path_of(&file.sha256)).await {
                Ok(meta) => out[index] = Some((file.sha256.clone(), meta.len(), 0)),
                Err(_) => missing.push((index, self.temp_path()?)),
            }
        }
        let requests: Vec<helper::FetchRequest> = missing
            .iter()
            .map(|(index, temp)| helper::FetchRequest {
                url: &files[*index].url,
                dest: temp,
                max_bytes: files[*index].size.map_or(max_bytes, |s| s.min(max_bytes)),
            })
            .collect();
        let results = helper::fetch(settings, &requests, false).await;
        let results = match results {
            Ok(results) => results,
            Err(error) => {
                for (_, temp) in &missing {
                    let _ = tokio::fs::remove_file(temp).await;
                }
                return Err(error);
            }
        };
        let mut first_error = None;
        for ((index, temp), result) in missing.iter().zip(results) {
            let file = files[*index];
            let committed = match result {
                Ok(_) => self.commit(temp, Some(&file.sha256), &file.url).await,
                Err(error) => {
                    let _ = tokio::fs::remove_file(temp).await;
                    Err(error)
                }
            };
            match committed {
                Ok((sha, size)) => {
                    tracing::debug!(file = %file.filename, size, "downloaded");
                    out[*index] = Some((sha, size, size));
                }
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        if let Some(error) = first_error {
            return Err(error);
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Hard-links (or, across filesystems, copies) the blob to `dest`, and marks the blob as
    /// used now for the least-recently-used pruning.
    pub async fn link_into(&self, sha256: &str, dest: &Path) -> Result<(), WheelhouseError> {
        let blob = self.path_of(sha256);
        let target = dest.to_path_buf();
        let linked = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            if let Ok(file) = std::fs::File::open(&blob) {
                let _ = file.set_modified(std::time::SystemTime::now());
            }
            if std::fs::hard_link(&blob, &target).is_err() {
                std::fs::copy(&blob, &target)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| WheelhouseError::Helper(format!("staging task failed: {e}")))?;
        linked.map_err(WheelhouseError::io("cannot stage", dest))
    }

    fn temp_path(&self) -> Result<PathBuf, WheelhouseError> {
        let dir = self.root.join("tmp");
        let file = tempfile::Builder::new()
            .prefix("part-")
            .tempfile_in(&dir)
            .map_err(WheelhouseError::io("cannot create a file in", &dir))?;
        // Only the unique name is wanted: the writer creates the file itself (create_new).
        let path = file.path().to_path_buf();
        drop(file);
        Ok(path)
    }

    /// Hashes a complete temporary file, checks it, and renames it into place.
    async fn commit(
        &self,
        temp: &Path,
        expected_sha256: Option<&str>,
        origin: &str,
    ) -> Result<(String, u64), WheelhouseError> {
        let path = temp.to_path_buf();
        let hashed = tokio::task::spawn_blocking(move || -> std::io::Result<(String, u64)> {
            let mut file = std::fs::File::open(&path)?;
            let mut hasher = Sha256::new();
            let size = std::io::copy(&mut file, &mut hasher)?;
            Ok((hex::encode(hasher.finalize()), size))
        })
        .await
        .map_err(|e| WheelhouseError::Helper(format!("hash task failed: {e}")))?;
        let (sha, size) = match hashed {
            Ok(done) => done,
            Err(source) => {
                let _ = tokio::fs::remove_file(temp).await;
                return Err(WheelhouseError::Io {
                    action: "cannot hash",
                    path: temp.to_path_buf(),
                    source,
                });
            }
        };
        if let Some(expected) = expected_sha256 {
            if !expected.eq_ignore_ascii_case(&sha) {
                let _ = tokio::fs::remove_file(temp).await;
                return Err(WheelhouseError::HashMismatch {
                    url: origin.to_string(),
                    expected: expected.to_ascii_lowercase(),
                    actual: sha,
                });
            }
        }
        let dest = self.path_of(&sha);
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(WheelhouseError::io("cannot create", parent))?;
        }
        let mut perms = tokio::fs::metadata(temp)
            .await
            .map_err(WheelhouseError::io("cannot read", temp))?
            .permissions();
        perms.set_readonly(true);
        tokio::fs::set_permissions(temp, perms)
            .await
            .map_err(WheelhouseError::io("cannot protect", temp))?;
        tokio::fs::rename(temp, &dest)
            .await
            .map_err(WheelhouseError::io("cannot store", &dest))?;
        Ok((sha, size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_files_are_stored_under_their_hash_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).await.unwrap();
        let file = dir.path().join("pkg-1.0.tar.gz");
        std::fs::write(&file, b"hello").unwrap();
        let (sha, size) = store.ingest_local(&file, 100).await.unwrap();
        assert_eq!(
            sha,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(size, 5);
        assert!(store.contains(&sha));
        // Idempotent: a second ingest replaces the blob with identical content.
        assert_eq!(store.ingest_local(&file, 100).await.unwrap().0, sha);
        let staged = dir.path().join("staged.tar.gz");
        store.link_into(&sha, &staged).await.unwrap();
        assert_eq!(std::fs::read(&staged).unwrap(), b"hello");
        let err = store.ingest_local(&file, 4).await.unwrap_err();
        assert!(err.to_string().contains("limit"), "{err}");
        assert!(err.is_package_fault());
        // Nothing half-written is left behind.
        assert_eq!(
            std::fs::read_dir(dir.path().join("blobs/tmp"))
                .unwrap()
                .count(),
            0
        );
    }

    #[tokio::test]
    async fn a_wrong_hash_is_refused_and_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).await.unwrap();
        let temp = store.temp_path().unwrap();
        std::fs::write(&temp, b"hello").unwrap();
        let err = store
            .commit(&temp, Some(&"0".repeat(64)), "https://x/a-1.0.tar.gz")
            .await
            .unwrap_err();
        assert!(matches!(err, WheelhouseError::HashMismatch { .. }), "{err}");
        assert!(!temp.exists());
        assert!(!store.contains("2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"));
    }
}
