//! The I/O disk of one VM slot: what vmanager attaches, how it is created, and who may mount it.
//!
//! Mount exclusivity lives in the types: a slot's disk is either a [`HeldDisk`] (the guest must
//! not have it; only the appliance mounts it, and only inside one inject or extract call) or a
//! [`ReleasedDisk`] (the appliance has it unmounted and flushed; the guest may mount it). Neither
//! is `Clone`: [`crate::Session::inject`] turns a held disk into a released one and
//! [`crate::Session::extract`] turns it back, so the appliance cannot touch a disk the guest may
//! be using.

use crate::infrastructure::InfrastructureError;
use pyti_wire::io_layout::IO_DISK_LABEL;
use pyti_wire::result_region;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What a VM needs to attach a slot's I/O disk: the NBD unix socket (libvirt
/// `<disk type='network'><source protocol='nbd'><host transport='unix' socket='..'/>`), or for
/// tests the raw image itself (never while the session runs: the image belongs to nbdkit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoDisk {
    /// Slot index, `0..slots`.
    pub slot: usize,
    /// The raw ext4 image (sparse file) behind the export.
    pub image_path: PathBuf,
    /// nbdkit's unix socket serving the image read-write.
    pub nbd_socket: PathBuf,
    /// Size of the disk in bytes.
    pub size: u64,
}

/// A slot's disk while the guest must not use it (between extract and the next inject).
#[derive(Debug)]
pub struct HeldDisk {
    pub(crate) disk: IoDisk,
}

impl HeldDisk {
    /// The disk's description.
    pub fn io_disk(&self) -> &IoDisk {
        &self.disk
    }
}

/// A slot's disk handed to the guest: task injected, unmounted and flushed by the appliance.
/// Give [`ReleasedDisk::io_disk`] to the VM; pass this back to [`crate::Session::extract`] once
/// the guest is done (agent sent Done, or the VM is stopped).
#[derive(Debug)]
pub struct ReleasedDisk {
    pub(crate) disk: IoDisk,
    pub(crate) task_id: String,
    pub(crate) output_limit_bytes: u64,
}

impl ReleasedDisk {
    /// The disk's description (the NBD socket to attach).
    pub fn io_disk(&self) -> &IoDisk {
        &self.disk
    }

    /// The task whose input is on the disk.
    pub fn task_id(&self) -> &str {
        &self.task_id
    }
}

/// Creates a sparse raw image of `size` bytes formatted ext4 with the I/O label.
pub(crate) fn create_image(path: &Path, size: u64) -> Result<(), InfrastructureError> {
    let create = |source| InfrastructureError::CreateImage {
        path: path.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .map_err(create)?;
    file.set_len(size).map_err(create)?;
    drop(file);
    format_image(path, None)
}

/// Formats an existing image ext4 with the I/O label, filled from `content` if given
/// (`mkfs.ext4 -d`), leaving the result region at its end outside the filesystem, with its
/// header wiped (see [`pyti_wire::result_region`]).
///
/// `mkfs.ext4` runs in user space on the file: the host kernel never mounts an I/O disk, and the
/// old contents (guest-written, untrusted) are never parsed, only discarded (hole-punched, so the
/// sparse image does not grow from task to task). No reserved blocks (`-m 0`): the guest's
/// unprivileged steps may use all of it. No journal: the filesystem is rebuilt for every task,
/// so there is never anything to recover, and the guest's mount and unmount are cheaper.
pub(crate) fn format_image(path: &Path, content: Option<&Path>) -> Result<(), InfrastructureError> {
    let mkfs_err = |detail: String| InfrastructureError::Mkfs {
        path: path.to_path_buf(),
        detail,
    };
    let size = std::fs::metadata(path)
        .map_err(|e| mkfs_err(format!("cannot read the image's size: {e}")))?
        .len();
    let region = result_region::region_offset(size).ok_or_else(|| {
        mkfs_err(format!(
            "the image ({size} bytes) is too small for the result region ({} bytes)",
            result_region::RESULT_REGION_BYTES
        ))
    })?;
    let mut mkfs = Command::new("mkfs.ext4");
    mkfs.args([
        "-q",
        "-F",
        "-m",
        "0",
        "-O",
        "^has_journal",
        "-L",
        IO_DISK_LABEL,
    ]);
    if let Some(dir) = content {
        mkfs.arg("-d").arg(dir);
    }
    mkfs.arg(path).arg(format!("{}k", region / 1024));
    let output = mkfs.output().map_err(|e| InfrastructureError::Mkfs {
        path: path.to_path_buf(),
        detail: format!("cannot run mkfs.ext4: {e}"),
    })?;
    if !output.status.success() {
        return Err(InfrastructureError::Mkfs {
            path: path.to_path_buf(),
            detail: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    wipe_result_header(path, region)
}

/// Zeroes the result region's header: a result the host reads later was written after this.
fn wipe_result_header(path: &Path, region: u64) -> Result<(), InfrastructureError> {
    use std::os::unix::fs::FileExt;
    let failed = |source| InfrastructureError::CreateImage {
        path: path.to_path_buf(),
        source,
    };
    let file = OpenOptions::new().write(true).open(path).map_err(failed)?;
    file.write_all_at(&[0u8; result_region::HEADER_BYTES as usize], region)
        .map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_image_is_sparse_ext4_with_the_io_label() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("io.img");
        create_image(&path, 64 * 1024 * 1024).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 64 * 1024 * 1024);
        use std::os::unix::fs::MetadataExt;
        assert!(
            meta.blocks() * 512 < meta.len() / 2,
            "image should be sparse"
        );
        // The ext superblock sits at 1024; the volume name at offset 120 within it.
        let mut bytes = [0u8; 2048];
        use std::io::Read;
        std::fs::File::open(&path)
            .unwrap()
            .read_exact(&mut bytes)
            .unwrap();
        let magic = u16::from_le_bytes([bytes[1024 + 56], bytes[1024 + 57]]);
        assert_eq!(magic, 0xEF53);
        let label = &bytes[1024 + 120..1024 + 120 + IO_DISK_LABEL.len()];
        assert_eq!(label, IO_DISK_LABEL.as_bytes());
    }
}
