//! The diskhandler: one long-lived libguestfs session through which the slave puts each task's
//! input on a VM's I/O disk and reads the guest's output back.
//!
//! # Why it looks like this
//! A libguestfs appliance costs 8–10 s to launch under TCG (2–4 s with KVM); launching one per
//! inject and per extract would dominate each task. So one appliance lives as long as the slave
//! and serves every slot. Two libguestfs/QEMU facts shape the rest: drives cannot be hot-plugged
//! after launch (1.48), and a launched appliance holds QEMU's write lock on image files it opened.
//! Each I/O disk is therefore a raw image exported by its own nbdkit on a unix socket; the
//! appliance and the VM are both NBD clients of it, and only one side mounts the filesystem at a
//! time.
//!
//! # Layout
//! - [`session`]: [`Session`], the async API: start (create disks, export, launch once),
//!   [`Session::inject`], [`Session::extract`], relaunch after appliance death, a watchdog that
//!   kills a hung appliance.
//! - [`io_disk`]: [`IoDisk`] (what vmanager attaches: image, NBD socket, size) and the mount
//!   states [`HeldDisk`] (the appliance's) and [`ReleasedDisk`] (the guest's), which make using a
//!   disk from both sides at once unrepresentable.
//! - `worker` / `appliance` (private): the thread that owns the non-`Send` guestfs handle, and the
//!   launched appliance (NBD drives, mounts with invalidated buffers, liveness checks).
//! - `nbd_export` (private): the supervised nbdkit process per disk.
//! - [`payload`] and [`inject`]: [`TaskPayload`] (package, wheelhouse, `task.json`), checked
//!   and written after wiping the previous task — by default rebuilt on the host with
//!   `mkfs.ext4 -d` (user space, trusted data only, ~30× faster than uploading through the
//!   appliance under TCG), or through the appliance ([`InjectMethod`]); [`capacity`]: whether
//!   it fits, before the VM starts.
//! - [`extract`]: reads the guest's result as untrusted data into [`GuestOutput`] or a typed
//!   [`ExtractError`]: from the result region after the filesystem, straight from the image file
//!   on the host (raw bytes at a fixed offset, bounded and checksummed: no filesystem is parsed),
//!   or, when the guest left artifacts or wrote no region, `result.json` and `artifacts/` through
//!   the appliance (lstat first, size limits, bounded JSON, schema validation).
//! - [`infrastructure`]: [`InfrastructureError`], the failures that make a task `tmpfail`.
//! - [`config`] and [`accelerator`]: [`SessionConfig`] with its named limits, KVM/TCG choice.
//! - [`host_check`]: checks for `pyti doctor`.
//!
//! # A task's life on its disk
//! `HeldDisk` → [`Session::inject`] (fresh filesystem with the payload) → `ReleasedDisk`
//! (attach `io_disk().nbd_socket` to the VM; the agent mounts, runs, writes `result.json`,
//! unmounts, copies the result into the region) → [`Session::extract`] (the region; else
//! invalidate the appliance's buffers, mount read-only, read with bounds, unmount) → `HeldDisk`.
//! The appliance never writes to a disk in the default method, and reads one only when the
//! guest's output needs a filesystem: under TCG each appliance call that opens the device costs
//! ~0.1 s, a mount and unmount ~0.75 s.
//! Errors say whether the machinery failed (`is_infrastructure()`: report `tmpfail`) or the
//! task's input or the guest's output is at fault.
pub mod accelerator;
mod appliance;
pub mod capacity;
pub mod config;
pub mod extract;
pub mod host_check;
pub mod infrastructure;
pub mod inject;
pub mod io_disk;
mod nbd_export;
pub mod payload;
pub mod session;
mod worker;

pub use accelerator::Accelerator;
pub use config::{ExtractLimits, InjectMethod, SessionConfig};
pub use extract::{Artifact, ExtractError, GuestOutput, ResultSource};
pub use infrastructure::InfrastructureError;
pub use inject::InjectError;
pub use io_disk::{HeldDisk, IoDisk, ReleasedDisk};
pub use payload::{PayloadFile, TaskPayload};
pub use session::{Extraction, InjectFailure, Session};
