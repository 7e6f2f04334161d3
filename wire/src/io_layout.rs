//! Names on the I/O disk, the one disk the host and the guest exchange files through.
//!
//! The I/O disk is ext4 with a fixed label, created by the diskhandler, never part of a snapshot.
//! The slave writes the package, its wheelhouse and `task.json`; the agent writes `result.json`
//! (atomically: write, fsync, rename) and optional artifacts, then copies the result into the
//! result region after the filesystem ([`crate::result_region`]), which the host reads without
//! mounting anything.

/// Filesystem label the agent looks for to find the I/O disk among the guest's block devices.
pub const IO_DISK_LABEL: &str = "PYTI-IO";
/// Where the agent mounts the I/O disk inside the guest.
pub const GUEST_IO_MOUNT: &str = "/mnt/pyti-io";
/// The task description (see [`crate::guest_task::GuestTask`]).
pub const TASK_FILE: &str = "task.json";
/// The agent's raw results (see [`crate::raw_data::RawResult`]).
pub const RESULT_FILE: &str = "result.json";
/// Temporary name the agent writes before renaming to [`RESULT_FILE`].
pub const RESULT_TEMP_FILE: &str = ".result.json.tmp";
/// Directory holding the package under test (an sdist or wheel file), if it is a file.
pub const PACKAGE_DIR: &str = "package";
/// Directory holding the offline wheelhouse (dependencies as wheels or sdists).
pub const WHEELHOUSE_DIR: &str = "wheelhouse";
/// Directory the agent may fill with artifacts a step declares (bounded on extraction).
pub const ARTIFACTS_DIR: &str = "artifacts";
/// The scratch directory (`{workdir}`) the agent creates empty for each task, owned by the step
/// user; steps start there.
pub const GUEST_WORKDIR: &str = "/home/pyti/work";
