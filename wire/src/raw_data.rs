//! Raw data: what the agent measured for each step, written to `result.json` and reported by the
//! slave through the master's raw-data API.
//!
//! Everything here comes from inside the guest and is untrusted: [`RawResult::validate`] checks the
//! schema version and every size bound before anything is stored.

use crate::limits;
use serde::{Deserialize, Serialize};

/// The `result.json` schema version this build writes and accepts.
pub const RAW_RESULT_SCHEMA: u32 = 1;

/// The agent's report for one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResult {
    pub schema: u32,
    pub task_id: String,
    pub agent_version: String,
    /// `uname -r` of the guest.
    pub guest_kernel: String,
    /// `python --version` of the recipe's interpreter.
    pub interpreter_version: String,
    /// Guest uptime (seconds) when the task started and ended.
    pub uptime_start_secs: f64,
    pub uptime_end_secs: f64,
    pub steps: Vec<StepRawData>,
}

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StepOutcome {
    /// The process exited with this code.
    Exited { code: i32 },
    /// The process was killed by this signal (not by the agent's timeout).
    Signaled { signal: i32 },
    /// The step ran past its timeout; the agent killed its whole process group.
    TimedOut,
    /// The command could not be started at all.
    NotStarted { reason: String },
    /// An earlier step that fails the task failed, so this one never ran.
    Skipped,
}

impl StepOutcome {
    /// Whether the step counts as successful.
    pub fn succeeded(&self) -> bool {
        matches!(self, StepOutcome::Exited { code: 0 })
    }
}

/// Raw data for one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepRawData {
    pub name: String,
    pub command: String,
    pub outcome: StepOutcome,
    pub wall_secs: f64,
    pub user_cpu_secs: f64,
    pub system_cpu_secs: f64,
    /// Peak resident set size of the step's process tree, KiB (from rusage).
    pub max_rss_kib: u64,
    pub stdout: CapturedOutput,
    pub stderr: CapturedOutput,
}

/// A bounded capture of one output stream: the first and last bytes, and how much was dropped.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapturedOutput {
    /// The beginning of the stream (lossy UTF-8).
    pub head: String,
    /// The end of the stream, when bytes were dropped in between (lossy UTF-8).
    pub tail: String,
    /// Bytes the stream produced in total.
    pub total_bytes: u64,
    /// Bytes dropped between head and tail.
    pub dropped_bytes: u64,
}

/// Why a guest's result was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RawDataError {
    #[error("result schema {found} is not supported (expected {RAW_RESULT_SCHEMA}); update the agent in the image (`pyti image build`)")]
    Schema { found: u32 },
    #[error("result is for task `{found}`, expected `{expected}` (stale or foreign result)")]
    WrongTask { expected: String, found: String },
    #[error("field `{field}` is invalid: {reason}")]
    Field { field: String, reason: String },
}

fn field(field: impl Into<String>, reason: impl Into<String>) -> RawDataError {
    RawDataError::Field {
        field: field.into(),
        reason: reason.into(),
    }
}

fn check_str(name: &str, value: &str, max: usize) -> Result<(), RawDataError> {
    if value.len() > max {
        return Err(field(
            name,
            format!("{} bytes, at most {max} allowed", value.len()),
        ));
    }
    Ok(())
}

fn check_secs(name: &str, value: f64) -> Result<(), RawDataError> {
    // A year of CPU or wall time is far beyond any step timeout; it bounds nonsense values.
    if !value.is_finite() || !(0.0..=31_536_000.0).contains(&value) {
        return Err(field(
            name,
            format!("{value} is not a plausible number of seconds"),
        ));
    }
    Ok(())
}

impl RawResult {
    /// Checks schema, task id and every bound; `output_limit` is the per-stream cap the task asked for.
    pub fn validate(&self, expected_task: &str, output_limit: u64) -> Result<(), RawDataError> {
        if self.schema != RAW_RESULT_SCHEMA {
            return Err(RawDataError::Schema { found: self.schema });
        }
        if self.task_id != expected_task {
            return Err(RawDataError::WrongTask {
                expected: expected_task.to_string(),
                found: self.task_id.chars().take(128).collect(),
            });
        }
        check_str("agent_version", &self.agent_version, 128)?;
        check_str("guest_kernel", &self.guest_kernel, 256)?;
        check_str("interpreter_version", &self.interpreter_version, 256)?;
        check_secs("uptime_start_secs", self.uptime_start_secs)?;
        check_secs("uptime_end_secs", self.uptime_end_secs)?;
        if self.steps.len() > 2 * limits::MAX_STEPS {
            return Err(field(
                "steps",
                format!(
                    "{} steps, at most {}",
                    self.steps.len(),
                    2 * limits::MAX_STEPS
                ),
            ));
        }
        let cap = output_limit.min(limits::MAX_STEP_OUTPUT_BYTES);
        for (i, step) in self.steps.iter().enumerate() {
            let at = |f: &str| format!("steps[{i}].{f}");
            check_str(&at("name"), &step.name, limits::MAX_STEP_NAME_CHARS * 4)?;
            check_str(&at("command"), &step.command, limits::MAX_COMMAND_BYTES)?;
            if let StepOutcome::NotStarted { reason } = &step.outcome {
                check_str(&at("outcome.reason"), reason, 4096)?;
            }
            check_secs(&at("wall_secs"), step.wall_secs)?;
            check_secs(&at("user_cpu_secs"), step.user_cpu_secs)?;
            check_secs(&at("system_cpu_secs"), step.system_cpu_secs)?;
            for (name, out) in [("stdout", &step.stdout), ("stderr", &step.stderr)] {
                // Lossy UTF-8 may turn one byte into three (U+FFFD), hence the slack.
                let kept = (out.head.len() + out.tail.len()) as u64;
                if kept > cap.saturating_mul(3) {
                    return Err(field(at(name), format!("{kept} bytes kept, cap is {cap}")));
                }
                if out.dropped_bytes > out.total_bytes {
                    return Err(field(at(name), "dropped more bytes than it produced"));
                }
            }
        }
        Ok(())
    }
}
