//! Submitting and cancelling jobs.

use super::transition::{self, AttemptEnd};
use super::{Db, Pools};
use crate::backend::rows::TaskRow;
use crate::error::MasterError;
use crate::job_spec::NewJob;
use crate::recipes::RecipeCatalog;
use crate::state::Transition;
use crate::store::Change;
use pyti_wire::job::{AttemptOutcome, CancelReceipt, TaskState};

/// Stores `jobs` in one transaction; returns each job's id and task ids.
pub(crate) async fn submit(
    p: Pools<'_>,
    jobs: &[NewJob],
    catalog: &RecipeCatalog,
    now: i64,
) -> Result<Vec<(i64, Vec<i64>)>, MasterError> {
    write_tx!(p, |tx| {
        let mut snapshot_ids = std::collections::HashMap::new();
        let mut out = Vec::with_capacity(jobs.len());
        let mut lanes: std::collections::BTreeMap<(String, i64, String), i64> = Default::default();
        for job in jobs {
            let job_id: i64 = sqlx::query_scalar(
            "INSERT INTO jobs (package_name, package_version, package_spec, upload, submitter, \
             priority, trigger_label, created_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(&job.package_name)
        .bind(&job.package_version)
        .bind(&job.spec_json)
        .bind(&job.upload)
        .bind(&job.submitter)
        .bind(job.priority as i64)
        .bind(&job.trigger)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
            let mut task_ids = Vec::with_capacity(job.recipes.len());
            for recipe in &job.recipes {
                let snapshot_id = match snapshot_ids.get(recipe) {
                    Some(id) => *id,
                    None => {
                        let entry = catalog.get(recipe).ok_or_else(|| {
                            MasterError::field("recipes", format!("unknown recipe `{recipe}`"))
                        })?;
                        sqlx::query(
                        "INSERT INTO recipe_snapshots (name, sha256, body) VALUES ($1, $2, $3) \
                         ON CONFLICT (sha256) DO NOTHING",
                    )
                    .bind(recipe)
                    .bind(&entry.sha256)
                    .bind(&entry.json)
                    .execute(&mut *tx)
                    .await?;
                        let id: i64 =
                            sqlx::query_scalar("SELECT id FROM recipe_snapshots WHERE sha256 = $1")
                                .bind(&entry.sha256)
                                .fetch_one(&mut *tx)
                                .await?;
                        snapshot_ids.insert(recipe.clone(), id);
                        id
                    }
                };
                let task_id: i64 = sqlx::query_scalar(
                "INSERT INTO tasks (job_id, recipe, snapshot_id, submitter, priority, state, attempt, \
                 created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5, 'queued', 1, $6, $6) RETURNING id",
            )
            .bind(job_id)
            .bind(recipe)
            .bind(snapshot_id)
            .bind(&job.submitter)
            .bind(job.priority as i64)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
                *lanes
                    .entry((recipe.clone(), job.priority as i64, job.submitter.clone()))
                    .or_insert(0) += 1;
                task_ids.push(task_id);
            }
            out.push((job_id, task_ids));
        }
        for ((recipe, priority, submitter), count) in &lanes {
            transition::enqueue_in_lane(&mut tx, recipe, *priority, submitter, *count).await?;
        }
        Ok(out)
    })
}

/// Cancels job `job_id`: queued tasks become cancelled, leased and running ones are flagged for
/// their slaves. `owner` (when not an admin) must be the job's submitter.
pub(crate) async fn cancel(
    p: Pools<'_>,
    job_id: i64,
    owner: Option<&str>,
    now: i64,
) -> Result<(CancelReceipt, Vec<Change>), MasterError> {
    write_tx!(p, |tx| {
        let submitter: Option<String> =
            sqlx::query_scalar("SELECT submitter FROM jobs WHERE id = $1")
                .bind(job_id)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(submitter) = submitter else {
            return Err(MasterError::NotFound {
                what: "job",
                id: job_id.to_string(),
            });
        };
        if owner.is_some_and(|o| o != submitter) {
            return Err(MasterError::field(
                "job_id",
                format!("job {job_id} belongs to another submitter"),
            ));
        }
        let lock = if super::POSTGRES {
            concat!(
                "SELECT ",
                task_columns!(),
                " FROM tasks WHERE job_id = $1 ORDER BY id FOR UPDATE"
            )
        } else {
            concat!(
                "SELECT ",
                task_columns!(),
                " FROM tasks WHERE job_id = $1 ORDER BY id"
            )
        };
        let tasks: Vec<TaskRow> = sqlx::query_as(lock)
            .bind(job_id)
            .fetch_all(&mut *tx)
            .await?;
        let mut receipt = CancelReceipt {
            cancelled: 0,
            stopping: 0,
        };
        let mut changes = Vec::new();
        for task in &tasks {
            match task.state()? {
                TaskState::Queued => {
                    changes.push(
                        transition::apply(&mut tx, task, Transition::Cancel, None, now).await?,
                    );
                    receipt.cancelled += 1;
                }
                TaskState::Leased | TaskState::Running => {
                    sqlx::query("UPDATE tasks SET cancel_requested = 1 WHERE id = $1")
                        .bind(task.id)
                        .execute(&mut *tx)
                        .await?;
                    receipt.stopping += 1;
                }
                _ => {}
            }
        }
        Ok((receipt, changes))
    })
}

/// Ends a leased task whose job was cancelled (the slave reported, or its lease ran out).
pub(crate) async fn finish_cancelled(
    tx: &mut sqlx::Transaction<'static, Db>,
    task: &TaskRow,
    reason: &str,
    raw_json: Option<&str>,
    report_sha256: Option<&str>,
    now: i64,
) -> Result<Change, MasterError> {
    let end = AttemptEnd {
        outcome: AttemptOutcome::Cancelled,
        reason,
        raw_json,
        report_sha256,
    };
    transition::apply(tx, task, Transition::Cancel, Some(end), now).await
}
