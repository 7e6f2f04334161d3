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
