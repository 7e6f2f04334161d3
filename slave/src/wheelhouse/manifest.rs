//! Cached resolutions: which files a spec resolved to for a target, so the same spec again is
//! staged from the file cache without running the resolver or touching the network.

use super::WheelhouseError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Bumped when the manifest's meaning changes, so old entries are ignored.
const MANIFEST_SCHEMA: u32 = 1;
/// Largest manifest read back (a few hundred files of ~200 bytes each).
const MAX_MANIFEST_BYTES: u64 = 1024 * 1024;

/// What a staged file is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum FileRole {
    /// The package under test (goes to the I/O disk's `package/`).
    Package,
    /// A runtime dependency.
    Dependency,
    /// Needed to build an sdist in the guest (setuptools, wheel, build backends).
    Build,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ManifestFile {
    pub filename: String,
    pub sha256: String,
    pub size: u64,
    pub role: FileRole,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Manifest {
    schema: u32,
    created_unix: u64,
    pub dist_name: String,
    pub version: String,
    pub files: Vec<ManifestFile>,
}

/// The cache key of a resolution: the spec (a file by its hash), the target and the index.
pub(crate) fn key(spec_key: &str, target_key: &str, index_url: &str) -> String {
    let text = format!(
        "schema={MANIFEST_SCHEMA}\nresolver={}\n{spec_key}\n{target_key}\nindex={index_url}\n",
        super::resolver::UV_VERSION
    );
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn manifest_path(cache_dir: &Path, key: &str) -> PathBuf {
    cache_dir.join("resolutions").join(format!("{key}.json"))
}

impl Manifest {
    pub fn new(dist_name: String, version: String, files: Vec<ManifestFile>) -> Manifest {
        Manifest {
            schema: MANIFEST_SCHEMA,
            created_unix: now_unix(),
            dist_name,
            version,
            files,
        }
    }

    /// The cached resolution for `key`, if there is a readable one (a corrupt or foreign entry
    /// is treated as absent: it is only a cache).
    pub async fn load(cache_dir: &Path, key: &str) -> Option<Manifest> {
        let text = read_bounded(&manifest_path(cache_dir, key)).await?;
        let manifest: Manifest = serde_json::from_str(&text).ok()?;
        let sane = manifest.schema == MANIFEST_SCHEMA
            && manifest.files.iter().all(|f| {
                crate::package::DistFile::parse(&f.filename).is_ok()
                    && f.sha256.len() == 64
                    && f.sha256.bytes().all(|b| b.is_ascii_hexdigit())
            });
        sane.then_some(manifest)
    }

    pub fn is_fresh(&self, ttl: Duration) -> bool {
        now_unix().saturating_sub(self.created_unix) < ttl.as_secs()
    }

    pub async fn save(&self, cache_dir: &Path, key: &str) -> Result<(), WheelhouseError> {
        let path = manifest_path(cache_dir, key);
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| WheelhouseError::Helper(format!("cannot serialise a manifest: {e}")))?;
        write_atomic(&path, text.as_bytes()).await
    }
}

/// The sha256 and size a package URL downloaded to earlier (the URL's file is fetched once).
pub(crate) async fn url_package(
    cache_dir: &Path,
    url: &str,
    sha256: Option<&str>,
) -> Option<(String, u64)> {
    let text = read_bounded(&url_path(cache_dir, url, sha256)).await?;
    let (sha, size) = text.trim().split_once(' ')?;
    let valid = sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit());
    valid.then(|| Some((sha.to_string(), size.parse().ok()?)))?
}

pub(crate) async fn remember_url_package(
    cache_dir: &Path,
    url: &str,
    sha256: Option<&str>,
    actual_sha256: &str,
    size: u64,
) -> Result<(), WheelhouseError> {
    let path = url_path(cache_dir, url, sha256);
    write_atomic(&path, format!("{actual_sha256} {size}\n").as_bytes()).await
}

fn url_path(cache_dir: &Path, url: &str, sha256: Option<&str>) -> PathBuf {
    let key = hex::encode(Sha256::digest(
        format!("{url}\n{}", sha256.unwrap_or("")).as_bytes(),
    ));
    cache_dir.join("urls").join(key)
}

async fn read_bounded(path: &Path) -> Option<String> {
    let meta = tokio::fs::metadata(path).await.ok()?;
    if meta.len() > MAX_MANIFEST_BYTES {
        return None;
    }
    tokio::fs::read_to_string(path).await.ok()
}

async fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WheelhouseError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(WheelhouseError::io("cannot create", dir))?;
    let temp = tempfile::Builder::new()
        .prefix(".manifest-")
        .tempfile_in(dir)
        .map_err(WheelhouseError::io("cannot create a file in", dir))?;
    let (file, temp_path) = temp.into_parts();
    drop(file);
    tokio::fs::write(&temp_path, bytes)
        .await
        .map_err(WheelhouseError::io("cannot write", &*temp_path))?;
    temp_path
        .persist(path)
        .map_err(|e| WheelhouseError::io("cannot write", path)(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manifests_round_trip_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let files = vec![ManifestFile {
            filename: "six-1.16.0-py2.py3-none-any.whl".into(),
            sha256: "8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254".into(),
            size: 11053,
            role: FileRole::Dependency,
        }];
        let manifest = Manifest::new("six".into(), "1.16.0".into(), files);
        let key = key("pypi:six==1.16.0", "python=3.11", "https://pypi.org/simple");
        assert_ne!(
            key,
            super::key("pypi:six==1.16.0", "python=3.12", "https://pypi.org/simple")
        );
        manifest.save(dir.path(), &key).await.unwrap();
        let loaded = Manifest::load(dir.path(), &key).await.unwrap();
        assert_eq!(loaded, manifest);
        assert!(loaded.is_fresh(Duration::from_secs(60)));
        assert!(!loaded.is_fresh(Duration::ZERO));
        // A tampered entry (a path in a file name) is ignored.
        let path = manifest_path(dir.path(), &key);
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("six-1.16.0", "../six-1.16.0");
        std::fs::write(&path, text).unwrap();
        assert!(Manifest::load(dir.path(), &key).await.is_none());
    }

    #[tokio::test]
    async fn url_downloads_are_remembered() {
        let dir = tempfile::tempdir().unwrap();
        assert!(url_package(dir.path(), "https://x/a-1.0.tar.gz", None)
            .await
            .is_none());
        let sha = "ab".repeat(32);
        remember_url_package(dir.path(), "https://x/a-1.0.tar.gz", None, &sha, 42)
            .await
            .unwrap();
        assert_eq!(
            url_package(dir.path(), "https://x/a-1.0.tar.gz", None).await,
            Some((sha, 42))
        );
        assert!(
            url_package(dir.path(), "https://x/a-1.0.tar.gz", Some(&"0".repeat(64)))
                .await
                .is_none()
        );
    }
}
