//! The only code that writes a task's state: checks the transition with [`crate::state::next`],
//! then updates the task, its lane's queued count, its attempt record and its log, all inside the
//! caller's transaction.

use super::Db;
use crate::backend::rows::{Claimed, PickedRow, TaskRow};
use crate::error::MasterError;
use crate::state::{self, Transition};
use crate::store::Change;
use pyti_wire::job::{AttemptOutcome, TaskState};

/// How the current attempt ended (with `Finish`, `Retry` or `Cancel` of a leased task).
pub(crate) struct AttemptEnd<'a> {
    pub outcome: AttemptOutcome,
    pub reason: &'a str,
    pub raw_json: Option<&'a str>,
    pub report_sha256: Option<&'a str>,
}

/// Applies `transition` to `task` (as read in this transaction) and returns the change. Leases
/// are granted in batches by [`lease_batch`].
pub(crate) async fn apply(
    tx: &mut sqlx::Transaction<'static, Db>,
    task: &TaskRow,
    transition: Transition,
    end: Option<AttemptEnd<'_>>,
    now: i64,
) -> Result<Change, MasterError> {
    let from = task.state()?;
    if from == TaskState::Leased {
        record_lease(tx, task).await?;
    }
    if transition == Transition::Lease {
        return Err(MasterError::Conflict(format!(
            "task {}: leases are granted by lease_batch",
            task.id
        )));
    }
    let to = state::next(from, transition)
        .map_err(|e| MasterError::Conflict(format!("task {}: {e}", task.id)))?;
    let attempt = if transition == Transition::Retry {
        task.attempt + 1
    } else {
        task.attempt
    };
    let (lease_id, lease_slave, lease_expires) = match to {
        TaskState::Running => (
            task.lease_id.as_deref(),
            task.lease_slave.as_deref(),
            task.lease_expires_ms,
        ),
        _ => (None, None, None),
    };
    let (state_text, verdict) = state::to_db(to);
    let updated = sqlx::query(
        "UPDATE tasks SET state = $1, verdict = $2, attempt = $3, lease_id = $4, lease_slave = $5, \
         lease_expires_ms = $6, updated_ms = $7 WHERE id = $8 AND state = $9 AND attempt = $10",
    )
    .bind(state_text)
    .bind(verdict)
    .bind(attempt)
    .bind(lease_id)
    .bind(lease_slave)
    .bind(lease_expires)
    .bind(now)
    .bind(task.id)
    .bind(&task.state)
    .bind(task.attempt)
    .execute(&mut **tx)
    .await?;
    if updated.rows_affected() != 1 {
        return Err(MasterError::Conflict(format!(
            "task {} changed concurrently; retry",
            task.id
        )));
    }

    if holds_lease(from) && !holds_lease(to) {
        // The slave's slot is free again. (Before the lane below: every transaction that
        // touches both locks the slave first.)
        if let Some(slave) = &task.lease_slave {
            sqlx::query("UPDATE slaves SET held = held - 1 WHERE name = $1")
                .bind(slave)
                .execute(&mut **tx)
                .await?;
        }
    }
    if from == TaskState::Queued && to != TaskState::Queued {
        // Leaving the queue (cancelled): one less in the lane.
        sqlx::query(
            "UPDATE lanes SET queued = queued - 1 WHERE recipe = $1 AND priority = $2 AND submitter = $3",
        )
            .bind(&task.recipe)
            .bind(task.priority)
            .bind(&task.submitter)
            .execute(&mut **tx)
            .await?;
    } else if to == TaskState::Queued {
        enqueue_in_lane(tx, &task.recipe, task.priority, &task.submitter, 1).await?;
    }

    if from == TaskState::Leased && to == TaskState::Running {
        sqlx::query("UPDATE attempts SET started_ms = $1 WHERE task_id = $2 AND attempt = $3")
            .bind(now)
            .bind(task.id)
            .bind(task.attempt)
            .execute(&mut **tx)
            .await?;
    }
    if let Some(end) = &end {
        sqlx::query(
            "UPDATE attempts SET finished_ms = $1, outcome = $2, reason = $3, raw_result = $4, \
             report_sha256 = $5 WHERE task_id = $6 AND attempt = $7",
        )
        .bind(now)
        .bind(state::outcome_to_db(end.outcome))
        .bind(end.reason)
        .bind(end.raw_json)
        .bind(end.report_sha256)
        .bind(task.id)
        .bind(task.attempt)
        .execute(&mut **tx)
        .await?;
    }
    if from != to {
        let message = match &end {
            Some(end) => format!("{from} -> {to}: {}", end.reason),
            None => format!("{from} -> {to}"),
        };
        // Under the attempt it ends: a retry's "running -> queued: REASON" says why that
        // attempt failed; the next attempt's lines begin with its lease.
        log(tx, task.id, task.attempt, now, "state", &message).await?;
    }
    Ok(Change {
        job_id: task.job_id,
        task_id: task.id,
        attempt: attempt as u32,
        state: to,
    })
}

/// Writes the attempt row and the "queued -> leased" log line of leased `task`'s lease, at the
/// time it was granted (`updated_ms`), unless they are written already (a lease granted by an
/// earlier version, or a second call). A claim batch writes only the tasks' rows (and its
/// slaves' and lanes' counts), four B-trees fewer per claim on SQLite
/// (the claim benchmark's closed loop: 19,200 claims/s before, 22,300-23,000 after). Called by
/// every change of a leased task before anything else of its attempt is written, so the log
/// keeps its order; readers show the two from the task until then.
pub(crate) async fn record_lease(
    tx: &mut sqlx::Transaction<'static, Db>,
    task: &TaskRow,
) -> Result<(), MasterError> {
    let (TaskState::Leased, Some(slave), Some(lease_id)) =
        (task.state()?, &task.lease_slave, &task.lease_id)
    else {
        return Ok(());
    };
    let written = sqlx::query(
        "INSERT INTO attempts (task_id, attempt, slave, lease_id, leased_ms) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (task_id, attempt) DO NOTHING",
    )
    .bind(task.id)
    .bind(task.attempt)
    .bind(slave)
    .bind(lease_id)
    .bind(task.updated_ms)
    .execute(&mut **tx)
    .await?;
    if written.rows_affected() == 1 {
        let message = format!("{LEASE_LINE}{slave}");
        log(
            tx,
            task.id,
            task.attempt,
            task.updated_ms,
            "state",
            &message,
        )
        .await?;
    }
    Ok(())
}

/// Adds a line to a task's log.
pub(crate) async fn log(
    tx: &mut sqlx::Transaction<'static, Db>,
    task_id: i64,
    attempt: i64,
    at_ms: i64,
    phase: &str,
    message: &str,
) -> Result<(), MasterError> {
    sqlx::query(
        "INSERT INTO task_log (task_id, attempt, at_ms, phase, message) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(task_id)
    .bind(attempt)
    .bind(at_ms)
    .bind(phase)
    .bind(message)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A lease's log line, before its slave's name.
pub(crate) const LEASE_LINE: &str = "queued -> leased by ";

/// Counts `count` more queued tasks in their lane, creating the lane if needed. A new lane has
/// never been served, so a newcomer's first task goes before a busy submitter's next one.
/// Transactions touching several lanes do so in key order (no deadlocks between masters).
pub(crate) async fn enqueue_in_lane(
    tx: &mut sqlx::Transaction<'static, Db>,
    recipe: &str,
    priority: i64,
    submitter: &str,
    count: i64,
) -> Result<(), MasterError> {
    sqlx::query(
        "INSERT INTO lanes (recipe, priority, submitter, queued, last_served) VALUES ($1, $2, $3, $4, 0) \
         ON CONFLICT (recipe, priority, submitter) DO UPDATE SET queued = lanes.queued + $4",
    )
    .bind(recipe)
    .bind(priority)
    .bind(submitter)
    .bind(count)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One task of a [`lease_batch`].
pub(crate) struct BatchLease<'a> {
    pub task: &'a TaskRow,
    pub slave: &'a str,
    pub lease_id: &'a str,
}

/// A lane's share of a [`lease_batch`]: how many of its tasks were leased, and its new
/// `last_served` mark.
pub(crate) struct LaneServed<'a> {
    pub recipe: &'a str,
    pub priority: i64,
    pub submitter: &'a str,
    pub taken: i64,
    pub last_served: i64,
}

/// [`Transition::Lease`] for many queued tasks at once (SQLite's claim batch; PostgreSQL's
/// leases with [`lease_claims`]), in one call to the database whatever the batch size: the
/// tasks' rows (state, lease, `updated_ms` the lease's time), their slaves' held counts and
/// their lanes' counts.
/// Each lease's attempt row and log line are written by its first change ([`record_lease`]).
pub(crate) async fn lease_batch(
    tx: &mut sqlx::Transaction<'static, Db>,
    leases: &[BatchLease<'_>],
    lanes: &[LaneServed<'_>],
    expires_ms: i64,
    now: i64,
) -> Result<Vec<Change>, MasterError> {
    if leases.is_empty() {
        return Ok(Vec::new());
    }
    let mut changes = Vec::with_capacity(leases.len());
    for l in leases {
        let to = state::next(l.task.state()?, Transition::Lease)
            .map_err(|e| MasterError::Conflict(format!("task {}: {e}", l.task.id)))?;
        changes.push(Change {
            job_id: l.task.job_id,
            task_id: l.task.id,
            attempt: l.task.attempt as u32,
            state: to,
        });
    }
    let updated = lease_in_one_call(tx, leases, lanes, expires_ms, now).await?;
    if updated != leases.len() as u64 {
        return Err(MasterError::Conflict(format!(
            "{} of {} tasks changed concurrently; retry",
            leases.len() as u64 - updated,
            leases.len()
        )));
    }
    Ok(changes)
}

/// [`Transition::Lease`] for one round of a claim batch on PostgreSQL, in one statement (a
/// round trip, and its own transaction): it locks the claims' slaves and refuses the claims
/// beyond their free slots, picks each lane's oldest queued tasks that no other transaction
/// holds, leases them, and updates the slaves' held counts and the lanes' counts and
/// `last_served` marks. `claims` are JSON objects `{claim, slave, slots, lease_id, recipe,
/// priority, submitter}`, `marks` `{recipe, priority, submitter, last_served}`. Returns each
/// answered claim: its task as leased, or `None` when its slave had no free slot. A claim not
/// answered found its lane short. Like [`lease_batch`], it writes neither attempt row nor log
/// line ([`record_lease`] does).
///
/// Locks are taken in the order of every other transaction: slaves by name, then tasks
/// (skipping those another transaction holds, never waiting), then lanes by key. Each step
/// reads what the one before returned, which fixes the order in which the server runs them.
/// Tasks are found by `= ANY (ARRAY(...))` (primary-key lookups whatever the planner guesses
/// for the JSON's length), and each task's state is compared with the one its pick read: a
/// planner without statistics (a new or freshly filled table) would meet the constant
/// `'queued'` with a bitmap scan of every queued task (5 ms at 20,000).
pub(crate) async fn lease_claims(
    conn: &mut <Db as sqlx::Database>::Connection,
    claims: &[serde_json::Value],
    marks: &[serde_json::Value],
    expires_ms: i64,
    now: i64,
) -> Result<Vec<(usize, Option<Claimed>)>, MasterError> {
    use sqlx::{FromRow, Row};

    let to = state::next(TaskState::Queued, Transition::Lease)
        .map_err(|e| MasterError::Conflict(format!("lease: {e}")))?;
    let (leased, _) = state::to_db(to);
    let rows = sqlx::query(
        "WITH claim AS ( \
             SELECT * FROM jsonb_to_recordset($1::jsonb) AS c ( \
                 claim BIGINT, slave TEXT, slots BIGINT, lease_id TEXT, \
                 recipe TEXT, priority BIGINT, submitter TEXT) \
         ), locked_slaves AS ( \
             SELECT name, held FROM slaves WHERE name IN (SELECT slave FROM claim) \
             ORDER BY name FOR UPDATE \
         ), fits AS ( \
             SELECT claim.*, row_number() OVER (PARTITION BY claim.slave ORDER BY claim.claim) \
                 <= claim.slots - COALESCE(locked_slaves.held, 0) AS fits \
             FROM claim LEFT JOIN locked_slaves ON locked_slaves.name = claim.slave \
         ), allowed AS ( \
             SELECT fits.*, row_number() OVER ( \
                 PARTITION BY fits.recipe, fits.priority, fits.submitter ORDER BY fits.claim \
             ) AS nth \
             FROM fits WHERE fits.fits \
         ), wanted AS ( \
             SELECT recipe, priority, submitter, COUNT(*) AS n FROM allowed \
             GROUP BY recipe, priority, submitter \
         ), picked AS ( \
             SELECT oldest.*, row_number() OVER ( \
                 PARTITION BY oldest.recipe, oldest.priority, oldest.submitter ORDER BY oldest.id \
             ) AS nth \
             FROM wanted CROSS JOIN LATERAL ( \
                 SELECT id, state, recipe, priority, submitter FROM tasks \
                 WHERE state = 'queued' AND recipe = wanted.recipe \
                     AND priority = wanted.priority AND submitter = wanted.submitter \
                 ORDER BY id LIMIT wanted.n FOR UPDATE SKIP LOCKED \
             ) AS oldest \
         ), matched AS ( \
             SELECT allowed.claim, allowed.slave, allowed.lease_id, picked.id, picked.state \
             FROM allowed JOIN picked ON picked.recipe = allowed.recipe \
                 AND picked.priority = allowed.priority \
                 AND picked.submitter = allowed.submitter AND picked.nth = allowed.nth \
         ), leased AS ( \
             UPDATE tasks SET state = $3, lease_id = matched.lease_id, \
                 lease_slave = matched.slave, lease_expires_ms = $4, updated_ms = $5 \
             FROM matched \
             WHERE tasks.id = ANY (ARRAY(SELECT id FROM matched)) \
                 AND tasks.id = matched.id AND tasks.state = matched.state \
             RETURNING matched.claim, tasks.* \
         ), holding AS ( \
             UPDATE slaves SET held = slaves.held + per_slave.n \
             FROM (SELECT lease_slave, COUNT(*) AS n FROM leased GROUP BY lease_slave) AS per_slave \
             WHERE slaves.name = per_slave.lease_slave \
         ), per_lane AS ( \
             SELECT recipe, priority, submitter, COUNT(*) AS n FROM leased \
             GROUP BY recipe, priority, submitter \
         ), locked_lanes AS ( \
             SELECT recipe, priority, submitter FROM lanes \
             WHERE (recipe, priority, submitter) IN (SELECT recipe, priority, submitter FROM per_lane) \
             ORDER BY recipe, priority, submitter FOR UPDATE \
         ), served AS ( \
             UPDATE lanes SET queued = lanes.queued - per_lane.n, last_served = mark.last_served \
             FROM locked_lanes JOIN per_lane USING (recipe, priority, submitter) \
                 JOIN jsonb_to_recordset($2::jsonb) \
                     AS mark (recipe TEXT, priority BIGINT, submitter TEXT, last_served BIGINT) \
                     USING (recipe, priority, submitter) \
             WHERE lanes.recipe = locked_lanes.recipe AND lanes.priority = locked_lanes.priority \
                 AND lanes.submitter = locked_lanes.submitter \
         ) \
         SELECT leased.claim, FALSE AS slave_full, leased.id, leased.job_id, leased.recipe, \
             leased.snapshot_id, leased.submitter, leased.priority, leased.state, leased.verdict, \
             leased.attempt, leased.lease_id, leased.lease_slave, leased.lease_expires_ms, \
             leased.cancel_requested, leased.created_ms, leased.updated_ms, jobs.package_spec, \
             jobs.upload IS NOT NULL AS has_upload \
         FROM leased JOIN jobs ON jobs.id = leased.job_id \
         UNION ALL \
         SELECT claim, TRUE, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
             NULL, NULL, NULL, NULL, NULL, NULL \
         FROM fits WHERE NOT fits",
    )
    .bind(serde_json::Value::from(claims).to_string())
    .bind(serde_json::Value::from(marks).to_string())
    .bind(leased)
    .bind(expires_ms)
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| {
            let claim: i64 = row.try_get("claim")?;
            let claim = usize::try_from(claim)
                .map_err(|_| MasterError::Corrupt(format!("claim number {claim}")))?;
            if row.try_get::<bool, _>("slave_full")? {
                return Ok((claim, None));
            }
            let picked = PickedRow::from_row(row)?;
            let change = Change {
                job_id: picked.task.job_id,
                task_id: picked.task.id,
                attempt: picked.task.attempt as u32,
                state: to,
            };
            Ok((claim, Some(Claimed { picked, change })))
        })
        .collect()
}

/// [`lease_batch`]'s writes for SQLite, which has no data-modifying CTEs: three statements,
/// sent as one query so they run in one call on the connection's thread (each call is a
/// hand-over between threads, ~50 us, more than most of these statements take). Returns how
/// many tasks were leased, from the tasks' update; when that is not all of them the caller
/// rolls the transaction back, and what the other statements wrote with it.
async fn lease_in_one_call(
    tx: &mut sqlx::Transaction<'static, Db>,
    leases: &[BatchLease<'_>],
    lanes: &[LaneServed<'_>],
    expires_ms: i64,
    now: i64,
) -> Result<u64, MasterError> {
    use futures::TryStreamExt;
    use sqlx::Executor;

    let (leased, _) = state::to_db(TaskState::Leased);
    let mut q = sqlx::QueryBuilder::<Db>::new("UPDATE tasks SET state = ");
    q.push_bind(leased);
    q.push(", lease_expires_ms = ").push_bind(expires_ms);
    q.push(", updated_ms = ").push_bind(now);
    q.push(", lease_id = CASE id");
    for l in leases {
        q.push(" WHEN ").push_bind(l.task.id);
        q.push(" THEN ").push_bind(l.lease_id.to_string());
    }
    q.push(" END, lease_slave = CASE id");
    for l in leases {
        q.push(" WHEN ").push_bind(l.task.id);
        q.push(" THEN ").push_bind(l.slave.to_string());
    }
    q.push(" END WHERE state = 'queued' AND id IN (");
    let mut ids = q.separated(", ");
    for l in leases {
        ids.push_bind(l.task.id);
    }
    q.push(");\n");
    // Each slave's held count.
    let mut per_slave: Vec<(&str, i64)> = Vec::new();
    for l in leases {
        match per_slave.iter_mut().find(|(name, _)| *name == l.slave) {
            Some((_, n)) => *n += 1,
            None => per_slave.push((l.slave, 1)),
        }
    }
    q.push("UPDATE slaves SET held = held + CASE name");
    for (name, n) in &per_slave {
        q.push(" WHEN ").push_bind(name.to_string());
        q.push(" THEN ").push_bind(*n);
    }
    q.push(" ELSE 0 END WHERE name IN (");
    let mut names = q.separated(", ");
    for (name, _) in &per_slave {
        names.push_bind(name.to_string());
    }
    q.push(");\n");
    if !lanes.is_empty() {
        // Every lane served.
        q.push("UPDATE lanes SET queued = queued - CASE");
        for lane in lanes {
            push_lane_match(&mut q, lane, " WHEN ");
            q.push(" THEN ").push_bind(lane.taken);
        }
        q.push(" ELSE 0 END, last_served = CASE");
        for lane in lanes {
            push_lane_match(&mut q, lane, " WHEN ");
            q.push(" THEN ").push_bind(lane.last_served);
        }
        q.push(" ELSE last_served END WHERE");
        for (n, lane) in lanes.iter().enumerate() {
            push_lane_match(&mut q, lane, if n == 0 { " (" } else { " OR (" });
            q.push(")");
        }
        q.push(";\n");
    }
    // One result per statement, in order: the first is the tasks' update.
    let changed: Vec<u64> = (&mut **tx)
        .fetch_many(q.build())
        .try_filter_map(|step| async move { Ok(step.left().map(|done| done.rows_affected())) })
        .try_collect()
        .await?;
    Ok(changed.first().copied().unwrap_or(0))
}

/// Whether a task in `state` holds a lease (and a slot of its slave): `lease_slave` is set
/// exactly then, and the slave's `held` counts it.
fn holds_lease(state: TaskState) -> bool {
    matches!(state, TaskState::Leased | TaskState::Running)
}

fn push_lane_match(q: &mut sqlx::QueryBuilder<Db>, lane: &LaneServed<'_>, prefix: &str) {
    q.push(prefix)
        .push("recipe = ")
        .push_bind(lane.recipe.to_string())
        .push(" AND priority = ")
        .push_bind(lane.priority)
        .push(" AND submitter = ")
        .push_bind(lane.submitter.to_string());
}
