//! Where images live, and the key that says whether a cached one still fits its recipe.

use super::ImageError;
use pyti_wire::recipe::Recipe;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

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
    fn default_root_prefers_xdg() {
        // Only reads the environment; the process environment is not modified.
        let root = ImageCache::default_root();
        if let Ok(root) = root {
            assert!(root.ends_with("pyti/images"), "{}", root.display());
        }
    }
}
