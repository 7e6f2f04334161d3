//! The raw-data API: progress events and attempt results from slaves.

use super::jobs;
use super::transition::{self, AttemptEnd};
use super::{Pools, POSTGRES};
use crate::backend::rows::TaskRow;
use crate::error::MasterError;
use crate::state::{self, Transition};
use crate::store::{Change, MAX_LOG_LINES_PER_ATTEMPT};
use crate::verdict;
use pyti_wire::job::{
    AttemptOutcome, ProgressReport, ReportOutcome, ReportReceipt, ResultReport, TaskState, Verdict,
};
use pyti_wire::limits::{MAX_RESULT_FILE_BYTES, MAX_STEP_OUTPUT_BYTES};
use pyti_wire::raw_data::RawDataError;
use pyti_wire::recipe::Recipe;

async fn lock_task(
    tx: &mut sqlx::Transaction<'static, super::Db>,
    task_id: i64,
) -> Result<TaskRow, MasterError> {
    let sql = if POSTGRES {
        concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks WHERE id = $1 FOR UPDATE"
        )
    } else {
        concat!("SELECT ", task_columns!(), " FROM tasks WHERE id = $1")
    };
    let task: Option<TaskRow> = sqlx::query_as(sql)
        .bind(task_id)
        .fetch_optional(&mut **tx)
        .await?;
    task.ok_or(MasterError::NotFound {
        what: "task",
        id: task_id.to_string(),
    })
}

fn check_lease(task: &TaskRow, attempt: u32, lease_id: &str) -> Result<(), MasterError> {
    let stale = |reason: &str| MasterError::StaleLease {
        task: task.id,
        attempt,
        reason: reason.to_string(),
    };
    if task.attempt != attempt as i64 {
        return Err(stale(&format!(
            "the task is at attempt {} (the lease expired and it was requeued)",
            task.attempt
        )));
    }
    if task.lease_id.as_deref() != Some(lease_id) {
        return Err(stale(
            "the lease id does not match the task's current lease",
        ));
    }
    if !matches!(task.state()?, TaskState::Leased | TaskState::Running) {
        return Err(stale(&format!("the task is {}", task.state()?)));
    }
    Ok(())
}

/// Records a phase event; the first one moves the task from leased to running. Refused, with
/// nothing written, once the attempt has [`MAX_LOG_LINES_PER_ATTEMPT`] log lines.
pub(crate) async fn progress(
    p: Pools<'_>,
    report: &ProgressReport,
    now: i64,
) -> Result<Option<Change>, MasterError> {
    write_tx!(p, |tx| {
        let task = lock_task(&mut tx, report.task_id).await?;
        check_lease(&task, report.attempt, &report.lease_id)?;
        let lines: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM task_log WHERE task_id = $1 AND attempt = $2")
                .bind(task.id)
                .bind(task.attempt)
                .fetch_one(&mut *tx)
                .await?;
        if lines >= MAX_LOG_LINES_PER_ATTEMPT {
            return Err(MasterError::Conflict(format!(
                "task {} attempt {} already has {lines} log lines, the most one attempt keeps; \
                 the line was not recorded (report phases, not output)",
                task.id, task.attempt
            )));
        }
        let change = if task.state()? == TaskState::Leased {
            Some(transition::apply(&mut tx, &task, Transition::Start, None, now).await?)
        } else {
            None
        };
        transition::log(
            &mut tx,
            task.id,
            task.attempt,
            now,
            &report.phase,
            &report.message,
        )
        .await?;
        Ok(change)
    })
}

/// Ends an attempt with a slave's report. Idempotent: the same report again returns the recorded
/// outcome (`duplicate`); a different report for an ended attempt is a conflict; a report for an
/// attempt that lost its lease is stale. Nothing else is ever overwritten.
pub(crate) async fn report(
    p: Pools<'_>,
    report: &ResultReport,
    report_sha256: &str,
    max_attempts: u32,
    now: i64,
) -> Result<(ReportReceipt, Option<Change>), MasterError> {
    write_tx!(p, |tx| {
        let task = lock_task(&mut tx, report.task_id).await?;
        // A lease no change has recorded yet has no attempt row to compare the report with.
        transition::record_lease(&mut tx, &task).await?;
        let recorded: Option<(String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT lease_id, outcome, report_sha256 FROM attempts WHERE task_id = $1 AND attempt = $2",
    )
    .bind(task.id)
    .bind(report.attempt as i64)
    .fetch_optional(&mut *tx)
    .await?;
        let stale = |reason: String| MasterError::StaleLease {
            task: task.id,
            attempt: report.attempt,
            reason,
        };
        let Some((lease_id, outcome, recorded_sha)) = recorded else {
            return Err(stale("the task never had this attempt".into()));
        };
        if lease_id != report.lease_id {
            return Err(stale(
                "the lease id does not match this attempt's lease".into(),
            ));
        }
        if let Some(outcome) = outcome {
            let outcome = state::outcome_from_db(&outcome)
                .ok_or_else(|| MasterError::Corrupt(format!("attempt outcome `{outcome}`")))?;
            if recorded_sha.as_deref() == Some(report_sha256) {
                return Ok((
                    ReportReceipt {
                        state: task.state()?,
                        attempt_outcome: outcome,
                        duplicate: true,
                    },
                    None,
                ));
            }
            if outcome == AttemptOutcome::LeaseExpired {
                return Err(stale(
                    "the lease expired before this report; the task was requeued".into(),
                ));
            }
            return Err(MasterError::Conflict(format!(
                "task {} attempt {} already ended as {} with a different report",
                task.id,
                report.attempt,
                state::outcome_to_db(outcome)
            )));
        }
        check_lease(&task, report.attempt, &report.lease_id)?;

        // `None` verdict: an infrastructure failure.
        let (verdict, reason, raw_json) = match &report.outcome {
            ReportOutcome::Infrastructure { reason } => (None, reason.clone(), None),
            ReportOutcome::GuestTimeout { detail } => {
                (Some(Verdict::Timeout), detail.clone(), None)
            }
            ReportOutcome::PackageError { reason } => (Some(Verdict::Error), reason.clone(), None),
            ReportOutcome::Raw { result } => {
                match result.validate(&task.id.to_string(), MAX_STEP_OUTPUT_BYTES) {
                    Err(e @ (RawDataError::Schema { .. } | RawDataError::WrongTask { .. })) => {
                        (None, format!("unusable raw data: {e}"), None)
                    }
                    Err(e @ RawDataError::Field { .. }) => {
                        (Some(Verdict::Error), format!("invalid raw data: {e}"), None)
                    }
                    Ok(()) => {
                        let json = serde_json::to_string(result)
                            .map_err(|e| MasterError::field("outcome.result", e.to_string()))?;
                        if json.len() as u64 > MAX_RESULT_FILE_BYTES {
                            // More than the agent's result file holds, so not the agent's
                            // (escaped control characters take six bytes each): kept, it would
                            // make every read of the task as large as the request limit.
                            let reason = format!(
                                "invalid raw data: {} bytes as JSON, more than the {} MiB of \
                                 an agent's result file",
                                json.len(),
                                MAX_RESULT_FILE_BYTES >> 20
                            );
                            (Some(Verdict::Error), reason, None)
                        } else {
                            let recipe = snapshot(&mut tx, task.snapshot_id).await?;
                            let (v, reason) = verdict::judge(result, &recipe.steps);
                            (Some(v), reason, Some(json))
                        }
                    }
                }
            }
        };
        let change = if task.cancel_requested != 0 {
            jobs::finish_cancelled(
                &mut tx,
                &task,
                &reason,
                raw_json.as_deref(),
                Some(report_sha256),
                now,
            )
            .await?
        } else {
            let (transition, outcome) = match verdict {
                Some(v) => (Transition::Finish(v), AttemptOutcome::Verdict(v)),
                None => (
                    state::after_infrastructure_failure(report.attempt, max_attempts),
                    AttemptOutcome::Verdict(Verdict::Tmpfail),
                ),
            };
            let end = AttemptEnd {
                outcome,
                reason: &reason,
                raw_json: raw_json.as_deref(),
                report_sha256: Some(report_sha256),
            };
            transition::apply(&mut tx, &task, transition, Some(end), now).await?
        };
        let attempt_outcome = match (change.state, verdict) {
            (TaskState::Cancelled, _) => AttemptOutcome::Cancelled,
            (_, Some(v)) => AttemptOutcome::Verdict(v),
            (_, None) => AttemptOutcome::Verdict(Verdict::Tmpfail),
        };
        Ok((
            ReportReceipt {
                state: change.state,
                attempt_outcome,
                duplicate: false,
            },
            Some(change),
        ))
    })
}

/// The recipe snapshot a task was submitted with.
async fn snapshot(
    tx: &mut sqlx::Transaction<'static, super::Db>,
    id: i64,
) -> Result<Recipe, MasterError> {
    let body: String = sqlx::query_scalar("SELECT body FROM recipe_snapshots WHERE id = $1")
        .bind(id)
        .fetch_one(&mut **tx)
        .await?;
    serde_json::from_str(&body)
        .map_err(|e| MasterError::Corrupt(format!("recipe snapshot {id}: {e}")))
}
