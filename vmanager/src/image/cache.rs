//! Where images live, and the key that says whether a cached one still fits its recipe.

use super::guest_image::MANIFEST_FILE;
use super::ImageError;
use pyti_wire::recipe::Recipe;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Bumped whenever the builder changes what it puts into an image, so old images are rebuilt.
pub(crate) const BUILDER_VERSION: &str = "pyti-image-3";

/// A per-user directory of built images, one subdirectory per cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageCache {
    root: PathBuf,
}

impl ImageCache {
    /// A cache rooted at `root` (created on first build).
    pub fn new(root: PathBuf) -> ImageCache {
        ImageCache { root }
    }

    /// `$XDG_CACHE_HOME/pyti/images`, else `~/.cache/pyti/images`.
    pub fn default_root() -> Result<PathBuf, ImageError> {
        let base = match std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => PathBuf::from(
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .ok_or(ImageError::NoCacheDir)?,
            )
            .join(".cache"),
        };
        Ok(base.join("pyti").join("images"))
    }

    /// The cache directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the image with `key` lives (whether or not it is built).
    pub fn image_dir(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// Removes the images (~250 MB each) that nothing has used for `unused_for`, except those in
    /// `keep`: every agent, uv or host package change builds a new one, and the old ones would
    /// pile up. Use is what [`super::GuestImage::mark_used`] records (builds and cache hits
    /// record it too); a running slave records it for its images periodically, so an image in
    /// use is never old. An image is first renamed out of the cache, so a build that looks it up
    /// meanwhile builds it afresh instead of finding half of it.
    pub fn prune(&self, keep: &[&str], unused_for: Duration) -> Result<PrunedImages, ImageError> {
        let mut pruned = PrunedImages::default();
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(pruned),
            Err(e) => return Err(ImageError::io("list", &self.root)(e)),
        };
        let now = SystemTime::now();
        for entry in entries.filter_map(|e| e.ok()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(".prune-") {
                // Left by a prune that was killed (or is running in another process).
                let _ = std::fs::remove_dir_all(entry.path());
                continue;
            }
            let is_key = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
            if !is_key || keep.contains(&name.as_str()) || !entry.path().is_dir() {
                continue;
            }
            let dir = entry.path();
            // An image without a manifest is a damaged one: its directory's time stands in.
            let used = std::fs::metadata(dir.join(MANIFEST_FILE))
                .or_else(|_| std::fs::metadata(&dir))
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            if now.duration_since(used).unwrap_or_default() < unused_for {
                continue;
            }
            let doomed = self.root.join(format!(".prune-{name}"));
            if std::fs::rename(&dir, &doomed).is_err() {
                continue; // Another process is pruning it.
            }
            let bytes = dir_bytes(&doomed);
            std::fs::remove_dir_all(&doomed).map_err(ImageError::io("remove", &doomed))?;
            pruned.keys.push(name);
            pruned.freed_bytes += bytes;
        }
        Ok(pruned)
    }
}

/// What [`ImageCache::prune`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrunedImages {
    /// Keys of the removed images.
    pub keys: Vec<String>,
    pub freed_bytes: u64,
}

/// Bytes of the files directly in `dir` (images are flat).
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// The cache key: sha256 over the builder version, the host's kernel and installed packages
/// (`host_state`: an image is a copy of them, so an `apt upgrade` must rebuild it), the recipe's
/// `guest`, `python` and `prepare` sections, and the sha256 of the agent binary and of each
/// host tool (`(name, sha256)`) baked in.
pub(crate) fn cache_key(
    recipe: &Recipe,
    host_state: &str,
    agent_sha256: &str,
    tools: &[(&str, &str)],
) -> String {
    let mut hasher = Sha256::new();
    let mut part = |label: &str, bytes: &[u8]| {
        // Length-prefixed so no two different inputs hash the same concatenation.
        hasher.update(label.as_bytes());
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(bytes);
    };
    part("builder", BUILDER_VERSION.as_bytes());
    part("host", host_state.as_bytes());
    part("guest", &json(&recipe.guest));
    part("python", &json(&recipe.python));
    part("prepare", &json(&recipe.prepare));
    part("agent", agent_sha256.as_bytes());
    for (name, sha256) in tools {
        part(name, sha256.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// Canonical JSON of one recipe section (serialising plain recipe structs cannot fail).
fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

/// sha256 of a file, hex.
pub(crate) fn file_sha256(path: &Path) -> Result<String, ImageError> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(ImageError::io("open", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(ImageError::io("read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe() -> Recipe {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes/debian-12.toml");
        Recipe::load(&path).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn key_changes_with_what_goes_into_the_image_only() {
        let base = recipe();
        let uv = [("uv", "uv sum")];
        let key = cache_key(&base, "6.1", "agent", &uv);
        assert_eq!(key, cache_key(&base, "6.1", "agent", &uv));
        assert_ne!(key, cache_key(&base, "6.1", "other agent", &uv));
        assert_ne!(key, cache_key(&base, "6.2", "agent", &uv));
        assert_ne!(key, cache_key(&base, "6.1", "agent", &[("uv", "new uv")]));
        assert_ne!(key, cache_key(&base, "6.1", "agent", &[]));
        let mut more = base.clone();
        more.guest.packages.push("python3-yaml".into());
        assert_ne!(key, cache_key(&more, "6.1", "agent", &uv));
        // Task steps and VM resources do not change the image.
        let mut steps = base.clone();
        steps.steps.clear();
        steps.vm.memory_mib = 4096;
        assert_eq!(key, cache_key(&steps, "6.1", "agent", &uv));
    }

    #[test]
    fn prune_removes_only_images_unused_for_long_enough_and_not_kept() {
        let temp = tempfile::tempdir().unwrap();
        let cache = ImageCache::new(temp.path().join("images"));
        assert_eq!(
            cache.prune(&[], Duration::ZERO).unwrap(),
            PrunedImages::default(),
            "no cache yet: nothing to do"
        );
        let day = Duration::from_secs(24 * 60 * 60);
        let image = |key: char, age: Duration| {
            let dir = cache.image_dir(&key.to_string().repeat(64));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("system.qcow2"), vec![0u8; 1000]).unwrap();
            let manifest = std::fs::File::create(dir.join(MANIFEST_FILE)).unwrap();
            manifest.set_modified(SystemTime::now() - age).unwrap();
            dir
        };
        let old = image('a', 10 * day);
        let old_but_kept = image('b', 10 * day);
        let recent = image('c', day);
        let not_an_image = cache.root().join("notes");
        std::fs::create_dir_all(&not_an_image).unwrap();
        let building = cache.root().join(".build-xyz");
        std::fs::create_dir_all(&building).unwrap();
        let interrupted = cache.root().join(format!(".prune-{}", "d".repeat(64)));
        std::fs::create_dir_all(&interrupted).unwrap();

        let keep = "b".repeat(64);
        let pruned = cache.prune(&[keep.as_str()], 7 * day).unwrap();
        assert_eq!(pruned.keys, vec!["a".repeat(64)]);
        assert_eq!(pruned.freed_bytes, 1000);
        assert!(!old.exists());
        assert!(!interrupted.exists(), "an interrupted prune is finished");
        for kept in [&old_but_kept, &recent, &not_an_image, &building] {
            assert!(kept.exists(), "{}", kept.display());
        }
    }

    #[test]
    fn default_root_prefers_xdg() {
        // Only reads the environment; the process environment is not modified.
        let root = ImageCache::default_root();
        if let Ok(root) = root {
            assert!(root.ends_with("pyti/images"), "{}", root.display());
        }
    }
}
