//! The launched libguestfs appliance: one handle with one NBD drive per slot, mounted one slot at
//! a time, and the checks that tell its death from a problem with what the guest wrote.
//!
//! Everything here blocks; it runs only on the session's worker thread.

use crate::accelerator::{Accelerator, BACKEND_SETTINGS_ENV};
use crate::infrastructure::{describe, InfrastructureError};
use pyti_wire::result_region;
use std::path::{Path, PathBuf};

/// Where the appliance mounts the slot being worked on (inside the appliance, not on the host).
pub(crate) const MOUNT_POINT: &str = "/";

/// Settings the appliance is launched with.
#[derive(Debug, Clone)]
pub(crate) struct LaunchSettings {
    pub(crate) accelerator: Accelerator,
    pub(crate) memory_mib: Option<i32>,
}

/// A launched appliance. Dropping it closes the handle, which stops QEMU.
pub(crate) struct Appliance {
    handle: guestfs::Handle,
    devices: Vec<String>,
    qemu_pid: Option<i32>,
}

impl Appliance {
    /// Launches the appliance with the NBD export behind each socket as a drive (slot order).
    pub(crate) fn launch(
        sockets: &[PathBuf],
        settings: &LaunchSettings,
    ) -> Result<Appliance, InfrastructureError> {
        let fail = |e: guestfs::Error| InfrastructureError::Launch {
            detail: describe(&e),
        };
        // Handle::create reads LIBGUESTFS_* from the environment; only the accelerator (and the
        // backend, when the environment names none) are overridden.
        let handle = guestfs::Handle::create().map_err(fail)?;
        if std::env::var_os("LIBGUESTFS_BACKEND").is_none() {
            handle.set_backend("direct").map_err(fail)?;
        }
        let inherited = std::env::var(BACKEND_SETTINGS_ENV).unwrap_or_default();
        let mut backend_settings: Vec<&str> = inherited
            .split(':')
            .filter(|s| !s.is_empty() && *s != "force_tcg" && *s != "force_kvm")
            .collect();
        backend_settings.push(settings.accelerator.backend_setting());
        handle
            .set_backend_settings(&backend_settings)
            .map_err(fail)?;
        if let Some(mib) = settings.memory_mib {
            handle.set_memsize(mib).map_err(fail)?;
        }
        for socket in sockets {
            let server = format!("unix:{}", socket.display());
            let servers = [server.as_str()];
            handle
                .add_drive(
                    "",
                    guestfs::AddDriveOptArgs {
                        format: Some("raw"),
                        protocol: Some("nbd"),
                        // QEMU ignores the appliance kernel's flush requests: every write still
                        // reaches nbdkit before it completes (NBD has no client-side cache), so
                        // the guest sees it; only durability against a host crash is given up,
                        // and the I/O disk is scratch.
                        cachemode: Some("unsafe"),
                        server: Some(&servers),
                        ..Default::default()
                    },
                )
                .map_err(fail)?;
        }
        handle.launch().map_err(fail)?;
        let devices = handle.list_devices().map_err(fail)?;
        if devices.len() != sockets.len() {
            return Err(InfrastructureError::Launch {
                detail: format!(
                    "appliance shows {} drives, {} were added",
                    devices.len(),
                    sockets.len()
                ),
            });
        }
        let qemu_pid = handle.get_pid().ok().filter(|pid| *pid > 0);
        Ok(Appliance {
            handle,
            devices,
            qemu_pid,
        })
    }

    /// The libguestfs handle, for the calls inject and extract make.
    pub(crate) fn handle(&self) -> &guestfs::Handle {
        &self.handle
    }

    /// The appliance's QEMU process id, when the backend reports it.
    pub(crate) fn qemu_pid(&self) -> Option<i32> {
        self.qemu_pid
    }

    /// Whether QEMU still runs and the handle still talks to it. A killed QEMU is seen here before
    /// any call fails (libguestfs only notices on its next call).
    pub(crate) fn is_alive(&self) -> bool {
        if let Some(pid) = self.qemu_pid {
            if !process_running(pid) {
                return false;
            }
        }
        self.handle.is_ready().unwrap_or(false)
    }

    /// Mounts a slot's filesystem with nothing cached from before: the guest (or the host's
    /// mkfs) wrote behind the appliance's back. Unmounting already dropped the filesystem's own
    /// caches; what could survive is the block device's buffer cache (ext4 metadata), which
    /// `blockdev_flushbufs` invalidates (the kernel also drops it on the device's last close;
    /// the explicit call keeps us correct should anything hold the device open). (`drop_caches` would also evict the appliance's own
    /// programs, costing ~0.5 s per mount under TCG, for nothing the tests could detect.)
    pub(crate) fn mount_fresh(&self, slot: usize, read_only: bool) -> Result<(), guestfs::Error> {
        let device = &self.devices[slot];
        self.handle.blockdev_flushbufs(device)?;
        if read_only {
            self.handle.mount_ro(device, MOUNT_POINT)
        } else {
            self.handle.mount(device, MOUNT_POINT)
        }
    }

    /// Unmounts the slot. That is the whole hand-over: unmounting writes the filesystem back,
    /// and the device's last close writes back and drops its buffers; with `cachemode=unsafe`
    /// every completed write is already in nbdkit. (An extra `sync` and `blockdev_flushbufs`
    /// here cost ~0.2 s each under TCG and changed nothing the tests could see.)
    pub(crate) fn unmount(&self) -> Result<(), guestfs::Error> {
        self.handle
            .umount(MOUNT_POINT, guestfs::UmountOptArgs::default())
    }

    /// Recreates a slot's filesystem (ext4, the I/O label) when the guest left it unusable,
    /// ending where the result region of a `disk_bytes` disk begins.
    pub(crate) fn reformat(&self, slot: usize, disk_bytes: u64) -> Result<(), guestfs::Error> {
        let fs_bytes = result_region::region_offset(disk_bytes).unwrap_or(disk_bytes);
        self.handle.mke2fs(
            &self.devices[slot],
            guestfs::Mke2fsOptArgs {
                fstype: Some("ext4"),
                blocksize: Some(4096),
                blockscount: Some((fs_bytes / 4096) as i64),
                label: Some(pyti_wire::io_layout::IO_DISK_LABEL),
                ..Default::default()
            },
        )
    }

    /// Writes raw bytes to a slot's device at `offset`.
    pub(crate) fn write_raw(
        &self,
        slot: usize,
        bytes: &[u8],
        offset: u64,
    ) -> Result<(), guestfs::Error> {
        self.handle
            .pwrite_device(&self.devices[slot], bytes, offset as i64)
            .map(|_| ())
    }

    /// Turns a failed call into an infrastructure failure when the appliance died, or returns the
    /// call's message when it is alive (the caller decides what that failure means).
    pub(crate) fn diagnose(
        &self,
        during: &'static str,
        error: &guestfs::Error,
    ) -> Result<String, InfrastructureError> {
        let detail = describe(error);
        if self.is_alive() {
            Ok(detail)
        } else {
            Err(InfrastructureError::ApplianceDied { during, detail })
        }
    }
}

/// Whether `pid` runs (exists and is not a zombie waiting to be reaped).
pub(crate) fn process_running(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may contain anything.
    let state = stat
        .rfind(')')
        .and_then(|end| stat[end + 1..].trim_start().chars().next());
    !matches!(state, None | Some('Z') | Some('X'))
}

/// QEMU processes started by this process for an appliance whose drives include `socket`: the
/// ones the watchdog kills when the appliance hangs (also while it is still launching, before
/// its pid is known).
pub(crate) fn appliance_processes(socket: &Path) -> Vec<i32> {
    let me = std::process::id() as i32;
    let needle = socket.as_os_str().as_encoded_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let parent = stat.rfind(')').and_then(|end| {
            stat[end + 1..]
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<i32>().ok())
        });
        if parent != Some(me) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let is_qemu = cmdline.windows(4).any(|w| w == b"qemu");
        let has_socket = cmdline.windows(needle.len()).any(|w| w == needle);
        if is_qemu && has_socket {
            pids.push(pid);
        }
    }
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_runs_and_a_reaped_one_does_not() {
        assert!(process_running(std::process::id() as i32));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        assert!(!process_running(pid));
    }

    #[test]
    fn no_appliance_processes_for_an_unknown_socket() {
        assert!(appliance_processes(Path::new("/nonexistent/pyti-diskhandler.sock")).is_empty());
    }
}
