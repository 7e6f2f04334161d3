//! vmanager: drives libvirt for pyti. It knows guests, disks and snapshots, nothing of tasks,
//! masters or results: the slave composes it with the diskhandler.
//!
//! # Layout
//! - [`image`]: builds a recipe's guest image (kernel, initrd, qcow2 system disk with the agent
//!   and the recipe's prepare steps baked in) from the host's distribution packages, cached by
//!   content key.
//! - [`host_check`]: the checks behind `pyti doctor` (libvirt, virtlogd, QEMU, disk space).
//! - [`accel`]: KVM or TCG, decided once by booting a throw-away KVM guest ([`probe_accel`]).
//! - [`Hypervisor`]: the libvirt connection shared by a process's slots, caching that decision.
//! - [`VmSlot`]: one domain `pyti-<slave>-<slot>` that runs tasks one after another from a clean
//!   state, cold (fresh overlay per task) or warm (in-place revert to a memory snapshot, the
//!   default). Built from [`SlotConfig`] (recipe hardware + [`BootFiles`] of an image).
//!   [`VmSlot::run_task`] gives the guest an [`IoDiskSource`], waits for the agent's `Done`
//!   under a deadline and returns a [`TaskReport`]; overrun or crashed guests are destroyed and
//!   reported as a [`TaskOutcome`], and the slot serves the next task.
//! - Underneath: [`domain_xml`] (the offline guest's definition), [`io_disk`] (the per-task
//!   disk, never in a snapshot), [`overlay`] (throw-away qcow2 overlays; the cached image is
//!   never written), [`warm_snapshot`], [`agent_channel`] (the agent's virtio-serial messages),
//!   [`slot_domain`] (blocking lifecycle calls) and [`recovery`] (cleaning up after a crash,
//!   only ever the slot's own domain and files).
//!
//! Every libvirt call blocks; async methods run them on tokio's blocking pool. Errors are
//! [`VmError`]s whose messages say what to do.
pub mod accel;
pub mod agent_channel;
mod blocking;
pub mod domain_xml;
mod error;
pub mod host_check;
mod hypervisor;
pub mod image;
pub mod io_disk;
pub mod overlay;
pub mod recovery;
mod slot;
mod slot_config;
pub mod slot_domain;
pub mod slot_paths;
mod task_outcome;
pub mod warm_snapshot;

pub use accel::{probe_accel, AccelDecision, ResolvedAccel};
pub use error::VmError;
pub use hypervisor::Hypervisor;
pub use io_disk::IoDiskSource;
pub use slot::{PrepareReport, VmSlot};
pub use slot_config::{BootFiles, SlotConfig, SlotMode};
pub use task_outcome::{PhaseTimings, TaskOutcome, TaskReport};
/// Cancels a running task ([`VmSlot::run_task_until`]).
pub use tokio_util::sync::CancellationToken;
