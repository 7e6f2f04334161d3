//! Handing tasks to slaves: registration, claims under leases, heartbeats, expiry.

use super::jobs;
use super::transition::{self, AttemptEnd, BatchLease, LaneServed};
use super::{Db, Pools, POSTGRES};
use crate::backend::lanes::{ClaimWant, Lane, LaneKey, Lanes};
use crate::backend::rows::{Claimed, PickedRow, TaskRow};
use crate::error::MasterError;
use crate::state;
use crate::store::Change;
use pyti_wire::job::AttemptOutcome;
use std::collections::{HashMap, HashSet};

/// A picked task's job: its package spec and whether it has an upload ([`PickedRow`]'s
/// columns), as subqueries beside the task's unqualified columns (SQLite's pick; PostgreSQL's
/// joins `jobs` once per task instead).
macro_rules! package_columns {
    () => {
        "(SELECT package_spec FROM jobs WHERE jobs.id = tasks.job_id) AS package_spec, \
         EXISTS (SELECT 1 FROM jobs WHERE jobs.id = tasks.job_id AND jobs.upload IS NOT NULL) \
         AS has_upload"
    };
}

/// The order in which a transaction ending several leases takes their tasks: lane by lane, in
/// the lanes' key order. Ending a lease requeues its task in its lane (or gives it up), and a
/// claim batch, which may hold some of the same lanes, locks its lanes in key order too; had the
/// sweep or a re-registration taken them in another order (expiry time, task id), each could
/// wait for a lane the other holds, and PostgreSQL would end one of them as a deadlock.
macro_rules! lane_order {
    () => {
        "ORDER BY recipe, priority, submitter, id"
    };
}

/// Leases examined per sweep (the rest wait for the next sweep; bounds one transaction).
const EXPIRY_BATCH: i64 = 500;

/// Records (or updates) a slave's recipes and slots. A slave registers once per run, so leases
/// still held under its name belong to an earlier run that died (killed, crashed, host rebooted)
/// and nothing runs under them: they end as expired and their tasks are requeued (attempt + 1)
/// or given up, as if the lease had run out. Otherwise the new run's heartbeats would renew them
/// forever, and they would fill the slots the new run claims with.
pub(crate) async fn register(
    p: Pools<'_>,
    name: &str,
    recipes_json: &str,
    slots: i64,
    max_attempts: u32,
    now: i64,
) -> Result<Vec<Change>, MasterError> {
    write_tx!(p, |tx| {
        sqlx::query(
            "INSERT INTO slaves (name, recipes, slots, registered_ms, last_heartbeat_ms) \
         VALUES ($1, $2, $3, $4, $4) ON CONFLICT (name) DO UPDATE SET recipes = $2, slots = $3, \
         registered_ms = $4, last_heartbeat_ms = $4",
        )
        .bind(name)
        .bind(recipes_json)
        .bind(slots)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        // Locked in task order (as cancelling a job locks its tasks), ended lane by lane (see
        // `lane_order!`).
        macro_rules! orphaned {
            ($lock:literal) => {
                concat!(
                    "SELECT * FROM (SELECT ",
                    task_columns!(),
                    " FROM tasks WHERE lease_slave = $1 AND state IN ('leased', 'running') \
                     ORDER BY id",
                    $lock,
                    ") AS orphaned ",
                    lane_order!()
                )
            };
        }
        let pick = if POSTGRES {
            orphaned!(" FOR UPDATE")
        } else {
            orphaned!("")
        };
        let orphaned: Vec<TaskRow> = sqlx::query_as(pick).bind(name).fetch_all(&mut *tx).await?;
        let reason = format!(
            "lease given up: slave `{name}` registered again (it was restarted) while holding it"
        );
        let mut changes = Vec::with_capacity(orphaned.len());
        for task in &orphaned {
            changes.push(end_lease(&mut tx, task, &reason, max_attempts, now).await?);
        }
        Ok(changes)
    })
}

/// Ends `task`'s lease, which nothing runs under any more: requeued with attempt + 1 while
/// attempts remain (else `tmpfail`), or cancelled if its job was.
async fn end_lease(
    tx: &mut sqlx::Transaction<'static, Db>,
    task: &TaskRow,
    reason: &str,
    max_attempts: u32,
    now: i64,
) -> Result<Change, MasterError> {
    if task.cancel_requested != 0 {
        return jobs::finish_cancelled(tx, task, reason, None, None, now).await;
    }
    let transition = state::after_infrastructure_failure(task.attempt as u32, max_attempts);
    let end = AttemptEnd {
        outcome: AttemptOutcome::LeaseExpired,
        reason,
        raw_json: None,
        report_sha256: None,
    };
    transition::apply(tx, task, transition, Some(end), now).await
}

/// A registered slave's recipes (JSON) and slots.
pub(crate) async fn slave(p: Pools<'_>, name: &str) -> Result<Option<(String, i64)>, MasterError> {
    Ok(
        sqlx::query_as("SELECT recipes, slots FROM slaves WHERE name = $1")
            .bind(name)
            .fetch_optional(p.read)
            .await?,
    )
}

/// Rounds of picking per batch: a lane that turns out emptier than its count (rows locked by
/// another master) is dropped and its claimers try the next lane.
const PICK_ROUNDS: usize = 3;

/// Reads every lane with work for one of `recipes` (those of the claims still pending), and
/// the newest `last_served` mark of all lanes (see [`Lanes`]): when the first lanes
/// [`read_slaves_and_lanes`] read do not serve every claim's recipes. The other lanes cannot
/// take any of these claims, and leaving them out keeps the order of those read, so a slave
/// whose recipes have no work reads no lane rather than every lane of every other recipe.
async fn read_all_lanes(
    tx: &mut sqlx::Transaction<'static, Db>,
    recipes: &[&str],
) -> Result<Lanes, MasterError> {
    let sql = concat!(
        "SELECT recipe, priority, submitter, queued, last_served, \
         (SELECT COALESCE(MAX(last_served), 0) FROM lanes) FROM lanes \
         WHERE queued > 0 AND recipe IN (",
        json_text_elements!("$1"),
        ") ORDER BY priority DESC, last_served ASC, recipe, submitter"
    );
    let rows: Vec<(String, i64, String, i64, i64, i64)> = sqlx::query_as(sql)
        .bind(serde_json::json!(recipes).to_string())
        .fetch_all(&mut **tx)
        .await?;
    Ok(Lanes::from_rows(rows, None))
}

/// The rows of [`read_slaves_and_lanes`]: a slave's `(name, held)` with the lane columns
/// empty, or a lane's columns as [`read_all_lanes`] reads them with the slave columns empty.
type SlaveOrLaneRow = (
    Option<String>,
    i64,
    Option<String>,
    i64,
    Option<String>,
    i64,
    i64,
    i64,
);

/// The first read of a claim batch, in one statement (one round trip, one hand-over to the
/// connection's thread): how many leases each slave of `wants` holds, and the first
/// `wants.len() + 1` lanes with work (see [`Lanes`]). On PostgreSQL the slaves' rows stay
/// locked (in name order) until commit, so two masters cannot both fill a slave's last slot.
/// The names travel as one JSON parameter: the statement's text is the same for every batch.
async fn read_slaves_and_lanes(
    tx: &mut sqlx::Transaction<'static, Db>,
    wants: &[ClaimWant<'_>],
) -> Result<(Vec<(String, i64)>, Lanes), MasterError> {
    let limit = wants.len() + 1;
    let names: Vec<&str> = wants.iter().map(|w| w.slave).collect();
    macro_rules! with_first_lanes {
        ($lock:literal) => {
            // `0 + $2`: see the pick's LIMIT (SQLite would prepare the statement again every
            // time). The outer ORDER BY puts the lanes in line (a UNION keeps no order).
            concat!(
                "WITH held AS (SELECT name, held FROM slaves WHERE name IN (",
                json_text_elements!("$1"),
                ")",
                $lock,
                ") SELECT name, held, NULL AS recipe, 0 AS priority, NULL AS submitter, \
                     0 AS queued, 0 AS last_served, 0 AS serial FROM held \
                 UNION ALL \
                 SELECT * FROM (SELECT NULL, 0, recipe, priority, submitter, queued, last_served, \
                     (SELECT COALESCE(MAX(last_served), 0) FROM lanes) FROM lanes \
                     WHERE queued > 0 ORDER BY priority DESC, last_served ASC, recipe, submitter \
                     LIMIT 0 + $2) AS first_lanes \
                 ORDER BY priority DESC, last_served ASC, recipe, submitter"
            )
        };
    }
    let sql = if POSTGRES {
        with_first_lanes!(" ORDER BY name FOR UPDATE")
    } else {
        with_first_lanes!("")
    };
    let rows: Vec<SlaveOrLaneRow> = sqlx::query_as(sql)
        .bind(serde_json::json!(names).to_string())
        .bind(limit as i64)
        .fetch_all(&mut **tx)
        .await?;
    let mut held = Vec::new();
    let mut lane_rows = Vec::new();
    for row in rows {
        match row {
            (Some(name), n, ..) => held.push((name, n)),
            (None, _, Some(recipe), priority, Some(submitter), queued, last_served, serial) => {
                lane_rows.push((recipe, priority, submitter, queued, last_served, serial))
            }
            _ => {
                return Err(MasterError::Corrupt(
                    "a lane without recipe or submitter".into(),
                ))
            }
        }
    }
    Ok((held, Lanes::from_rows(lane_rows, Some(limit))))
}

/// Takes tasks for a batch of claims in one transaction. For each claim, in order: among lanes
/// of the slave's recipes, highest priority first, then the lane served longest ago (fair
/// share); within a lane, oldest task first. `None` for a claim when nothing is queued for its
/// recipes or its slave already holds `slots` leases.
pub(crate) async fn claim_batch(
    p: Pools<'_>,
    wants: &[ClaimWant<'_>],
    lease_ms: i64,
    now: i64,
) -> Result<Vec<Option<Claimed>>, MasterError> {
    write_tx!(p, |tx| {
        // Each slave's leases (the count the transitions keep) and the lanes first in line (one
        // more than there are claims; see `Lanes`), in one statement.
        let (held_rows, mut lanes) = read_slaves_and_lanes(&mut tx, wants).await?;
        let mut held: HashMap<String, i64> = held_rows.into_iter().collect();

        let mut pending: Vec<usize> = Vec::new();
        for (i, w) in wants.iter().enumerate() {
            let h = held.entry(w.slave.to_string()).or_insert(0);
            if *h < w.slots {
                *h += 1;
                pending.push(i);
            }
        }
        let mut picked: Vec<Option<PickedRow>> = vec![None; wants.len()];
        for _ in 0..PICK_ROUNDS {
            if pending.is_empty() {
                break;
            }
            let by_lane = loop {
                if let Some(by_lane) = lanes.assign(&pending, wants) {
                    break by_lane;
                }
                let mut recipes: Vec<&str> = pending
                    .iter()
                    .flat_map(|&w| wants[w].recipes.iter().map(String::as_str))
                    .collect();
                recipes.sort_unstable();
                recipes.dedup();
                lanes.add_unread(read_all_lanes(&mut tx, &recipes).await?);
            };
            let lanes = &mut lanes.lanes;
            let mut retry = Vec::new();
            let mut lane_ids: Vec<usize> = by_lane.keys().copied().collect();
            lane_ids.sort_unstable();
            let mut rows_by_lane: HashMap<LaneKey, Vec<PickedRow>> = HashMap::new();
            if !lane_ids.is_empty() {
                let wanted: Vec<(&Lane, i64)> = lane_ids
                    .iter()
                    .map(|&l| (&lanes[l], by_lane[&l].len() as i64))
                    .collect();
                let rows = pick_oldest(&mut tx, &wanted).await?;
                for row in rows {
                    let task = &row.task;
                    rows_by_lane
                        .entry((task.recipe.clone(), task.priority, task.submitter.clone()))
                        .or_default()
                        .push(row);
                }
            }
            for l in lane_ids {
                let claimers = &by_lane[&l];
                let rows = rows_by_lane.remove(&lanes[l].key()).unwrap_or_default();
                if rows.len() < claimers.len() {
                    lanes[l].remaining = 0;
                    retry.extend_from_slice(&claimers[rows.len()..]);
                }
                lanes[l].taken += rows.len() as i64;
                if let Some(last) = rows.last() {
                    lanes[l].after_id = last.task.id;
                }
                for (&w, row) in claimers.iter().zip(rows) {
                    picked[w] = Some(row);
                }
            }
            pending = retry;
        }

        let leases: Vec<BatchLease> = picked
            .iter()
            .enumerate()
            .filter_map(|(w, row)| {
                row.as_ref().map(|row| BatchLease {
                    task: &row.task,
                    slave: wants[w].slave,
                    lease_id: wants[w].lease_id,
                })
            })
            .collect();
        let served: Vec<LaneServed> = lanes
            .lanes
            .iter()
            .filter(|l| l.taken > 0)
            .map(|l| LaneServed {
                recipe: &l.recipe,
                priority: l.priority,
                submitter: &l.submitter,
                taken: l.taken,
                last_served: l.last_served,
            })
            .collect();
        let mut changes = transition::lease_batch(&mut tx, &leases, &served, now + lease_ms, now)
            .await?
            .into_iter();
        Ok(picked
            .into_iter()
            .map(|row| {
                let picked = row?;
                let change = changes.next()?;
                Some(Claimed { picked, change })
            })
            .collect())
    })
}

/// The oldest `count` queued tasks of each `(lane, count)` after the lane's `after_id`, in one
/// query.
///
/// On PostgreSQL each lane's tasks are locked as they are read, skipping rows another
/// transaction has locked (another master's claim batch, or this master's other one) and
/// rows that stopped being queued since the statement began: a lane comes back short only
/// when it has no more unlocked queued tasks. The lanes travel as one JSON parameter, so the
/// statement's text is the same for every batch and the server plans it once per connection.
/// Each lane is a `LATERAL` index scan whatever the planner guesses for the JSON's length. The
/// job's columns come from one join outside the locking subquery, so `FOR UPDATE` locks only
/// the task, and each task costs one lookup of its job rather than the two of
/// `package_columns!`.
async fn pick_oldest(
    tx: &mut sqlx::Transaction<'static, Db>,
    wanted: &[(&Lane, i64)],
) -> Result<Vec<PickedRow>, MasterError> {
    if POSTGRES {
        let lanes: Vec<serde_json::Value> = wanted
            .iter()
            .map(|(lane, count)| {
                serde_json::json!({
                    "recipe": lane.recipe,
                    "priority": lane.priority,
                    "submitter": lane.submitter,
                    "after_id": lane.after_id,
                    "wanted": count,
                })
            })
            .collect();
        return Ok(sqlx::query_as(concat!(
            "SELECT oldest.*, jobs.package_spec, jobs.upload IS NOT NULL AS has_upload \
             FROM jsonb_to_recordset($1::jsonb) \
                 AS lane (recipe TEXT, priority BIGINT, submitter TEXT, after_id BIGINT, wanted BIGINT) \
             CROSS JOIN LATERAL (SELECT ",
            task_columns!(),
            " FROM tasks WHERE state = 'queued' \
                 AND recipe = lane.recipe AND priority = lane.priority \
                 AND submitter = lane.submitter AND id > lane.after_id \
                 ORDER BY id LIMIT lane.wanted FOR UPDATE SKIP LOCKED) AS oldest \
             JOIN jobs ON jobs.id = oldest.job_id \
             ORDER BY oldest.id"
        ))
        .bind(serde_json::Value::Array(lanes).to_string())
        .fetch_all(&mut **tx)
        .await?);
    }
    let mut q = sqlx::QueryBuilder::<Db>::new(concat!(
        "SELECT ",
        task_columns!(),
        ", ",
        package_columns!(),
        " FROM tasks WHERE id IN ("
    ));
    for (n, (lane, count)) in wanted.iter().enumerate() {
        if n > 0 {
            q.push(" UNION ALL ");
        }
        q.push("SELECT id FROM (SELECT id FROM tasks WHERE state = 'queued' AND recipe = ")
            .push_bind(lane.recipe.clone())
            .push(" AND priority = ")
            .push_bind(lane.priority)
            .push(" AND submitter = ")
            .push_bind(lane.submitter.clone())
            .push(" AND id > ")
            .push_bind(lane.after_id)
            // `0 + ?`, not a bare `?`: SQLite reads a bare bound LIMIT while preparing, which
            // marks the statement to be prepared again whenever its bindings are cleared, and
            // sqlx clears them after every execution. The pick was parsed and planned anew on
            // every batch (10% of the closed-loop profile).
            .push(" ORDER BY id LIMIT 0 + ")
            .push_bind(*count)
            .push(format!(") AS lane{n}"));
    }
    q.push(") ORDER BY id");
    Ok(q.build_query_as().fetch_all(&mut **tx).await?)
}

/// Renews `slave`'s leases (only those of `held` when given); returns how many, and the tasks it
/// must stop: its cancelled ones, and those of `held` that are no longer leased to it.
pub(crate) async fn heartbeat(
    p: Pools<'_>,
    slave: &str,
    held: Option<&[i64]>,
    lease_ms: i64,
    now: i64,
) -> Result<(u64, Vec<i64>), MasterError> {
    write_tx!(p, |tx| {
        let known = sqlx::query("UPDATE slaves SET last_heartbeat_ms = $1 WHERE name = $2")
            .bind(now)
            .bind(slave)
            .execute(&mut *tx)
            .await?;
        if known.rows_affected() == 0 {
            return Err(MasterError::NotFound {
                what: "slave",
                id: format!("`{slave}` (call register first)"),
            });
        }
        // The slave's open leases, read once: what to renew, to stop, and what it lists but no
        // longer holds (requeued after its lease ended, or finished).
        let open: Vec<(i64, bool)> = sqlx::query_as(
            "SELECT id, cancel_requested = 1 FROM tasks \
             WHERE lease_slave = $1 AND state IN ('leased', 'running') ORDER BY id",
        )
        .bind(slave)
        .fetch_all(&mut *tx)
        .await?;
        let leased: HashSet<i64> = open.iter().map(|(id, _)| *id).collect();
        let renew: Vec<i64> = match held {
            None => leased.iter().copied().collect(),
            Some(held) => held
                .iter()
                .copied()
                .filter(|id| leased.contains(id))
                .collect(),
        };
        let mut cancel: Vec<i64> = open
            .iter()
            .filter(|(_, cancel)| *cancel)
            .map(|(id, _)| *id)
            .chain(
                held.unwrap_or_default()
                    .iter()
                    .copied()
                    .filter(|id| !leased.contains(id)),
            )
            .collect();
        cancel.sort_unstable();
        cancel.dedup();
        let mut renewed = 0;
        if !renew.is_empty() {
            let mut q = sqlx::QueryBuilder::<Db>::new("UPDATE tasks SET lease_expires_ms = ");
            q.push_bind(now + lease_ms)
                .push(" WHERE lease_slave = ")
                .push_bind(slave)
                .push(" AND state IN ('leased', 'running') AND id IN (");
            let mut ids = q.separated(", ");
            for id in &renew {
                ids.push_bind(*id);
            }
            q.push(")");
            renewed = q.build().execute(&mut *tx).await?.rows_affected();
        }
        Ok((renewed, cancel))
    })
}

/// Gives every open lease at least until `until`: run when a master starts, so slaves that kept
/// working while no master answered get a full lease period to heartbeat again before their
/// tasks count as abandoned (a dead slave's task is requeued that much later, never lost).
pub(crate) async fn extend_open_leases(p: Pools<'_>, until: i64) -> Result<u64, MasterError> {
    write_tx!(p, |tx| {
        Ok(sqlx::query(
            "UPDATE tasks SET lease_expires_ms = $1 \
             WHERE state IN ('leased', 'running') AND lease_expires_ms < $1",
        )
        .bind(until)
        .execute(&mut *tx)
        .await?
        .rows_affected())
    })
}

/// Requeues (attempt + 1) or gives up on tasks whose lease ran out by `now`.
pub(crate) async fn expire(
    p: Pools<'_>,
    max_attempts: u32,
    now: i64,
) -> Result<Vec<Change>, MasterError> {
    write_tx!(p, |tx| {
        // The leases that ran out first, ended lane by lane (see `lane_order!`).
        macro_rules! expired {
            ($lock:literal) => {
                concat!(
                    "SELECT * FROM (SELECT ",
                    task_columns!(),
                    " FROM tasks WHERE lease_expires_ms < $1 AND state IN ('leased', 'running') \
                     ORDER BY lease_expires_ms LIMIT $2",
                    $lock,
                    ") AS expired ",
                    lane_order!()
                )
            };
        }
        let pick = if POSTGRES {
            expired!(" FOR UPDATE SKIP LOCKED")
        } else {
            expired!("")
        };
        let expired: Vec<TaskRow> = sqlx::query_as(pick)
            .bind(now)
            .bind(EXPIRY_BATCH)
            .fetch_all(&mut *tx)
            .await?;
        if POSTGRES && !expired.is_empty() {
            // Their slaves' rows first, in name order, as a claim takes them: ending a lease
            // updates the slave's held count and then the task's lane, and a claim holds slaves
            // before lanes, so taking them one by one could deadlock with a claim.
            let mut q = sqlx::QueryBuilder::<Db>::new("SELECT name FROM slaves WHERE name IN (");
            let mut names = q.separated(", ");
            for task in &expired {
                names.push_bind(task.lease_slave.clone().unwrap_or_default());
            }
            q.push(") ORDER BY name FOR UPDATE");
            q.build().fetch_all(&mut *tx).await?;
        }
        let mut changes = Vec::with_capacity(expired.len());
        for task in &expired {
            let slave = task.lease_slave.as_deref().unwrap_or("?");
            let reason = format!("lease expired: slave `{slave}` stopped heartbeating");
            changes.push(end_lease(&mut tx, task, &reason, max_attempts, now).await?);
        }
        Ok(changes)
    })
}
