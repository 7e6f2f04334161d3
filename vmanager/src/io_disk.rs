//! The I/O disk: the one disk host and guest exchange files through, attached per task.
//!
//! It is never part of a snapshot (libguestfs on the host must read the real disk, never a
//! snapshot diff), so the warm snapshot is taken without it and it is hot-plugged after each
//! revert; in cold mode it is in the domain definition at boot.

use crate::domain_xml::escape_path;
use crate::VmError;
use std::path::PathBuf;

/// Guest device name of the I/O disk. The agent finds the disk by its filesystem label, not by
/// this name; the fixed name and SCSI address keep the live hardware identical task after task.
pub const IO_DISK_TARGET: &str = "sda";

/// Where a task's I/O disk comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoDiskSource {
    /// An NBD export on a unix socket (production: nbdkit started by the diskhandler).
    NbdUnix(PathBuf),
    /// A raw disk image file (tests and tools).
    File(PathBuf),
}

impl IoDiskSource {
    /// The libvirt `<disk>` element for this I/O disk.
    pub fn disk_xml(&self) -> Result<String, VmError> {
        let source = match self {
            IoDiskSource::File(path) => {
                format!("<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{}'/>", escape_path(path)?)
            }
            IoDiskSource::NbdUnix(socket) => format!(
                "<disk type='network' device='disk'><driver name='qemu' type='raw'/>\
                 <source protocol='nbd'><host transport='unix' socket='{}'/></source>",
                escape_path(socket)?
            ),
        };
        // A LUN on the domain's virtio-scsi controller, not a virtio-blk PCI device: a LUN is
        // unplugged at once, where a PCI device waits for the guest to acknowledge the eject
        // (ACPI, slow under TCG), and a warm revert has to wait for the unplug.
        Ok(format!(
            "{source}<target dev='{IO_DISK_TARGET}' bus='scsi'/>\
             <address type='drive' controller='0' bus='0' target='0' unit='0'/></disk>"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nbd_socket_becomes_a_network_disk() {
        let xml = IoDiskSource::NbdUnix("/run/pyti/io-1.sock".into())
            .disk_xml()
            .unwrap();
        assert!(xml.contains(
            "<source protocol='nbd'><host transport='unix' socket='/run/pyti/io-1.sock'/>"
        ));
        assert!(xml.contains("<target dev='sda' bus='scsi'/>"));
        assert!(xml.contains("<address type='drive' controller='0' bus='0' target='0' unit='0'/>"));
    }

    #[test]
    fn file_path_is_escaped() {
        let xml = IoDiskSource::File("/tmp/a'&b.img".into())
            .disk_xml()
            .unwrap();
        assert!(xml.contains("file='/tmp/a&apos;&amp;b.img'"));
    }

    #[test]
    fn relative_path_is_refused() {
        assert!(IoDiskSource::File("io.img".into()).disk_xml().is_err());
    }
}
