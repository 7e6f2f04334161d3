//! The verdict of an attempt, computed by the master from the agent's raw data and the recipe
//! snapshot stored with the task (never taken from the slave's word).

use pyti_wire::job::Verdict;
use pyti_wire::raw_data::{RawResult, StepOutcome};
use pyti_wire::recipe::StepSpec;

/// Judges `raw` against the recipe's `steps`: the verdict and a one-line reason.
///
/// - a step with `fails_task` that timed out → `timeout`; that exited non-zero or was killed →
///   `fail`; the steps after it may be skipped or missing;
/// - a step with `fails_task` that could not start, a step skipped although nothing failed, steps
///   missing, renamed or extra → `error` (the raw data does not describe this recipe);
/// - otherwise `pass` (failures of steps without `fails_task` are only recorded).
pub fn judge(raw: &RawResult, steps: &[StepSpec]) -> (Verdict, String) {
    let mut failed: Option<(Verdict, String)> = None;
    for (i, spec) in steps.iter().enumerate() {
        let Some(step) = raw.steps.get(i) else {
            if failed.is_some() {
                break;
            }
            return (
                Verdict::Error,
                format!("step `{}` is missing from the raw data", spec.name),
            );
        };
        if step.name != spec.name {
            return (
                Verdict::Error,
                format!(
                    "step {} is `{}` in the raw data but `{}` in the recipe",
                    i + 1,
                    clip(&step.name),
                    spec.name
                ),
            );
        }
        if failed.is_some() {
            continue;
        }
        match &step.outcome {
            StepOutcome::Exited { code: 0 } => {}
            StepOutcome::Skipped => {
                return (
                    Verdict::Error,
                    format!("step `{}` was skipped although no step failed", spec.name),
                )
            }
            _ if !spec.fails_task => {}
            StepOutcome::Exited { code } => {
                failed = Some((
                    Verdict::Fail,
                    format!("step `{}` exited with code {code}", spec.name),
                ))
            }
            StepOutcome::Signaled { signal } => {
                failed = Some((
                    Verdict::Fail,
                    format!("step `{}` was killed by signal {signal}", spec.name),
                ))
            }
            StepOutcome::TimedOut => {
                failed = Some((
                    Verdict::Timeout,
                    format!(
                        "step `{}` ran past its {} s timeout",
                        spec.name, spec.timeout_secs
                    ),
                ))
            }
            StepOutcome::NotStarted { reason } => {
                return (
                    Verdict::Error,
                    format!("step `{}` could not start: {}", spec.name, clip(reason)),
                )
            }
        }
    }
    if failed.is_none() && raw.steps.len() > steps.len() {
        return (
            Verdict::Error,
            format!(
                "the raw data has {} steps, the recipe {}",
                raw.steps.len(),
                steps.len()
            ),
        );
    }
    failed.unwrap_or((Verdict::Pass, "every step succeeded".to_string()))
}

/// Guest-supplied text in a reason is cut short.
fn clip(text: &str) -> String {
    text.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyti_wire::raw_data::{CapturedOutput, StepRawData, RAW_RESULT_SCHEMA};

    fn spec(name: &str, fails_task: bool) -> StepSpec {
        StepSpec {
            name: name.into(),
            run: "true".into(),
            timeout_secs: 60,
            fails_task,
        }
    }

    fn recipe() -> Vec<StepSpec> {
        vec![
            spec("install", true),
            spec("lint", false),
            spec("test", true),
        ]
    }

    fn raw(outcomes: &[(&str, StepOutcome)]) -> RawResult {
        RawResult {
            schema: RAW_RESULT_SCHEMA,
            task_id: "1".into(),
            agent_version: "t".into(),
            guest_kernel: "k".into(),
            interpreter_version: "3.11".into(),
            uptime_start_secs: 1.0,
            uptime_end_secs: 2.0,
            steps: outcomes
                .iter()
                .map(|(name, outcome)| StepRawData {
                    name: name.to_string(),
                    command: "true".into(),
                    outcome: outcome.clone(),
                    wall_secs: 0.1,
                    user_cpu_secs: 0.0,
                    system_cpu_secs: 0.0,
                    max_rss_kib: 1,
                    stdout: CapturedOutput::default(),
                    stderr: CapturedOutput::default(),
                })
                .collect(),
        }
    }

    const OK: StepOutcome = StepOutcome::Exited { code: 0 };

    #[test]
    fn all_steps_succeeding_pass() {
        let r = raw(&[("install", OK), ("lint", OK), ("test", OK)]);
        assert_eq!(judge(&r, &recipe()).0, Verdict::Pass);
    }

    #[test]
    fn a_failing_step_without_fails_task_still_passes() {
        let r = raw(&[
            ("install", OK),
            ("lint", StepOutcome::Exited { code: 1 }),
            ("test", OK),
        ]);
        assert_eq!(judge(&r, &recipe()).0, Verdict::Pass);
        let r = raw(&[
            ("install", OK),
            ("lint", StepOutcome::TimedOut),
            ("test", OK),
        ]);
        assert_eq!(judge(&r, &recipe()).0, Verdict::Pass);
    }

    #[test]
    fn a_failing_step_with_fails_task_fails_and_later_steps_may_be_skipped() {
        let r = raw(&[
            ("install", StepOutcome::Exited { code: 2 }),
            ("lint", StepOutcome::Skipped),
            ("test", StepOutcome::Skipped),
        ]);
        let (v, reason) = judge(&r, &recipe());
        assert_eq!(v, Verdict::Fail);
        assert!(
            reason.contains("install") && reason.contains("code 2"),
            "{reason}"
        );
        let r = raw(&[
            ("install", OK),
            ("lint", OK),
            ("test", StepOutcome::Signaled { signal: 9 }),
        ]);
        assert_eq!(judge(&r, &recipe()).0, Verdict::Fail);
        // The agent may also stop reporting after the failure.
        let r = raw(&[("install", StepOutcome::Exited { code: 1 })]);
        assert_eq!(judge(&r, &recipe()).0, Verdict::Fail);
    }

    #[test]
    fn a_timed_out_step_with_fails_task_is_a_timeout() {
        let r = raw(&[
            ("install", OK),
            ("lint", OK),
            ("test", StepOutcome::TimedOut),
        ]);
        let (v, reason) = judge(&r, &recipe());
        assert_eq!(v, Verdict::Timeout);
        assert!(reason.contains("60 s"), "{reason}");
    }

    #[test]
    fn raw_data_that_does_not_match_the_recipe_is_an_error() {
        let missing = raw(&[("install", OK), ("lint", OK)]);
        assert_eq!(judge(&missing, &recipe()).0, Verdict::Error);
        let renamed = raw(&[("install", OK), ("other", OK), ("test", OK)]);
        assert_eq!(judge(&renamed, &recipe()).0, Verdict::Error);
        let extra = raw(&[("install", OK), ("lint", OK), ("test", OK), ("x", OK)]);
        assert_eq!(judge(&extra, &recipe()).0, Verdict::Error);
        let skipped = raw(&[
            ("install", OK),
            ("lint", OK),
            ("test", StepOutcome::Skipped),
        ]);
        assert_eq!(judge(&skipped, &recipe()).0, Verdict::Error);
        let not_started = raw(&[
            (
                "install",
                StepOutcome::NotStarted {
                    reason: "no sh".into(),
                },
            ),
            ("lint", StepOutcome::Skipped),
            ("test", StepOutcome::Skipped),
        ]);
        assert_eq!(judge(&not_started, &recipe()).0, Verdict::Error);
    }
}
