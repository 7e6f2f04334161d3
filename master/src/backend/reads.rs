//! Reads for the readers' API, the claim answer and metrics. Reads use the read pool and never
//! lock anything.

use super::{Db, Pools};
use crate::backend::rows::{AttemptRow, JobRow, TaskRow};
use crate::error::MasterError;
use pyti_wire::job::{normalize_name, JobFilter, Verdict};

/// Jobs per `list_jobs` answer when the filter does not say, and at most.
pub(crate) const DEFAULT_LIST_LIMIT: u32 = 100;
pub(crate) const MAX_LIST_LIMIT: u32 = 1000;

/// The condition, on `tasks`, of a lease whose attempt row and log line are still to be written
/// (see [`record_lease`](super::transition::record_lease)): readers show them from the task.
macro_rules! unrecorded_lease {
    () => {
        "state = 'leased' AND NOT EXISTS (SELECT 1 FROM attempts \
         WHERE attempts.task_id = tasks.id AND attempts.attempt = tasks.attempt)"
    };
}

const JOB_COLUMNS: &str = "id, package_spec, submitter, priority, trigger_label, created_ms";

/// A job and its tasks.
pub(crate) async fn job(
    p: Pools<'_>,
    id: i64,
) -> Result<Option<(JobRow, Vec<TaskRow>)>, MasterError> {
    let job: Option<JobRow> = sqlx::query_as(
        "SELECT id, package_spec, submitter, priority, trigger_label, created_ms FROM jobs WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(p.read)
    .await?;
    let Some(job) = job else { return Ok(None) };
    let tasks: Vec<TaskRow> = sqlx::query_as(concat!(
        "SELECT ",
        task_columns!(),
        " FROM tasks WHERE job_id = $1 ORDER BY id"
    ))
    .bind(id)
    .fetch_all(p.read)
    .await?;
    Ok(Some((job, tasks)))
}

/// Jobs matching `filter`, newest first, each with its tasks.
pub(crate) async fn list_jobs(
    p: Pools<'_>,
    filter: &JobFilter,
) -> Result<Vec<(JobRow, Vec<TaskRow>)>, MasterError> {
    let mut qb =
        sqlx::QueryBuilder::<Db>::new(format!("SELECT {JOB_COLUMNS} FROM jobs WHERE 1 = 1"));
    if let Some(package) = &filter.package {
        qb.push(" AND package_name = ")
            .push_bind(normalize_name(package));
    }
    if let Some(submitter) = &filter.submitter {
        qb.push(" AND submitter = ").push_bind(submitter.clone());
    }
    if let Some(since) = filter.since_ms {
        qb.push(" AND created_ms >= ").push_bind(since);
    }
    if let Some(before) = filter.before {
        qb.push(" AND id < ").push_bind(before);
    }
    if let Some(recipe) = &filter.recipe {
        qb.push(" AND EXISTS (SELECT 1 FROM tasks t WHERE t.job_id = jobs.id AND t.recipe = ")
            .push_bind(recipe.clone())
            .push(")");
    }
    if let Some(status) = &filter.status {
        let column = if Verdict::parse(status).is_some() {
            "verdict"
        } else {
            "state"
        };
        qb.push(format!(
            " AND EXISTS (SELECT 1 FROM tasks t WHERE t.job_id = jobs.id AND t.{column} = "
        ))
        .push_bind(status.clone())
        .push(")");
    }
    let limit = filter
        .limit
        .unwrap_or(DEFAULT_LIST_LIMIT)
        .clamp(1, MAX_LIST_LIMIT);
    qb.push(" ORDER BY id DESC LIMIT ").push_bind(limit as i64);
    let jobs: Vec<JobRow> = qb.build_query_as().fetch_all(p.read).await?;
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let mut qb = sqlx::QueryBuilder::<Db>::new(concat!(
        "SELECT ",
        task_columns!(),
        " FROM tasks WHERE job_id IN ("
    ));
    let mut ids = qb.separated(", ");
    for job in &jobs {
        ids.push_bind(job.id);
    }
    qb.push(") ORDER BY id");
    let tasks: Vec<TaskRow> = qb.build_query_as().fetch_all(p.read).await?;
    let mut by_job: std::collections::HashMap<i64, Vec<TaskRow>> = Default::default();
    for task in tasks {
        by_job.entry(task.job_id).or_default().push(task);
    }
    Ok(jobs
        .into_iter()
        .map(|job| {
            let tasks = by_job.remove(&job.id).unwrap_or_default();
            (job, tasks)
        })
        .collect())
}

/// A task, its job and every attempt.
pub(crate) async fn task(
    p: Pools<'_>,
    id: i64,
) -> Result<Option<(TaskRow, JobRow, Vec<AttemptRow>)>, MasterError> {
    let task: Option<TaskRow> = sqlx::query_as(concat!(
        "SELECT ",
        task_columns!(),
        " FROM tasks WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(p.read)
    .await?;
    let Some(task) = task else { return Ok(None) };
    let job: JobRow = sqlx::query_as(
        "SELECT id, package_spec, submitter, priority, trigger_label, created_ms FROM jobs WHERE id = $1",
    )
    .bind(task.job_id)
    .fetch_one(p.read)
    .await?;
    let attempts: Vec<AttemptRow> = sqlx::query_as(concat!(
        "SELECT attempt, slave, leased_ms, started_ms, finished_ms, outcome, reason, \
             report_sha256, raw_result FROM attempts WHERE task_id = $1 \
             UNION ALL SELECT attempt, lease_slave, updated_ms, NULL, NULL, NULL, NULL, NULL, NULL \
             FROM tasks WHERE id = $1 AND ",
        unrecorded_lease!(),
        " ORDER BY attempt"
    ))
    .bind(id)
    .fetch_all(p.read)
    .await?;
    Ok(Some((task, job, attempts)))
}

/// A task's log lines: `(at_ms, attempt, phase, message)`, oldest first, at most `limit` from
/// line `from` (0-based); `None` if no such task.
pub(crate) async fn task_log(
    p: Pools<'_>,
    id: i64,
    from: i64,
    limit: i64,
) -> Result<Option<Vec<(i64, i64, String, String)>>, MasterError> {
    let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM tasks WHERE id = $1")
        .bind(id)
        .fetch_optional(p.read)
        .await?;
    if exists.is_none() {
        return Ok(None);
    }
    Ok(Some(
        sqlx::query_as(concat!(
            "SELECT at_ms, attempt, phase, message FROM (\
                 SELECT id AS line, at_ms, attempt, phase, message FROM task_log \
                 WHERE task_id = $1 \
                 UNION ALL SELECT NULL, updated_ms, attempt, 'state', $2 || lease_slave \
                 FROM tasks WHERE id = $1 AND ",
            unrecorded_lease!(),
            ") AS lines ORDER BY line IS NULL, line LIMIT $3 OFFSET $4"
        ))
        .bind(id)
        .bind(super::transition::LEASE_LINE)
        .bind(limit)
        .bind(from)
        .fetch_all(p.read)
        .await?,
    ))
}

/// A package's cells for `compare`: for each version and recipe (only `recipes` when not the
/// JSON `[]`), the latest finished task, else the latest one still to finish; cancelled tasks
/// do not count. Only the newest `versions` versions (in order of their first submission) are
/// read: `(version, recipe, task id, state, verdict, how many versions the package has)`, oldest
/// version first, then by recipe. The database picks the cells, so the rows read are at most
/// versions x recipes however often each was run again.
pub(crate) async fn package_cells(
    p: Pools<'_>,
    package: &str,
    recipes_json: &str,
    versions: i64,
) -> Result<Vec<(String, String, i64, String, Option<String>, i64)>, MasterError> {
    Ok(sqlx::query_as(concat!(
        "SELECT version, recipe, task_id, state, verdict, versions FROM (\
             SELECT version, recipe, task_id, state, verdict, first_job, \
                 DENSE_RANK() OVER (ORDER BY first_job DESC) AS newness, \
                 DENSE_RANK() OVER (ORDER BY first_job DESC) \
                     + DENSE_RANK() OVER (ORDER BY first_job) - 1 AS versions \
             FROM (\
                 SELECT version, recipe, task_id, state, verdict, \
                     MIN(job_id) OVER (PARTITION BY version) AS first_job, \
                     ROW_NUMBER() OVER (PARTITION BY version, recipe \
                         ORDER BY CASE WHEN state = 'finished' THEN 0 ELSE 1 END, task_id DESC) \
                         AS pick \
                 FROM (\
                     SELECT COALESCE(j.package_version, '?') AS version, t.recipe, \
                         t.id AS task_id, t.job_id, t.state, t.verdict \
                     FROM tasks t JOIN jobs j ON j.id = t.job_id \
                     WHERE j.package_name = $1 AND t.state <> 'cancelled' \
                         AND ($2 = '[]' OR t.recipe IN (",
        json_text_elements!("$2"),
        "))) AS package_tasks \
             ) AS picked WHERE pick = 1 \
         ) AS cells WHERE newness <= $3 ORDER BY first_job, recipe"
    ))
    .bind(normalize_name(package))
    .bind(recipes_json)
    .bind(versions)
    .fetch_all(p.read)
    .await?)
}

/// A recipe snapshot's JSON.
pub(crate) async fn snapshot(p: Pools<'_>, id: i64) -> Result<String, MasterError> {
    Ok(
        sqlx::query_scalar("SELECT body FROM recipe_snapshots WHERE id = $1")
            .bind(id)
            .fetch_one(p.read)
            .await?,
    )
}

/// Tasks per `(state, verdict)`.
pub(crate) async fn state_counts(
    p: Pools<'_>,
) -> Result<Vec<(String, Option<String>, i64)>, MasterError> {
    Ok(sqlx::query_as(
        "SELECT state, verdict, COUNT(*) FROM tasks GROUP BY state, verdict ORDER BY state, verdict",
    )
    .fetch_all(p.read)
    .await?)
}

/// A trivial query: is the database answering?
pub(crate) async fn ping(p: Pools<'_>) -> Result<(), MasterError> {
    let _: i64 = sqlx::query_scalar("SELECT 1").fetch_one(p.read).await?;
    Ok(())
}

/// The uploaded bytes of those of `job_ids` that have an upload (read after a claim commits).
pub(crate) async fn uploads(
    p: Pools<'_>,
    job_ids: &[i64],
) -> Result<std::collections::HashMap<i64, Vec<u8>>, MasterError> {
    if job_ids.is_empty() {
        return Ok(Default::default());
    }
    let mut q = sqlx::QueryBuilder::<Db>::new("SELECT id, upload FROM jobs WHERE id IN (");
    let mut ids = q.separated(", ");
    for id in job_ids {
        ids.push_bind(*id);
    }
    q.push(") AND upload IS NOT NULL");
    let rows: Vec<(i64, Vec<u8>)> = q.build_query_as().fetch_all(p.read).await?;
    Ok(rows.into_iter().collect())
}
