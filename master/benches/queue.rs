//! Queue benchmark: N queued tasks, then claim latency (median, p99) with concurrent claimers,
//! submit throughput and the process's RSS, on SQLite and PostgreSQL. Prints a table.
//!
//! Claims are measured in phases: a closed loop (each claimer claims again the moment it has
//! its task: the most the master can serve, where latency is claimers / throughput), then
//! paced phases where each claimer works between claims, from ~10,000 claims/s offered down to
//! ~1,000 (latency at a load below saturation).
//!
//! On PostgreSQL it then measures a baseline in the same run: the database alone leasing the
//! oldest task of each lane with one `UPDATE` per 14 lanes from two connections (no slots, no
//! lane counts, no job read, no master, no claimers), and prints the closed loop as a ratio of
//! it, beside the ratio the target needs (a closed loop's median is claimers / throughput).
//!
//! ```text
//! cargo bench -p pyti-master --bench queue
//! PYTI_BENCH_TASKS=100000 PYTI_BENCH_DB=sqlite cargo bench -p pyti-master --bench queue
//! ```
//!
//! Environment: `PYTI_BENCH_TASKS` (queued tasks, default 1,000,000), `PYTI_BENCH_CLAIMERS`
//! (default 50), `PYTI_BENCH_PHASE_SECS` (how long each claim phase runs, default 5: a p99 needs
//! a few seconds of claims, or one write stall of the database decides it), `PYTI_BENCH_DB`
//! (`sqlite`, `postgres` or both, comma-separated; default both), `PYTI_BENCH_PG_TASKS` (queued
//! tasks on PostgreSQL, default the same as SQLite), `PYTI_TEST_POSTGRES_URL`.
//!
//! Targets (issue 6): claim median <= 2 ms, p99 <= 20 ms, RSS <= 300 MB.

use pyti_master::job_spec::{self, NewJob};
use pyti_master::recipes::RecipeCatalog;
use pyti_master::store::{Store, StoreOptions};
use pyti_master::Clock;
use pyti_wire::job::{JobSpec, PackageSpec, SlaveRegistration};
use pyti_wire::recipe::Recipe;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Jobs per bulk-load transaction.
const BULK_BATCH: usize = 5_000;
/// Single submissions timed (one transaction each).
const SINGLE_SUBMITS: usize = 2_000;
/// Submitters the load is spread over (fair share has lanes to choose from).
const SUBMITTERS: usize = 20;
/// Most tasks a slave may hold.
const MAX_SLOTS: u32 = 1024;
fn slave_name(claimer: usize, k: usize) -> String {
    format!("bench-slave-{claimer}-{k}")
}

/// The paced phases: how long each slave works between claims (50 slaves working 50 ms each:
/// ~1,000 claims/s offered, far above what 50 real VM slaves ask for; 5 ms: ~10,000/s).
const PACED_WORK_MS: [u64; 3] = [5, 10, 50];

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn rss_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn recipes() -> Arc<RecipeCatalog> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes/debian-12.toml");
    let debian = Recipe::load(&path).expect("shipped recipe");
    let mut other = debian.clone();
    other.name = "other-distro".into();
    Arc::new(RecipeCatalog::from_recipes([debian, other]))
}

fn spec(i: usize) -> JobSpec {
    JobSpec {
        package: PackageSpec::Pypi {
            name: format!("pkg{}", i % 5000),
            version: format!("1.{i}"),
        },
        recipes: vec![if i.is_multiple_of(2) {
            "debian-12"
        } else {
            "other-distro"
        }
        .to_string()],
        submitter: None,
        priority: (i % 3 + 4) as u8,
        trigger: "bench".into(),
    }
}

struct Row {
    db: &'static str,
    queued: usize,
    bulk_tasks_per_sec: f64,
    single_submits_per_sec: f64,
    mode: String,
    claims: usize,
    claims_per_sec: f64,
    median_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

async fn run(
    db: &'static str,
    url: &str,
    tasks: usize,
    claimers: usize,
    phase: Duration,
) -> (Vec<Row>, Option<Alone>) {
    let catalog = recipes();
    let options = StoreOptions {
        lease_secs: 3600,
        max_attempts: 3,
        connections: 16,
        clock: Clock::System,
        recipes: catalog.clone(),
    };
    let store = Arc::new(Store::open(url, options).await.expect("open store"));

    // Bulk load: N tasks in transactions of BULK_BATCH jobs.
    let started = Instant::now();
    let mut done = 0;
    while done < tasks {
        let n = BULK_BATCH.min(tasks - done);
        let jobs: Vec<NewJob> = (done..done + n)
            .map(|i| {
                job_spec::validate(
                    &spec(i),
                    &format!("user{}", i % SUBMITTERS),
                    false,
                    &catalog,
                )
                .expect("valid")
            })
            .collect();
        store.submit_validated(&jobs).await.expect("bulk submit");
        done += n;
        if done % 100_000 == 0 {
            eprintln!(
                "  {db}: {done} tasks queued ({:.0} s)",
                started.elapsed().as_secs_f64()
            );
        }
    }
    let bulk_tasks_per_sec = tasks as f64 / started.elapsed().as_secs_f64();

    // Single submissions, one transaction each, from 4 concurrent submitters.
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for _ in 0..4 {
        let store = store.clone();
        let next = next.clone();
        handles.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= SINGLE_SUBMITS {
                    break;
                }
                store
                    .submit(&spec(tasks + i), "single", false)
                    .await
                    .expect("submit");
            }
        }));
    }
    for h in handles {
        h.await.expect("submitter");
    }
    let single_submits_per_sec = SINGLE_SUBMITS as f64 / started.elapsed().as_secs_f64();

    // Claims: `claimers` claimers, each claiming as one slave after another (a slave holds at
    // most MAX_SLOTS tasks, and the bench reports none); a claimer registers its next slave
    // when the last one is full, so the master knows about as many slaves as claim at once.
    let claimed: Arc<Vec<AtomicUsize>> =
        Arc::new((0..claimers).map(|_| AtomicUsize::new(0)).collect());
    let mut phases = vec![(
        "closed loop".to_string(),
        claim_phase(&store, &claimed, phase, None).await,
    )];
    for ms in PACED_WORK_MS {
        let work = Duration::from_millis(ms);
        let measured = claim_phase(&store, &claimed, phase, Some(work)).await;
        phases.push((format!("paced {ms} ms"), measured));
    }
    store.close().await;
    let alone = if db == "postgres" {
        Some(database_alone(url, phase).await)
    } else {
        None
    };
    let mut rows = Vec::new();
    for (mode, (n, per_sec, median_ms, p99_ms, max_ms)) in phases {
        rows.push(Row {
            db,
            queued: tasks,
            bulk_tasks_per_sec,
            single_submits_per_sec,
            mode,
            claims: n,
            claims_per_sec: per_sec,
            median_ms,
            p99_ms,
            max_ms,
        });
    }
    (rows, alone)
}

/// Claims tasks for `phase` with `claimers` concurrent slaves; with `work`, each slave "runs" its
/// task for that long before claiming again (slaves run VMs between claims), otherwise it claims
/// again at once (saturation). Returns (claims, claims/s, median ms, p99 ms, max ms).
async fn claim_phase(
    store: &Arc<Store>,
    claimed: &Arc<Vec<AtomicUsize>>,
    phase: Duration,
    work: Option<Duration>,
) -> (usize, f64, f64, f64, f64) {
    let started = Instant::now();
    let deadline = started + phase;
    let mut handles = Vec::new();
    for c in 0..claimed.len() {
        let store = store.clone();
        let claimed = claimed.clone();
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let n = claimed[c].fetch_add(1, Ordering::Relaxed);
                let name = slave_name(c, n / MAX_SLOTS as usize);
                if n.is_multiple_of(MAX_SLOTS as usize) {
                    store
                        .register(&SlaveRegistration {
                            name: name.clone(),
                            recipes: vec!["debian-12".into(), "other-distro".into()],
                            slots: MAX_SLOTS,
                        })
                        .await
                        .expect("register");
                }
                let t = Instant::now();
                match store.try_claim(&name).await {
                    Ok(Some(_)) => latencies.push(t.elapsed()),
                    Ok(None) => break,
                    Err(e) => panic!("claim failed: {e}"),
                }
                if let Some(work) = work {
                    // Spread the slaves out: each works for 50–150% of `work`.
                    let jitter = 0.5 + (c as f64 * 0.618).fract();
                    tokio::time::sleep(work.mul_f64(jitter)).await;
                }
            }
            latencies
        }));
    }
    let mut latencies: Vec<Duration> = Vec::new();
    for h in handles {
        latencies.extend(h.await.expect("claimer"));
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(f64::NAN)
    };
    (
        latencies.len(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        pick(0.5),
        pick(0.99),
        latencies
            .last()
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(f64::NAN),
    )
}

/// What PostgreSQL alone does with the least work a fair-share claim needs.
struct Alone {
    claims: usize,
    claims_per_sec: f64,
    /// Statements that leased fewer tasks than they had lanes (a lane ran dry, or the other
    /// connection held its oldest task).
    short: usize,
}

/// Connections of the database-alone phase: as many as the master's claim batches in flight.
const ALONE_CONNECTIONS: usize = 2;
/// Claims per statement in the database-alone phase: about what a master's batch carries with
/// 50 claimers and two batches in flight.
const ALONE_BATCH: usize = 14;

/// The PostgreSQL baseline: for `phase`, [`ALONE_CONNECTIONS`] connections (the options a claim
/// connection has) each lease [`ALONE_BATCH`] tasks per statement, the oldest queued task of
/// each of that many lanes, taken in turn, with one `UPDATE` and nothing else: no slave slots,
/// no lane counts or marks, no job read, no master and no claimers. A master's claim does all of
/// these as well, so its closed loop cannot pass this figure on the same machine.
async fn database_alone(url: &str, phase: Duration) -> Alone {
    let options: sqlx::postgres::PgConnectOptions = url.parse().expect("PostgreSQL URL");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(ALONE_CONNECTIONS as u32)
        .connect_with(options.options([("jit", "off"), ("synchronous_commit", "off")]))
        .await
        .expect("PostgreSQL reachable");
    // The claim phases left dead index entries at the head of every lane they served; the
    // closed loop started without any, so this phase does too.
    sqlx::query("VACUUM (ANALYZE) tasks")
        .execute(&pool)
        .await
        .expect("vacuum");
    let lanes: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT recipe, priority, submitter FROM lanes WHERE queued > 0 \
         ORDER BY queued DESC LIMIT 40",
    )
    .fetch_all(&pool)
    .await
    .expect("lanes");
    assert!(
        !lanes.is_empty(),
        "no queued task left for the database-alone phase"
    );
    let lanes = Arc::new(lanes);
    let started = Instant::now();
    let deadline = started + phase;
    let mut handles = Vec::new();
    for c in 0..ALONE_CONNECTIONS {
        let pool = pool.clone();
        let lanes = lanes.clone();
        handles.push(tokio::spawn(async move {
            let (mut claims, mut short) = (0, 0);
            let mut next = c * ALONE_BATCH;
            while Instant::now() < deadline {
                let window: Vec<&(String, i64, String)> = (0..ALONE_BATCH)
                    .map(|k| &lanes[(next + k) % lanes.len()])
                    .collect();
                next += ALONE_BATCH * ALONE_CONNECTIONS;
                let leased = sqlx::query(
                    "UPDATE tasks SET state = 'leased', lease_id = 'bench', \
                         lease_slave = 'bench-alone', lease_expires_ms = $4, updated_ms = $4 \
                     WHERE id IN ( \
                         SELECT oldest.id \
                         FROM unnest($1::text[], $2::bigint[], $3::text[]) \
                             AS lane (recipe, priority, submitter) \
                         CROSS JOIN LATERAL ( \
                             SELECT id FROM tasks WHERE state = 'queued' \
                                 AND recipe = lane.recipe AND priority = lane.priority \
                                 AND submitter = lane.submitter \
                             ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED \
                         ) AS oldest \
                     ) \
                     RETURNING *",
                )
                .bind(window.iter().map(|l| l.0.as_str()).collect::<Vec<_>>())
                .bind(window.iter().map(|l| l.1).collect::<Vec<_>>())
                .bind(window.iter().map(|l| l.2.as_str()).collect::<Vec<_>>())
                .bind(chrono::Utc::now().timestamp_millis())
                .fetch_all(&pool)
                .await
                .expect("lease statement")
                .len();
                claims += leased;
                short += usize::from(leased < ALONE_BATCH);
            }
            (claims, short)
        }));
    }
    let (mut claims, mut short) = (0, 0);
    for h in handles {
        let (c, s) = h.await.expect("database-alone connection");
        claims += c;
        short += s;
    }
    let claims_per_sec = claims as f64 / started.elapsed().as_secs_f64();
    pool.close().await;
    Alone {
        claims,
        claims_per_sec,
        short,
    }
}

async fn postgres_schema(base: &str) -> (String, String) {
    let schema = format!("pyti_bench_{}", std::process::id());
    let pool = sqlx::PgPool::connect(base)
        .await
        .expect("PostgreSQL reachable");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE"
    )))
    .execute(&pool)
    .await
    .expect("drop schema");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&pool)
        .await
        .expect("create schema");
    pool.close().await;
    let sep = if base.contains('?') { '&' } else { '?' };
    (
        format!("{base}{sep}options=-c%20search_path%3D{schema}"),
        schema,
    )
}

async fn drop_schema(base: &str, schema: &str) {
    if let Ok(pool) = sqlx::PgPool::connect(base).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&pool)
            .await;
        pool.close().await;
    }
}

fn main() {
    let tasks = env_usize("PYTI_BENCH_TASKS", 1_000_000);
    let pg_tasks = env_usize("PYTI_BENCH_PG_TASKS", tasks);
    let claimers = env_usize("PYTI_BENCH_CLAIMERS", 50);
    let phase = Duration::from_secs(env_usize("PYTI_BENCH_PHASE_SECS", 5) as u64);
    let dbs = std::env::var("PYTI_BENCH_DB").unwrap_or_else(|_| "sqlite,postgres".into());
    let pg_base = std::env::var("PYTI_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://pyti:pyti@127.0.0.1:5432/pyti_test".into());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let rss_before = rss_kib("VmRSS:");
    let mut rows = Vec::new();
    let mut alone = None;
    runtime.block_on(async {
        if dbs.contains("sqlite") {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = dir.path().join("bench.sqlite").display().to_string();
            eprintln!("sqlite: queueing {tasks} tasks in {url}");
            for row in run("sqlite", &url, tasks, claimers, phase).await.0 {
                rows.push((row, rss_kib("VmHWM:")));
            }
        }
        if dbs.contains("postgres") {
            let (url, schema) = postgres_schema(&pg_base).await;
            eprintln!("postgres: queueing {pg_tasks} tasks in schema {schema}");
            let (measured, baseline) = run("postgres", &url, pg_tasks, claimers, phase).await;
            for row in measured {
                rows.push((row, rss_kib("VmHWM:")));
            }
            alone = baseline;
            drop_schema(&pg_base, &schema).await;
        }
    });
    println!();
    println!("pyti master queue benchmark: {claimers} concurrent claimers; closed loop = claim again at once,");
    println!("paced N ms = each slave works N ms (50-150%) between claims");
    println!(
        "{:<9} {:>9} {:>12} {:>9} {:<13} {:>7} {:>9} {:>9} {:>8} {:>8} {:>11}",
        "database",
        "queued",
        "bulk task/s",
        "submit/s",
        "claim mode",
        "claims",
        "claims/s",
        "median ms",
        "p99 ms",
        "max ms",
        "peak RSS MB"
    );
    for (r, hwm) in &rows {
        println!(
            "{:<9} {:>9} {:>12.0} {:>9.0} {:<13} {:>7} {:>9.0} {:>9.3} {:>8.3} {:>8.3} {:>11.1}",
            r.db,
            r.queued,
            r.bulk_tasks_per_sec,
            r.single_submits_per_sec,
            r.mode,
            r.claims,
            r.claims_per_sec,
            r.median_ms,
            r.p99_ms,
            r.max_ms,
            *hwm as f64 / 1024.0
        );
    }
    println!(
        "targets: claim median <= 2 ms, p99 <= 20 ms, RSS <= 300 MB (RSS at start {:.1} MB; peak is cumulative over the rows)",
        rss_before as f64 / 1024.0
    );
    if let Some(alone) = alone {
        // A closed loop's median is claimers / throughput: the target needs this many claims/s.
        let needed = claimers as f64 / 0.002;
        let closed = rows
            .iter()
            .find(|(r, _)| r.db == "postgres" && r.mode == "closed loop")
            .map(|(r, _)| r.claims_per_sec)
            .unwrap_or(f64::NAN);
        println!();
        println!(
            "postgres alone (baseline): {} connections each leasing the oldest task of {} lanes per \
             UPDATE, nothing else (no slots, lane counts, job read, master or claimers)",
            ALONE_CONNECTIONS, ALONE_BATCH
        );
        println!(
            "  {} claims, {:.0} claims/s ({} statements short of a lane); the closed loop above is \
             {:.2}x this; a {claimers}-claimer closed loop needs {needed:.0} claims/s for a 2 ms \
             median ({:.2}x this)",
            alone.claims,
            alone.claims_per_sec,
            alone.short,
            closed / alone.claims_per_sec,
            needed / alone.claims_per_sec
        );
    }
}
