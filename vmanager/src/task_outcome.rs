//! What a task's guest did, and how long each phase of getting it there took.

use crate::warm_snapshot::RevertPath;
use pyti_wire::agent_protocol::AgentMessage;
use std::time::Duration;

/// How a task's guest run ended. Guest misbehaviour is an outcome, not an error: the slot has
/// already been cleaned up and can take the next task.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskOutcome {
    /// The agent reported `Done` for this task: `result.json` is on the I/O disk.
    Done(AgentMessage),
    /// The agent reported `Failed`: it could not run the task; nothing to extract.
    AgentFailed(AgentMessage),
    /// No `Done` before the deadline; the guest was destroyed.
    Overrun { deadline: Duration },
    /// The guest stopped (crash, panic, power-off) before reporting; `detail` has the evidence.
    GuestDied { detail: String },
    /// Warm: the guest never noticed its I/O disk, though it was plugged in `plugs` times and
    /// given `waited` each time; the guest was destroyed (its hot-plug handling is suspect, so
    /// the slot should be prepared again).
    DiskUnnoticed { plugs: u32, waited: Duration },
    /// The caller cancelled the task (its job was cancelled); the guest was destroyed.
    Cancelled,
}

/// A finished task: its outcome and where the time went.
#[derive(Debug, Clone)]
pub struct TaskReport {
    pub outcome: TaskOutcome,
    pub timings: PhaseTimings,
}

/// Phase durations of one task (phases a mode does not have are `None`).
#[derive(Debug, Clone, Default)]
pub struct PhaseTimings {
    /// Cold: starting QEMU until the agent's `Ready`.
    pub boot_to_ready: Option<Duration>,
    /// Warm: hot-plugging the I/O disk.
    pub attach: Option<Duration>,
    /// I/O disk given to the guest until `Done` (or the deadline).
    pub run: Duration,
    /// Warm: times the I/O disk was plugged in (more than 1 when the guest missed a hot-plug).
    pub plugs: u32,
    /// Warm: the guest releasing the I/O disk after `Done`.
    pub detach: Option<Duration>,
    /// Warm: returning to the warm snapshot after the task (or before it, after a failure).
    pub revert: Option<Duration>,
    /// Warm: whether that revert kept QEMU alive.
    pub revert_path: Option<RevertPath>,
}
