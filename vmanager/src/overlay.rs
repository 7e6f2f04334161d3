//! Throw-away qcow2 overlays: a slot writes only to its own overlay, never to the cached image.
//!
//! libvirt 9.0 cannot revert external snapshots, so overlays are managed here: created with
//! `qemu-img create -b BASE -F qcow2` (a few ms, no data copied) and deleted by the slot.

use crate::VmError;
use std::path::Path;
use std::process::Command;

/// Creates (or re-creates) `overlay` as an empty qcow2 whose backing file is `base` (qcow2).
pub fn create_overlay(base: &Path, overlay: &Path) -> Result<(), VmError> {
    if !base.is_file() {
        return Err(VmError::ImageMissing {
            path: base.to_path_buf(),
        });
    }
    let base = base
        .canonicalize()
        .map_err(VmError::io("cannot resolve", base))?;
    remove_if_present(overlay)?;
    let output = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(&base)
        .arg(overlay)
        .output()
        .map_err(|e| VmError::Overlay {
            path: overlay.to_path_buf(),
            detail: format!("cannot run qemu-img: {e}"),
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(VmError::Overlay {
            path: overlay.to_path_buf(),
            detail: stderr.trim().chars().take(1000).collect(),
        });
    }
    Ok(())
}

/// Deletes `path` if it exists.
pub fn remove_if_present(path: &Path) -> Result<(), VmError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(VmError::Io {
            action: "cannot remove",
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_points_at_its_base_and_missing_base_says_build_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.qcow2");
        let status = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&base)
            .arg("16M")
            .status()
            .unwrap();
        assert!(status.success());
        let overlay = dir.path().join("overlay.qcow2");
        create_overlay(&base, &overlay).unwrap();
        create_overlay(&base, &overlay).unwrap(); // re-creating replaces it
        let info = Command::new("qemu-img")
            .args(["info", "--output=json", "-U"])
            .arg(&overlay)
            .output()
            .unwrap();
        let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
        assert_eq!(info["backing-filename"], base.to_str().unwrap());

        let err = create_overlay(&dir.path().join("nope.qcow2"), &overlay).unwrap_err();
        assert!(err.to_string().contains("pyti image build"), "{err}");
    }
}
