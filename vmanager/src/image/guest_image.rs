//! A built guest image: its files, kernel command line and manifest.

use super::ImageError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The manifest's file name inside an image directory; written last, so its presence means the
/// image is complete.
pub const MANIFEST_FILE: &str = "image.json";
/// Manifest schema this build reads and writes.
const MANIFEST_SCHEMA: u32 = 1;
/// A manifest is a few hundred bytes; anything larger is not ours.
const MAX_MANIFEST_BYTES: u64 = 64 * 1024;

/// A complete guest image in the cache; everything vmanager needs to boot it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestImage {
    /// The cache key (hex sha256) this image was built for.
    pub key: String,
    /// The image's directory in the cache.
    pub dir: PathBuf,
    /// Kernel to boot directly (`<kernel>`): an ELF vmlinux (PVH entry) or a bzImage.
    pub kernel: PathBuf,
    /// supermin's mini initrd, trimmed to the modules a guest needs.
    pub initrd: PathBuf,
    /// The root filesystem (ext2 inside qcow2). Never boot it writable: give each VM a qcow2
    /// overlay backed by it (`qemu-img create -b system.qcow2 -F qcow2`).
    pub system_disk: PathBuf,
    /// Kernel command line (`root=UUID=… console=ttyS0 …`); the root is found by UUID, so disk
    /// order does not matter.
    pub kernel_cmdline: String,
    /// The recipe the image was built for (its name).
    pub recipe: String,
    /// sha256 of the agent binary baked in.
    pub agent_sha256: String,
    /// Host kernel release the image boots.
    pub kernel_release: String,
}

/// What `image.json` stores (paths relative to the image directory).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Manifest {
    pub schema: u32,
    pub key: String,
    pub kernel: String,
    pub initrd: String,
    pub system_disk: String,
    pub kernel_cmdline: String,
    pub recipe: String,
    pub agent_sha256: String,
    pub kernel_release: String,
    pub built_unix: u64,
}

impl GuestImage {
    /// Loads a built image from its directory, checking its manifest and files.
    pub fn load(dir: &Path) -> Result<GuestImage, ImageError> {
        let bad = |detail: String| ImageError::BadCachedImage {
            path: dir.to_path_buf(),
            detail,
        };
        let path = dir.join(MANIFEST_FILE);
        let meta = std::fs::metadata(&path).map_err(|e| bad(format!("no {MANIFEST_FILE}: {e}")))?;
        if meta.len() > MAX_MANIFEST_BYTES {
            return Err(bad(format!("{MANIFEST_FILE} is {} bytes", meta.len())));
        }
        let text =
            std::fs::read(&path).map_err(|e| bad(format!("cannot read {MANIFEST_FILE}: {e}")))?;
        let manifest: Manifest =
            serde_json::from_slice(&text).map_err(|e| bad(format!("bad {MANIFEST_FILE}: {e}")))?;
        if dir
            .file_name()
            .is_some_and(|name| name != manifest.key.as_str())
        {
            return Err(bad(format!("manifest is for image {}", manifest.key)));
        }
        if manifest.schema != MANIFEST_SCHEMA {
            return Err(bad(format!(
                "manifest schema {} (expected {MANIFEST_SCHEMA})",
                manifest.schema
            )));
        }
        let file = |name: &str| -> Result<PathBuf, ImageError> {
            if name.is_empty() || name.contains('/') {
                return Err(bad(format!("file name `{name}` in the manifest")));
            }
            let path = dir.join(name);
            if !path.is_file() {
                return Err(bad(format!("{} is missing", path.display())));
            }
            Ok(path)
        };
        Ok(GuestImage {
            key: manifest.key.clone(),
            dir: dir.to_path_buf(),
            kernel: file(&manifest.kernel)?,
            initrd: file(&manifest.initrd)?,
            system_disk: file(&manifest.system_disk)?,
            kernel_cmdline: manifest.kernel_cmdline,
            recipe: manifest.recipe,
            agent_sha256: manifest.agent_sha256,
            kernel_release: manifest.kernel_release,
        })
    }

    /// Records that this image is in use now (its manifest's modification time), which keeps
    /// [`super::ImageCache::prune`] from removing it for a while.
    pub fn mark_used(&self) -> Result<(), ImageError> {
        let path = self.dir.join(MANIFEST_FILE);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()))
            .map_err(ImageError::io("mark as used", &path))
    }

    /// The manifest for this image.
    pub(crate) fn manifest(&self) -> Manifest {
        let name = |p: &Path| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        Manifest {
            schema: MANIFEST_SCHEMA,
            key: self.key.clone(),
            kernel: name(&self.kernel),
            initrd: name(&self.initrd),
            system_disk: name(&self.system_disk),
            kernel_cmdline: self.kernel_cmdline.clone(),
            recipe: self.recipe.clone(),
            agent_sha256: self.agent_sha256.clone(),
            kernel_release: self.kernel_release.clone(),
            built_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        }
    }
}
