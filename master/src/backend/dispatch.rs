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
/// is part of [`transition::lease_claims`]).
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
/// another batch or master) is dropped and its claimers try the next lane.
const PICK_ROUNDS: usize = 3;

/// A connection of the backend: a transaction's, or on PostgreSQL's claim path a pooled one
/// whose every statement is its own transaction.
type Conn = <Db as sqlx::Database>::Connection;

/// Reads every lane with work for one of `recipes` (those of the claims still pending), and
/// the newest `last_served` mark of all lanes (see [`Lanes`]): when the first lanes
/// [`read_slaves_and_lanes`] read do not serve every claim's recipes. The other lanes cannot
/// take any of these claims, and leaving them out keeps the order of those read, so a slave
/// whose recipes have no work reads no lane rather than every lane of every other recipe.
async fn read_all_lanes(conn: &mut Conn, recipes: &[&str]) -> Result<Lanes, MasterError> {
    let sql = concat!(
        "SELECT recipe, priority, submitter, queued, last_served, \
         (SELECT COALESCE(MAX(last_served), 0) FROM lanes) FROM lanes \
         WHERE queued > 0 AND recipe IN (",
        json_text_elements!("$1"),
        ") ORDER BY priority DESC, last_served ASC, recipe, submitter"
    );
    let rows: Vec<(String, i64, String, i64, i64, i64)> = sqlx::query_as(sql)
        .bind(serde_json::json!(recipes).to_string())
        .fetch_all(&mut *conn)
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
/// `wants.len() + 1` lanes with work (see [`Lanes`]). Nothing is locked: on SQLite the batch's
/// transaction holds the database, and on PostgreSQL [`transition::lease_claims`] locks the
/// slaves and counts their leases again before it leases anything. The names travel as one
/// JSON parameter: the statement's text is the same for every batch.
async fn read_slaves_and_lanes(
    conn: &mut Conn,
    wants: &[ClaimWant<'_>],
) -> Result<(Vec<(String, i64)>, Lanes), MasterError> {
    let limit = wants.len() + 1;
    let names: Vec<&str> = wants.iter().map(|w| w.slave).collect();
    // `0 + $2`: see the pick's LIMIT (SQLite would prepare the statement again every time). The
    // outer ORDER BY puts the lanes in line (a UNION keeps no order).
    let sql = concat!(
        "SELECT name, held, NULL AS recipe, 0 AS priority, NULL AS submitter, \
             0 AS queued, 0 AS last_served, 0 AS serial FROM slaves WHERE name IN (",
        json_text_elements!("$1"),
        ") UNION ALL \
         SELECT * FROM (SELECT NULL, 0, recipe, priority, submitter, queued, last_served, \
             (SELECT COALESCE(MAX(last_served), 0) FROM lanes) FROM lanes \
             WHERE queued > 0 ORDER BY priority DESC, last_served ASC, recipe, submitter \
             LIMIT 0 + $2) AS first_lanes \
         ORDER BY priority DESC, last_served ASC, recipe, submitter"
    );
    let rows: Vec<SlaveOrLaneRow> = sqlx::query_as(sql)
        .bind(serde_json::json!(names).to_string())
        .bind(limit as i64)
        .fetch_all(&mut *conn)
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

/// The claims of `wants` (their indexes, in order) whose slave has a free slot by the `held`
/// counts read: each claim takes one of its slave's slots in turn.
fn with_free_slot(wants: &[ClaimWant<'_>], held: Vec<(String, i64)>) -> Vec<usize> {
    let mut held: HashMap<String, i64> = held.into_iter().collect();
    let mut pending = Vec::new();
    for (i, w) in wants.iter().enumerate() {
        let h = held.entry(w.slave.to_string()).or_insert(0);
        if *h < w.slots {
            *h += 1;
            pending.push(i);
        }
    }
    pending
}

/// Sends the `pending` claims to lanes ([`Lanes::assign`]), first reading every lane of their
/// recipes when the lanes read so far cannot decide. Returns the claims by lane.
async fn assign(
    conn: &mut Conn,
    lanes: &mut Lanes,
    pending: &[usize],
    wants: &[ClaimWant<'_>],
) -> Result<HashMap<usize, Vec<usize>>, MasterError> {
    loop {
        if let Some(by_lane) = lanes.assign(pending, wants) {
            return Ok(by_lane);
        }
        let mut recipes: Vec<&str> = pending
            .iter()
            .flat_map(|&w| wants[w].recipes.iter().map(String::as_str))
            .collect();
        recipes.sort_unstable();
        recipes.dedup();
        let all = read_all_lanes(conn, &recipes).await?;
        lanes.add_unread(all);
    }
}

/// Takes tasks for a batch of claims. For each claim, in order: among lanes of the slave's
/// recipes, highest priority first, then the lane served longest ago (fair share); within a
/// lane, oldest task first. `None` for a claim when nothing is queued for its recipes or its
/// slave already holds `slots` leases.
pub(crate) async fn claim_batch(
    p: Pools<'_>,
    wants: &[ClaimWant<'_>],
    lease_ms: i64,
    now: i64,
) -> Result<Vec<Option<Claimed>>, MasterError> {
    if POSTGRES {
        return claim_batch_in_calls(p, wants, lease_ms, now).await;
    }
    write_tx!(p, |tx| {
        let (held, mut lanes) = read_slaves_and_lanes(&mut tx, wants).await?;
        let mut pending = with_free_slot(wants, held);
        let mut picked: Vec<Option<PickedRow>> = vec![None; wants.len()];
        for _ in 0..PICK_ROUNDS {
            if pending.is_empty() {
                break;
            }
            let by_lane = assign(&mut tx, &mut lanes, &pending, wants).await?;
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
                for row in pick_oldest(&mut tx, &wanted).await? {
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
            retry.sort_unstable();
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

/// [`claim_batch`] on PostgreSQL, where every statement is a round trip to the server: the read
/// of [`read_slaves_and_lanes`], then one statement per round ([`transition::lease_claims`]),
/// each its own transaction. A batch whose claims all find a task takes two round trips instead
/// of the five of a transaction (`BEGIN`, read, pick, lease, `COMMIT`), and one that finds no
/// work one.
///
/// The read locks nothing: the lease locks the claims' slaves and checks their free slots again
/// (a claim refused there gets `None`, as it would here), picks each lane's oldest queued tasks
/// skipping those another batch holds, and leases them. A lane that comes back short (its tasks
/// taken since the read) gets no more claims, and its claimers go to the next lane in the next
/// round, as within a transaction.
///
/// Each round commits by itself, so an error after the first round cannot undo what earlier
/// rounds leased: those claims are answered, and the failed round's claims get `None` (their
/// slaves claim again). An error of the first round is returned; the batcher may try the batch
/// again (a deadlock, a lost connection), which is safe even when a lost connection hid a
/// committed call: those leases are never answered and expire, and their tasks are queued again.
async fn claim_batch_in_calls(
    p: Pools<'_>,
    wants: &[ClaimWant<'_>],
    lease_ms: i64,
    now: i64,
) -> Result<Vec<Option<Claimed>>, MasterError> {
    let mut conn = p.write.acquire().await?;
    let (held, mut lanes) = read_slaves_and_lanes(&mut conn, wants).await?;
    let mut pending = with_free_slot(wants, held);
    let mut claimed: Vec<Option<Claimed>> = wants.iter().map(|_| None).collect();
    for round in 0..PICK_ROUNDS {
        if pending.is_empty() {
            break;
        }
        match lease_round(
            &mut conn,
            &mut lanes,
            &pending,
            wants,
            &mut claimed,
            lease_ms,
            now,
        )
        .await
        {
            Ok(retry) => pending = retry,
            Err(e) if round == 0 => return Err(e),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    claims = pending.len(),
                    "a claim round failed after earlier rounds had leased; its claims get no task \
                     and claim again"
                );
                break;
            }
        }
    }
    Ok(claimed)
}

/// One round of [`claim_batch_in_calls`]: sends the `pending` claims to lanes, leases their
/// tasks in one statement, fills `claimed`, and returns the claims to send to another lane (those
/// of lanes that came back short), in order.
async fn lease_round(
    conn: &mut Conn,
    lanes: &mut Lanes,
    pending: &[usize],
    wants: &[ClaimWant<'_>],
    claimed: &mut [Option<Claimed>],
    lease_ms: i64,
    now: i64,
) -> Result<Vec<usize>, MasterError> {
    let by_lane = assign(conn, lanes, pending, wants).await?;
    if by_lane.is_empty() {
        // No lane has work for these claims.
        return Ok(Vec::new());
    }
    let mut sent = vec![false; wants.len()];
    let mut claims = Vec::with_capacity(pending.len());
    let mut marks = Vec::with_capacity(by_lane.len());
    for (&l, claimers) in &by_lane {
        let lane = &lanes.lanes[l];
        marks.push(serde_json::json!({
            "recipe": lane.recipe,
            "priority": lane.priority,
            "submitter": lane.submitter,
            "last_served": lane.last_served,
        }));
        for &w in claimers {
            sent[w] = true;
            claims.push(serde_json::json!({
                "claim": w,
                "slave": wants[w].slave,
                "slots": wants[w].slots,
                "lease_id": wants[w].lease_id,
                "recipe": lane.recipe,
                "priority": lane.priority,
                "submitter": lane.submitter,
            }));
        }
    }
    let mut answered = vec![false; wants.len()];
    for (w, got) in transition::lease_claims(conn, &claims, &marks, now + lease_ms, now).await? {
        if !sent.get(w).copied().unwrap_or(false) || answered[w] {
            return Err(MasterError::Corrupt(format!(
                "the lease answered claim {w}, which this round did not send or answered twice"
            )));
        }
        answered[w] = true;
        claimed[w] = got;
    }
    let mut retry = Vec::new();
    for (&l, claimers) in &by_lane {
        let short: Vec<usize> = claimers.iter().copied().filter(|&w| !answered[w]).collect();
        if !short.is_empty() {
            lanes.lanes[l].remaining = 0;
            retry.extend(short);
        }
    }
    retry.sort_unstable();
    Ok(retry)
}

/// The oldest `count` queued tasks of each `(lane, count)` after the lane's `after_id`, in one
/// query (SQLite's pick: there the batch's transaction holds the database; PostgreSQL's is part
/// of [`transition::lease_claims`]).
async fn pick_oldest(
    conn: &mut Conn,
    wanted: &[(&Lane, i64)],
) -> Result<Vec<PickedRow>, MasterError> {
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
    Ok(q.build_query_as().fetch_all(&mut *conn).await?)
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
