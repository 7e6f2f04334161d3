//! What a slot needs to know: who it is, its mode, its guest's hardware and boot files.

use pyti_wire::recipe::{Accel, Recipe};
use std::path::PathBuf;
use std::time::Duration;

/// Time a guest gets to boot on top of its recipe's prepare-step timeouts before it must report
/// ready (a cold boot to ready takes ~4 s under TCG here; this leaves room for a loaded host).
pub const BOOT_ALLOWANCE: Duration = Duration::from_secs(60);
/// How long a hot-plugged I/O disk may go unnoticed (no `Started` from the agent) before a warm
/// slot plugs it in again. The agent notices within ~0.2 s under TCG; this leaves room for a
/// loaded host while keeping a lost hot-plug notification (seen in CI with the virtio-scsi LUN:
/// attached in QEMU, never seen by the guest) from holding the task until its deadline.
pub const IO_DISK_NOTICE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest slave name: domain names and paths stay readable.
pub const MAX_SLAVE_NAME_CHARS: usize = 40;

/// How a slot gets a clean guest for each task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlotMode {
    /// Each task boots a fresh guest from the clean, prepared disk (a new overlay per task).
    Cold,
    /// Each task reverts the running guest into its warm memory snapshot (default: ~10x less
    /// per-task overhead than a cold boot under TCG).
    #[default]
    Warm,
}

/// The files a guest boots from: a built image (see `crate::image`), or anything equivalent.
#[derive(Debug, Clone)]
pub struct BootFiles {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    /// The image's qcow2 system disk; read-only for slots (they write to overlays).
    pub system_disk: PathBuf,
    pub kernel_cmdline: String,
}

/// A slot's configuration.
#[derive(Debug, Clone)]
pub struct SlotConfig {
    /// Names the domain `pyti-<slave>-<slot>`: letters, digits, `-` and `_`.
    pub slave: String,
    pub slot: u32,
    pub mode: SlotMode,
    /// Parent of the slot's own directory (overlays, socket, console log).
    pub state_dir: PathBuf,
    pub boot: BootFiles,
    pub memory_mib: u64,
    pub vcpus: u64,
    pub accel: Accel,
    /// How long the first boot may take to report ready (prepare steps included).
    pub ready_timeout: Duration,
    /// Warm mode: return to the snapshot at the end of each task (`true`, the default), or leave
    /// that to the caller's [`crate::VmSlot::restore`], e.g. while it reads the task's results;
    /// a task that finds the slot unreverted reverts first either way.
    pub revert_after_task: bool,
    /// Warm mode: how long the guest gets to notice each plug of the I/O disk
    /// ([`IO_DISK_NOTICE_TIMEOUT`] by default).
    pub io_disk_notice_timeout: Duration,
}

impl SlotConfig {
    /// A slot for `recipe`'s guests booted from `boot`, in the default (warm) mode.
    pub fn new(
        slave: &str,
        slot: u32,
        recipe: &Recipe,
        boot: BootFiles,
        state_dir: PathBuf,
    ) -> SlotConfig {
        let prepare: u64 = recipe.prepare.iter().map(|s| s.timeout_secs).sum();
        SlotConfig {
            slave: slave.to_string(),
            slot,
            mode: SlotMode::default(),
            state_dir,
            boot,
            memory_mib: recipe.vm.memory_mib,
            vcpus: recipe.vm.vcpus,
            accel: recipe.vm.accel,
            ready_timeout: Duration::from_secs(prepare) + BOOT_ALLOWANCE,
            revert_after_task: true,
            io_disk_notice_timeout: IO_DISK_NOTICE_TIMEOUT,
        }
    }

    /// The libvirt domain name, `pyti-<slave>-<slot>`, or why the slave name is unusable.
    pub fn domain_name(&self) -> Result<String, String> {
        let ok = !self.slave.is_empty()
            && self.slave.chars().count() <= MAX_SLAVE_NAME_CHARS
            && self
                .slave
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if ok {
            Ok(format!("pyti-{}-{}", self.slave, self.slot))
        } else {
            Err(format!(
                "a slave name is 1 to {MAX_SLAVE_NAME_CHARS} ASCII letters, digits, `-` or `_`"
            ))
        }
    }
}
