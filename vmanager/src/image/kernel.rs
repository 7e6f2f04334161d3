//! The guest kernel: the host's own Debian kernel, booted uncompressed when possible.
//!
//! Under TCG, decompressing a bzImage costs ~2.4 s of every cold boot; QEMU boots the ELF
//! `vmlinux` inside it directly through the PVH entry point, so the builder extracts it once.

use super::host_tool::XZ;
use super::ImageError;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Where Debian installs kernels and their modules.
const BOOT_DIR: &str = "/boot";
const MODULES_DIR: &str = "/lib/modules";
/// The magic bytes opening an xz stream (Debian compresses its kernels with xz).
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];

/// A host kernel with its modules.
#[derive(Debug, Clone)]
pub struct HostKernel {
    /// `6.1.0-56-amd64`.
    pub release: String,
    /// `/boot/vmlinuz-<release>` (a bzImage).
    pub bzimage: PathBuf,
    /// `/lib/modules/<release>`.
    pub modules: PathBuf,
}

/// Picks the newest readable `/boot/vmlinuz-*` that has a modules directory.
pub fn find_host_kernel() -> Result<HostKernel, ImageError> {
    let entries = std::fs::read_dir(BOOT_DIR).map_err(|e| ImageError::NoKernel {
        detail: format!("cannot list {BOOT_DIR}: {e}"),
    })?;
    let mut kernels: Vec<HostKernel> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let release = name.strip_prefix("vmlinuz-")?.to_string();
            let modules = Path::new(MODULES_DIR).join(&release);
            modules.is_dir().then(|| HostKernel {
                release,
                bzimage: e.path(),
                modules,
            })
        })
        .filter(|k| std::fs::File::open(&k.bzimage).is_ok())
        .collect();
    kernels.sort_by_key(|k| version_key(&k.release));
    kernels.pop().ok_or_else(|| ImageError::NoKernel {
        detail: format!("no readable {BOOT_DIR}/vmlinuz-* with a matching {MODULES_DIR}/<release>"),
    })
}

/// Orders `6.1.0-56-amd64` numerically field by field.
fn version_key(release: &str) -> Vec<u64> {
    release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// Writes the guest kernel into `dir`: the uncompressed ELF `vmlinux` if it can be extracted,
/// else a copy of the bzImage. Returns the file written.
pub(crate) fn install_kernel(kernel: &HostKernel, dir: &Path) -> Result<PathBuf, ImageError> {
    let bzimage =
        std::fs::read(&kernel.bzimage).map_err(ImageError::io("read kernel", &kernel.bzimage))?;
    if let Some(vmlinux) = extract_vmlinux(&bzimage)? {
        let path = dir.join("vmlinux");
        std::fs::write(&path, vmlinux).map_err(ImageError::io("write", &path))?;
        return Ok(path);
    }
    tracing::warn!(kernel = %kernel.bzimage.display(), "no xz payload found; booting the compressed bzImage (slower under TCG)");
    let path = dir.join("vmlinuz");
    std::fs::write(&path, bzimage).map_err(ImageError::io("write", &path))?;
    Ok(path)
}

/// The ELF kernel inside a bzImage, if its payload is xz (what `extract-vmlinux` does).
fn extract_vmlinux(bzimage: &[u8]) -> Result<Option<Vec<u8>>, ImageError> {
    let mut start = 0;
    while let Some(found) = find(&bzimage[start..], XZ_MAGIC) {
        let offset = start + found;
        let mut child = XZ
            .command()
            .args(["-dc", "--single-stream"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| ImageError::MissingProgram {
                program: XZ.program.into(),
                package: XZ.package.into(),
                detail: e.to_string(),
            })?;
        let payload = bzimage[offset..].to_vec();
        let mut stdin = child.stdin.take();
        let feeder = std::thread::spawn(move || {
            if let Some(stdin) = stdin.as_mut() {
                // xz stops reading after the stream; the broken pipe that follows is expected.
                let _ = stdin.write_all(&payload);
            }
        });
        let output = child
            .wait_with_output()
            .map_err(ImageError::io("run xz on", "kernel payload"))?;
        let _ = feeder.join();
        if output.stdout.starts_with(b"\x7fELF") {
            return Ok(Some(output.stdout));
        }
        start = offset + 1;
    }
    Ok(None)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_sort_numerically() {
        let mut v = vec!["6.1.0-9-amd64", "6.1.0-56-amd64", "5.10.0-30-amd64"];
        v.sort_by_key(|r| version_key(r));
        assert_eq!(v, ["5.10.0-30-amd64", "6.1.0-9-amd64", "6.1.0-56-amd64"]);
    }

    #[test]
    fn finds_magic() {
        assert_eq!(find(b"abc\xfd7zXZ\x00rest", XZ_MAGIC), Some(3));
        assert_eq!(find(b"nothing", XZ_MAGIC), None);
    }
}
