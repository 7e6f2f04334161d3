//! `task.json`: what the slave puts on the I/O disk for the agent to run.
//!
//! Commands arrive fully expanded (templates filled on the host); the agent only runs them.

use serde::{Deserialize, Serialize};

/// The `task.json` schema version this build writes and accepts.
pub const GUEST_TASK_SCHEMA: u32 = 1;

/// One task for the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestTask {
    pub schema: u32,
    /// Opaque id echoed back in `result.json` and in the agent's "done" message, so a stale
    /// result from an earlier task can never be mistaken for this one's.
    pub task_id: String,
    /// Host wall-clock time (Unix seconds) when the task was injected; the agent steps its clock
    /// to at least this (a reverted guest's clock is as old as its snapshot).
    pub host_time_unix: i64,
    /// Bytes of stdout and of stderr kept per step (head and tail halves).
    pub output_limit_bytes: u64,
    pub steps: Vec<GuestStep>,
}

/// One step, ready to run with `/bin/sh -c`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestStep {
    pub name: String,
    pub command: String,
    pub timeout_secs: u64,
    /// A failure of this step skips the remaining steps (they are reported as skipped).
    pub fails_task: bool,
}

/// Where the image builder bakes the recipe's [`PreparePlan`] into the guest.
pub const PREPARE_PLAN_PATH: &str = "/etc/pyti/prepare.json";
/// The `prepare.json` schema version this build writes and accepts.
pub const PREPARE_PLAN_SCHEMA: u32 = 1;
/// Uid and gid of the unprivileged `pyti` user every step runs as inside the guest.
pub const GUEST_STEP_UID: u32 = 1000;

/// The recipe's `prepare` steps, expanded at image build time and run by the agent at boot
/// (once per system disk: a marker keeps a re-boot of a prepared disk from running them again).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreparePlan {
    pub schema: u32,
    /// The image's cache key; the agent's "prepared" marker records it.
    pub image_key: String,
    /// The distribution's interpreter, whose `--version` goes into every result.
    pub interpreter: String,
    /// Directories the agent creates and gives to the step user before the steps run
    /// (the venv's parent, the step user's home).
    pub writable_dirs: Vec<String>,
    pub steps: Vec<GuestStep>,
}
