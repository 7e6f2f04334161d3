//! The slave: runs pyti's tasks in disposable virtual machines.
//!
//! A slave claims tasks (one package × one recipe) from the master, fetches the package and its
//! dependencies on the host **without running any package code** (wheels and index metadata
//! only; sdists are built inside the guest), and runs each task in a VM slot: the diskhandler
//! injects the package, its wheelhouse and `task.json` onto the slot's I/O disk, vmanager hands
//! the disk to the guest (reverting a warm snapshot or booting a clean disk), the in-guest agent
//! runs the recipe's steps offline, and the diskhandler reads `result.json` back. The raw data goes
//! to the master through the raw-data API.
//!
//! # Layout
//! - [`task_plan`]: recipe step templates → the concrete `task.json` for one task.
//! - [`cycle`]: [`cycle::SlotRunner`], one slot's inject → run → extract cycle, and
//!   [`cycle::CycleOutcome`], which says whose fault a failure was (package, guest timeout,
//!   infrastructure).
//! - [`acquire`]: the claimed package and its dependencies, staged on the host for injection.
//! - [`package`]: validated package specs (PyPI release, local file, URL) and file names.
//! - [`wheelhouse`]: the offline wheelhouse for the guest, resolved from wheel and static
//!   metadata only, with a shared content-addressed cache.
//! - [`bench`]: the same package through warm, cold and naive cycles, phase by phase.
//! - [`daemon`]: register, heartbeat, claim per slot, run, report; [`outbox`] keeps results on
//!   disk until the master acknowledged them.

pub mod acquire;
pub mod bench;
pub mod cycle;
pub mod daemon;

pub mod outbox;
pub mod package;
pub mod task_plan;
pub mod wheelhouse;
