//! The few kernel modules a pyti guest needs, as a module tree of their own.
//!
//! supermin copies the whole module tree it is given into the root filesystem (~400 MB for a
//! Debian kernel) and loads ~50 modules in its initrd (SCSI, ATA, NVDIMM, virtio-net…), each
//! costing boot time under TCG. Handing it a tree with only virtio PCI, virtio-blk (the system
//! disk), virtio-scsi and sd (the I/O disk), virtio-console (the agent's channel) and ext4 gives
//! a 110 MB root and an initrd that loads exactly these.

use super::host_tool::DEPMOD;
use super::kernel::HostKernel;
use super::ImageError;
use std::fs;
use std::path::{Path, PathBuf};

/// Modules the guest loads, by name; their dependencies must be in the list too.
pub(crate) const GUEST_MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "virtio_blk",
    "virtio_console",
    // The I/O disk: a LUN on virtio-scsi (sd_mod needs T10 protection information and its CRCs).
    "scsi_common",
    "scsi_mod",
    "virtio_scsi",
    "crc64",
    "crc64_rocksoft_generic",
    "crc64-rocksoft",
    "crct10dif_common",
    "crct10dif_generic",
    "crc-t10dif",
    "t10-pi",
    "sd_mod",
    "crc16",
    "mbcache",
    "jbd2",
    "crc32c_generic",
    "crc32c-intel",
    "ext4",
];
/// Module metadata files depmod needs to describe a tree (what is built in, the build order).
const METADATA_FILES: &[&str] = &[
    "modules.builtin",
    "modules.builtin.modinfo",
    "modules.order",
];

/// Writes `<work>/modules/lib/modules/<release>` holding [`GUEST_MODULES`] and runs depmod on
/// it; returns the tree for `SUPERMIN_MODULES`.
pub(crate) fn guest_module_tree(kernel: &HostKernel, work: &Path) -> Result<PathBuf, ImageError> {
    let base = work.join("modules");
    let tree = base.join("lib/modules").join(&kernel.release);
    let mut found = Vec::new();
    find_modules(&kernel.modules.join("kernel"), &mut found);
    for name in GUEST_MODULES {
        let file = format!("{name}.ko");
        let Some(source) = found
            .iter()
            .find(|p| p.file_name().is_some_and(|f| f == file.as_str()))
        else {
            // Built into the kernel is as good as a module.
            if is_builtin(kernel, name) {
                continue;
            }
            return Err(ImageError::NoKernel {
                detail: format!(
                    "kernel {} has no module {file} and does not build it in",
                    kernel.release
                ),
            });
        };
        let relative = source.strip_prefix(&kernel.modules).unwrap_or(source);
        let target = tree.join(relative);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(ImageError::io("create", parent))?;
        }
        fs::copy(source, &target).map_err(ImageError::io("copy module", source))?;
    }
    for name in METADATA_FILES {
        let source = kernel.modules.join(name);
        if source.is_file() {
            fs::copy(&source, tree.join(name)).map_err(ImageError::io("copy", &source))?;
        }
    }
    DEPMOD.run(DEPMOD.command().arg("-b").arg(&base).arg(&kernel.release))?;
    Ok(tree)
}

/// Every `*.ko` under `dir` (compressed modules are not used by Debian 12 kernels).
fn find_modules(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => find_modules(&path, out),
            Ok(t) if t.is_file() && path.extension().is_some_and(|e| e == "ko") => out.push(path),
            _ => {}
        }
    }
}

/// Whether `modules.builtin` lists `name` (dashes and underscores are the same to the kernel).
fn is_builtin(kernel: &HostKernel, name: &str) -> bool {
    let wanted = format!("{}.ko", name.replace('-', "_"));
    fs::read_to_string(kernel.modules.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .any(|l| l.rsplit('/').next().map(|f| f.replace('-', "_")) == Some(wanted.clone()))
}
