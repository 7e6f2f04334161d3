//! Settings of a [`crate::Session`]: how many slots, how big their I/O disks, which limits apply to
//! what the guest writes back.

use crate::accelerator::Accelerator;
use pyti_wire::limits;
use std::path::PathBuf;
use std::time::Duration;

/// Default I/O disk size. The image is sparse, so an unused gigabyte costs nothing on the host;
/// 2 GiB holds the wheelhouse of a large scientific stack.
pub const DEFAULT_IO_DISK_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// Default largest I/O disk a configuration may ask for: beyond this a typo would fill the host.
pub const DEFAULT_MAX_IO_DISK_BYTES: u64 = 32 * 1024 * 1024 * 1024;
/// Smallest I/O disk: ext4 with a journal needs a few MiB before any file fits.
pub const MIN_IO_DISK_BYTES: u64 = pyti_wire::result_region::RESULT_REGION_BYTES + 16 * 1024 * 1024;
/// Free space kept for what the guest writes back (result and artifacts) when sizing a payload.
pub const DEFAULT_OUTPUT_RESERVE_BYTES: u64 = 32 * 1024 * 1024;
/// Slots (VMs) one session serves: each is one drive of the one appliance.
pub const MAX_SLOTS: usize = 16;
/// Files under `artifacts/` read back per task: more is a runaway step, not a report.
pub const DEFAULT_MAX_ARTIFACT_FILES: usize = 1024;
/// An appliance launch takes ~9 s under TCG (~20 s the very first time, while libguestfs builds
/// its cached appliance); beyond two minutes it is hung.
pub const DEFAULT_LAUNCH_TIMEOUT: Duration = Duration::from_secs(120);
/// One inject or extract takes well under a second; a minute means the appliance is stuck, and
/// the session kills it rather than hang the slave.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(60);

/// How a task's input is written to its I/O disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InjectMethod {
    /// Rebuild the filesystem on the host with `mkfs.ext4 -d` from a staging directory: user
    /// space only (no host mount), never parses the old (guest-written) contents, and wipes them
    /// for free. ~0.1 s for 11 MiB, against 1–3 s through the appliance under TCG, where
    /// virtio-serial throughput bounds the upload. Only the untrusted direction (extract) needs
    /// the appliance.
    #[default]
    HostMkfs,
    /// Mount through the appliance, wipe the old files, upload the new ones.
    Appliance,
}

/// Bounds applied to guest-written files before they are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtractLimits {
    /// Largest `result.json` read.
    pub max_result_bytes: u64,
    /// Largest total size of the files under `artifacts/`.
    pub max_artifact_bytes: u64,
    /// Most files under `artifacts/`.
    pub max_artifact_files: usize,
}

impl Default for ExtractLimits {
    fn default() -> Self {
        ExtractLimits {
            max_result_bytes: limits::MAX_RESULT_FILE_BYTES,
            max_artifact_bytes: limits::MAX_ARTIFACT_BYTES,
            max_artifact_files: DEFAULT_MAX_ARTIFACT_FILES,
        }
    }
}

/// Everything a session needs to start.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Directory for the I/O disk images and NBD sockets (`io-slot-N.img`, `io-slot-N.sock`).
    /// Keep the path short: a unix socket path must fit in 107 bytes.
    pub work_dir: PathBuf,
    /// Number of VM slots, each with its own I/O disk (1..=[`MAX_SLOTS`]).
    pub slots: usize,
    /// Size of each I/O disk (sparse).
    pub io_disk_bytes: u64,
    /// Largest size `io_disk_bytes` may be set to; payloads beyond it are refused outright.
    pub max_io_disk_bytes: u64,
    /// Free space a payload must leave for the guest's result and artifacts.
    pub output_reserve_bytes: u64,
    /// Limits on what is read back from the guest.
    pub extract_limits: ExtractLimits,
    /// How task input is written.
    pub inject_method: InjectMethod,
    /// KVM or TCG for the appliance.
    pub accelerator: Accelerator,
    /// Appliance memory in MiB; `None` keeps libguestfs's default.
    pub appliance_memory_mib: Option<i32>,
    /// Longest an appliance launch may take before it counts as failed.
    pub launch_timeout: Duration,
    /// Longest one inject or extract may take before the appliance is killed.
    pub operation_timeout: Duration,
    /// Launch a fresh appliance for every inject and extract, as a naive cycle would: only for
    /// benchmarks that measure what the long-lived session saves. Off by default.
    pub appliance_per_operation: bool,
}

impl SessionConfig {
    /// Defaults for `slots` slots with images and sockets under `work_dir`.
    pub fn new(work_dir: impl Into<PathBuf>, slots: usize) -> Self {
        SessionConfig {
            work_dir: work_dir.into(),
            slots,
            io_disk_bytes: DEFAULT_IO_DISK_BYTES,
            max_io_disk_bytes: DEFAULT_MAX_IO_DISK_BYTES,
            output_reserve_bytes: DEFAULT_OUTPUT_RESERVE_BYTES,
            extract_limits: ExtractLimits::default(),
            inject_method: InjectMethod::default(),
            accelerator: Accelerator::Auto,
            appliance_memory_mib: None,
            launch_timeout: DEFAULT_LAUNCH_TIMEOUT,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            appliance_per_operation: false,
        }
    }

    /// Checks the settings against their bounds; the message says which one to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.slots == 0 || self.slots > MAX_SLOTS {
            return Err(format!(
                "slots is {}, it must be between 1 and {MAX_SLOTS}",
                self.slots
            ));
        }
        if self.io_disk_bytes < MIN_IO_DISK_BYTES {
            return Err(format!(
                "io_disk_bytes is {}, it must be at least {MIN_IO_DISK_BYTES}",
                self.io_disk_bytes
            ));
        }
        if self.io_disk_bytes > self.max_io_disk_bytes {
            return Err(format!(
                "io_disk_bytes ({}) exceeds max_io_disk_bytes ({}); lower it or raise the maximum",
                self.io_disk_bytes, self.max_io_disk_bytes
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bounds_are_enforced() {
        let mut config = SessionConfig::new("/tmp/x", 2);
        assert_eq!(config.validate(), Ok(()));
        config.slots = 0;
        assert!(config.validate().unwrap_err().contains("slots"));
        config.slots = 1;
        config.io_disk_bytes = config.max_io_disk_bytes + 1;
        assert!(config.validate().unwrap_err().contains("max_io_disk_bytes"));
        config.io_disk_bytes = 1024;
        assert!(config.validate().unwrap_err().contains("at least"));
    }
}
