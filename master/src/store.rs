//! The durable queue: one [`Store`] over SQLite or PostgreSQL, with every operation the API
//! needs. Each state change is one transaction (see `backend/transition.rs`); after it commits,
//! the store publishes the change to subscribers and wakes waiting claimers.

use crate::backend::lanes::ClaimWant;
use crate::backend::rows::Claimed;
use crate::backend::{postgres, sqlite};
use crate::clock::Clock;
use crate::error::MasterError;
use crate::events::EventHub;
use crate::job_spec::{self, NewJob};
use crate::recipes::RecipeCatalog;
use crate::state;
use pyti_wire::job::{
    encode_hex, Attempt, CancelReceipt, ClaimedTask, CompareCell, CompareRequest, Comparison,
    Event, HeartbeatReply, Job, JobFilter, JobSpec, LogEntry, PackageSpec, ProgressReport,
    RegistrationReply, Regression, ReportReceipt, ResultReport, SlaveRegistration, SubmitReceipt,
    Task, TaskState, Verdict, COMPARE_DEFAULT_VERSIONS, COMPARE_MAX_VERSIONS, TASK_LOG_PAGE_LINES,
};
use pyti_wire::recipe::Recipe;
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::collections::{HashMap, VecDeque};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch, Notify, Semaphore};

/// How often a waiting claim re-checks the database even without a local wake-up (another
/// master on the same PostgreSQL may have queued work).
const CLAIM_POLL: Duration = Duration::from_millis(500);
/// A PostgreSQL connection idle longer than this is pinged before use. sqlx pings every
/// connection as it is returned to the pool, so one taken out again soon after is known to be
/// alive; pinging it again when taken out (sqlx's default) adds a round trip to every claim batch.
const POSTGRES_PING_IDLE_AFTER: Duration = Duration::from_secs(10);
/// Settings of the PostgreSQL connection that commits claims: a claim batch does not wait for
/// its WAL record to reach the disk. Only a crash of the PostgreSQL server (not of a master)
/// can then take back the leases of its last fraction of a second: their tasks are queued
/// again, and a slave's report or heartbeat for such a task is refused or answered with a stop,
/// as for any lease it lost. Submissions, results and cancellations wait for the flush. This is
/// the durability SQLite's `synchronous = NORMAL` gives every commit, and it takes the flush
/// (the slowest part of a claim batch, and its latency spikes under I/O load) off the claim path.
const POSTGRES_CLAIM_OPTIONS: [(&str, &str); 1] = [("synchronous_commit", "off")];
/// Settings of every PostgreSQL connection of the master. No JIT compilation: the master's
/// statements are short, and compiling one takes ~10 ms. The server compiles any statement
/// whose estimated cost passes `jit_above_cost`, and a claim's pick (one index scan per lane,
/// with a row count the planner cannot know) passed it at 200,000 queued tasks: 12 ms per
/// pick instead of 0.5.
const POSTGRES_OPTIONS: [(&str, &str); 1] = [("jit", "off")];
/// How long a write waits for SQLite's lock held by another process.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(30);
/// SQLite page cache of the writer connection, in KiB as `PRAGMA cache_size` wants it
/// (negative): the default 2 MiB thrashes the dispatch indexes once a million tasks are queued.
/// Readers keep the default (the OS page cache serves them), which bounds the master's RSS.
const SQLITE_WRITER_CACHE_KIB: &str = "-65536";
/// How often the SQLite checkpointer copies the write-ahead log into the database. Commits then
/// only append to the log; the checkpoint's writes and fsyncs happen beside them. Beside, not
/// free: while a checkpoint's fsync runs, the writer's appends to the log wait for it, so each
/// checkpoint must have little to flush. (With 200,000-300,000 tasks queued and 50 claimers
/// claiming back to back: every 250 ms, commits of 30-70 ms several times a second and a claim
/// p99 of 31-55 ms; every 100 ms, a p99 of 6-12 ms.)
const SQLITE_CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// Log pages after which a commit checkpoints by itself (SQLite's default is 1,000). Besides a
/// backstop should the checkpointer fall behind, this is how often a busy writer starts the log
/// over: SQLite reuses the log from its start only when a write begins with every page already
/// copied, which under continuous writes means after the writer's own checkpoint, a commit that
/// waits for two fsyncs. 50,000 pages: at most ~200 MiB of log, and at 16,000 claims/s such a
/// commit every ~1.5 s instead of every ~0.3 s.
const SQLITE_WAL_BACKSTOP_PAGES: &str = "50000";
/// Longest progress message kept.
const MAX_PROGRESS_MESSAGE_BYTES: usize = 4096;
/// Log lines an attempt may have before its slave's progress reports are refused (the master's
/// own state lines are always written). A slave reports a dozen phases per attempt; this bounds
/// what a faulty or hostile one can store: a task's log is at most `max_attempts` times this.
pub(crate) const MAX_LOG_LINES_PER_ATTEMPT: i64 = 200;
/// Longest infrastructure-failure reason kept.
const MAX_REASON_BYTES: usize = 4096;
/// Largest slot count a slave may announce.
const MAX_SLOTS: u32 = 1024;
/// Claims served by one transaction at most. Claims arriving while a batch is written queue up
/// and go into the next one: under load, one commit serves many claimers.
const MAX_CLAIM_BATCH: usize = 256;
/// Claims waiting for the batcher before callers wait for room.
const CLAIM_QUEUE: usize = 4096;
/// Claim batches in flight at once on PostgreSQL. With one, a claim arriving while a batch is
/// written waits for it to finish before its own batch starts (~1.5 batches at a light load)
/// and the server idles through every round trip. A second batch starts as the claim arrives
/// and reads while the first leases: the two meet only on the rows of the lanes they both
/// serve and on a slave's row when one slave claims in both, each locked for the length of one
/// statement. They skip each other's picked tasks (`SKIP LOCKED`) as two masters do. A third
/// did worse on two cores, and so did one (closed loop, 100,000 tasks, batches of two round
/// trips, alternated: three 11,030 and 10,970 claims/s, one 9,771 and 9,193, two 10,579 and
/// 12,844). SQLite has one writer, so one batch.
const POSTGRES_CLAIM_BATCHES: usize = 2;

/// A task's change of state, as published to subscribers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub job_id: i64,
    pub task_id: i64,
    pub attempt: u32,
    pub state: TaskState,
}

/// Rules the store applies.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub lease_secs: u64,
    pub max_attempts: u32,
    pub connections: u32,
    pub clock: Clock,
    pub recipes: Arc<RecipeCatalog>,
}

#[derive(Clone)]
enum Backend {
    Sqlite {
        read: sqlx::SqlitePool,
        write: sqlx::SqlitePool,
    },
    Postgres {
        pool: sqlx::PgPool,
        /// The claim batcher's connection: commits without waiting for the WAL flush
        /// ([`POSTGRES_CLAIM_OPTIONS`]).
        claims: sqlx::PgPool,
    },
}

/// Calls `$module::$function(pools, args…)` on whichever backend the store has: for writes,
/// whose `write_tx!` replaces a lost PostgreSQL connection at `BEGIN` and must not be tried
/// again after it. Reads go through [`read_on_backend!`].
macro_rules! on_backend {
    ($store:expr, $module:ident :: $function:ident ( $($arg:expr),* $(,)? )) => {
        match &$store.backend {
            Backend::Sqlite { read, write } => {
                sqlite::$module::$function(sqlite::Pools { read, write }, $($arg),*).await
            }
            Backend::Postgres { pool, .. } => {
                postgres::$module::$function(postgres::Pools { read: pool, write: pool }, $($arg),*).await
            }
        }
    };
}

/// [`on_backend!`] for a read: on PostgreSQL, a read that failed because its pooled connection
/// was lost (see [`postgres::connection_lost`]) is tried again, at most once per connection the
/// pool holds; a read changes nothing, so trying it again is always safe. (Writes are covered by
/// `begin_write`: a lost connection fails at its `BEGIN`.)
macro_rules! read_on_backend {
    ($store:expr, $module:ident :: $function:ident ( $($arg:expr),* $(,)? )) => {
        read_on_backend!(backend: &$store.backend, $module::$function($($arg),*))
    };
    (backend: $backend:expr, $module:ident :: $function:ident ( $($arg:expr),* $(,)? )) => {
        match $backend {
            Backend::Sqlite { read, write } => {
                sqlite::$module::$function(sqlite::Pools { read, write }, $($arg),*).await
            }
            Backend::Postgres { pool, .. } => {
                let mut lost = 0;
                loop {
                    let pools = postgres::Pools { read: pool, write: pool };
                    match postgres::$module::$function(pools, $($arg),*).await {
                        Err(MasterError::Database(e))
                            if postgres::connection_lost(&e)
                                && lost < pool.options().get_max_connections() =>
                        {
                            lost += 1;
                            tracing::debug!(error = %e, "a pooled connection was lost; reading again");
                        }
                        other => break other,
                    }
                }
            }
        }
    };
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub submitted_jobs: AtomicU64,
    pub claims: AtomicU64,
    pub empty_claims: AtomicU64,
    pub reports: AtomicU64,
    pub duplicate_reports: AtomicU64,
    pub expired_leases: AtomicU64,
    /// How long each claim took to answer.
    pub claim_latency: crate::metrics::Histogram,
}

#[derive(Debug, Clone)]
struct SlaveInfo {
    recipes: Vec<String>,
    slots: u32,
}

/// The job queue.
pub struct Store {
    backend: Backend,
    options: StoreOptions,
    events: EventHub,
    work_queued: Notify,
    stopping: watch::Sender<bool>,
    /// Event subscriptions still open; shutdown waits for them to send their final event.
    subscriptions: watch::Sender<usize>,
    slaves: Mutex<HashMap<String, SlaveInfo>>,
    claims: mpsc::Sender<ClaimJob>,
    snapshots: Mutex<HashMap<i64, Arc<Recipe>>>,
    /// Counters for `/metrics`.
    pub counters: Counters,
    /// Dropped with the store: background tasks holding a pool end.
    _alive: watch::Sender<()>,
}

impl Store {
    /// Opens (creating if needed) the database at `url` and brings its schema up to date.
    /// `url` is a SQLite path or `sqlite://PATH`, or a `postgres://` URL.
    pub async fn open(url: &str, options: StoreOptions) -> Result<Store, MasterError> {
        let bad_url = |reason: String| MasterError::DatabaseUrl {
            url: redact(url),
            reason,
        };
        let connections = options.connections.max(1);
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let connect = PgConnectOptions::from_str(url)
                .map_err(|e| bad_url(e.to_string()))?
                .options(POSTGRES_OPTIONS);
            let pool = postgres_pool(connections)
                .connect_with(connect.clone())
                .await?;
            sqlx::migrate!("migrations/postgres").run(&pool).await?;
            // One connection per claim batch in flight.
            let claims = postgres_pool(POSTGRES_CLAIM_BATCHES as u32)
                .connect_with(connect.options(POSTGRES_CLAIM_OPTIONS))
                .await?;
            Backend::Postgres { pool, claims }
        } else {
            let path = url
                .strip_prefix("sqlite://")
                .or_else(|| url.strip_prefix("sqlite:"))
                .unwrap_or(url);
            if path.is_empty() || path.contains("://") {
                return Err(bad_url("not a file path".into()));
            }
            if !crate::backend::sqlite_global::configure() {
                tracing::debug!(
                    "SQLite was initialized before the store opened: default settings kept"
                );
            }
            let connect = SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
                .foreign_keys(true)
                .pragma("temp_store", "memory");
            let write = SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(
                    connect
                        .clone()
                        .pragma("cache_size", SQLITE_WRITER_CACHE_KIB)
                        .pragma("wal_autocheckpoint", SQLITE_WAL_BACKSTOP_PAGES),
                )
                .await?;
            sqlx::migrate!("migrations/sqlite").run(&write).await?;
            let read = SqlitePoolOptions::new()
                .max_connections(connections)
                .connect_with(connect)
                .await?;
            Backend::Sqlite { read, write }
        };
        let (alive, dropped) = watch::channel(());
        if let Backend::Sqlite { read, .. } = &backend {
            tokio::spawn(checkpoint_sqlite(read.clone(), dropped));
        }
        let (claims, queue) = mpsc::channel(CLAIM_QUEUE);
        tokio::spawn(batch_claims(
            backend.clone(),
            queue,
            options.lease_secs as i64 * 1000,
            options.clock.clone(),
        ));
        Ok(Store {
            backend,
            claims,
            options,
            events: EventHub::default(),
            work_queued: Notify::new(),
            stopping: watch::channel(false).0,
            subscriptions: watch::channel(0).0,
            slaves: Mutex::new(HashMap::new()),
            snapshots: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            _alive: alive,
        })
    }

    /// Opens a store for administration only (tokens): default rules, no recipes.
    pub async fn open_admin(url: &str) -> Result<Store, MasterError> {
        let options = StoreOptions {
            lease_secs: crate::config::DEFAULT_LEASE_SECS,
            max_attempts: crate::config::DEFAULT_MAX_ATTEMPTS,
            connections: 2,
            clock: Clock::System,
            recipes: Arc::new(RecipeCatalog::default()),
        };
        Store::open(url, options).await
    }

    /// Whether this store is on PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Postgres { .. })
    }

    /// The store's clock.
    pub fn clock(&self) -> &Clock {
        &self.options.clock
    }

    /// The event fan-out (for subscriptions).
    pub fn events(&self) -> &EventHub {
        &self.events
    }

    /// The recipes jobs may name.
    pub fn recipes(&self) -> &RecipeCatalog {
        &self.options.recipes
    }

    /// Ends waiting claims (they answer `None`): the master is stopping.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Becomes true when the master stops (subscriptions end with a final event).
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// Completes once the master is stopping.
    pub async fn stopped(&self) {
        let mut stopping = self.stopping.subscribe();
        let _ = stopping.wait_for(|stop| *stop).await;
    }

    /// Counts an open event subscription until the guard is dropped (after its final event).
    pub fn subscription_guard(&self) -> SubscriptionGuard<'_> {
        self.subscriptions.send_modify(|n| *n += 1);
        SubscriptionGuard { store: self }
    }

    /// Waits (at most `limit`) until every open subscription has sent its final event, so
    /// stopping the server does not cut them off before it.
    pub async fn subscriptions_drained(&self, limit: std::time::Duration) {
        let mut open = self.subscriptions.subscribe();
        let _ = tokio::time::timeout(limit, open.wait_for(|n| *n == 0)).await;
    }

    /// Closes the database connections.
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite { read, write } => {
                read.close().await;
                write.close().await;
            }
            Backend::Postgres { pool, claims } => {
                claims.close().await;
                pool.close().await;
            }
        }
    }

    fn now(&self) -> i64 {
        self.options.clock.now_ms()
    }

    fn lease_ms(&self) -> i64 {
        self.options.lease_secs as i64 * 1000
    }

    fn publish(&self, changes: &[Change]) {
        for c in changes {
            if c.state == TaskState::Queued {
                self.work_queued.notify_waiters();
            }
            self.events.publish(Event::TaskChanged {
                job_id: c.job_id,
                task_id: c.task_id,
                attempt: c.attempt,
                state: c.state,
            });
        }
    }

    // ----- submitters -----

    /// Validates and queues a job submitted by `caller`.
    pub async fn submit(
        &self,
        spec: &JobSpec,
        caller: &str,
        caller_is_admin: bool,
    ) -> Result<SubmitReceipt, MasterError> {
        let job = job_spec::validate(spec, caller, caller_is_admin, &self.options.recipes)?;
        let mut receipts = self.submit_validated(std::slice::from_ref(&job)).await?;
        receipts
            .pop()
            .ok_or_else(|| MasterError::Corrupt("submit returned no job".into()))
    }

    /// Queues already validated jobs in one transaction (bulk loads, benchmarks).
    pub async fn submit_validated(
        &self,
        jobs: &[NewJob],
    ) -> Result<Vec<SubmitReceipt>, MasterError> {
        let now = self.now();
        let recipes = self.options.recipes.clone();
        let ids = on_backend!(self, jobs::submit(jobs, &recipes, now))?;
        self.counters
            .submitted_jobs
            .fetch_add(jobs.len() as u64, Ordering::Relaxed);
        let receipts: Vec<SubmitReceipt> = ids
            .into_iter()
            .map(|(job_id, task_ids)| SubmitReceipt { job_id, task_ids })
            .collect();
        for r in &receipts {
            self.events.publish(Event::JobSubmitted {
                job_id: r.job_id,
                task_ids: r.task_ids.clone(),
            });
        }
        self.work_queued.notify_waiters();
        Ok(receipts)
    }

    /// Cancels a job; `owner` (unless the caller is an admin) must be its submitter.
    pub async fn cancel(
        &self,
        job_id: i64,
        owner: Option<&str>,
    ) -> Result<CancelReceipt, MasterError> {
        let now = self.now();
        let (receipt, changes) = on_backend!(self, jobs::cancel(job_id, owner, now))?;
        self.publish(&changes);
        Ok(receipt)
    }

    // ----- slaves -----

    /// Records a slave's recipes and slots; leases an earlier run of the same slave still holds
    /// are given up (see `backend/dispatch.rs`).
    pub async fn register(
        &self,
        reg: &SlaveRegistration,
    ) -> Result<RegistrationReply, MasterError> {
        job_spec::check_name("name", &reg.name)?;
        if reg.slots == 0 || reg.slots > MAX_SLOTS {
            return Err(MasterError::field(
                "slots",
                format!("must be 1 to {MAX_SLOTS}"),
            ));
        }
        if reg.recipes.is_empty() {
            return Err(MasterError::field("recipes", "name at least one recipe"));
        }
        if reg.recipes.len() > pyti_wire::job::MAX_RECIPES_PER_JOB * 4 {
            return Err(MasterError::field("recipes", "too many recipes"));
        }
        for (i, r) in reg.recipes.iter().enumerate() {
            job_spec::check_name(&format!("recipes[{i}]"), r)?;
        }
        let unknown: Vec<String> = reg
            .recipes
            .iter()
            .filter(|r| self.options.recipes.get(r).is_none())
            .cloned()
            .collect();
        let recipes_json = serde_json::to_string(&reg.recipes)
            .map_err(|e| MasterError::field("recipes", e.to_string()))?;
        let now = self.now();
        let max_attempts = self.options.max_attempts;
        let released = on_backend!(
            self,
            dispatch::register(
                &reg.name,
                &recipes_json,
                reg.slots as i64,
                max_attempts,
                now
            )
        )?;
        if !released.is_empty() {
            tracing::warn!(slave = %reg.name, tasks = released.len(), "a restarted slave registered again: the leases of its earlier run were given up and their tasks requeued");
            self.counters
                .expired_leases
                .fetch_add(released.len() as u64, Ordering::Relaxed);
            self.publish(&released);
        }
        self.lock_slaves().insert(
            reg.name.clone(),
            SlaveInfo {
                recipes: reg.recipes.clone(),
                slots: reg.slots,
            },
        );
        Ok(RegistrationReply {
            heartbeat_secs: (self.options.lease_secs / 4)
                .clamp(1, crate::config::MAX_HEARTBEAT_SECS),
            lease_secs: self.options.lease_secs,
            unknown_recipes: unknown,
        })
    }

    fn lock_slaves(&self) -> std::sync::MutexGuard<'_, HashMap<String, SlaveInfo>> {
        self.slaves.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn slave(&self, name: &str) -> Result<SlaveInfo, MasterError> {
        if let Some(info) = self.lock_slaves().get(name) {
            return Ok(info.clone());
        }
        let found = read_on_backend!(self, dispatch::slave(name))?;
        let Some((recipes_json, slots)) = found else {
            return Err(MasterError::NotFound {
                what: "slave",
                id: format!("`{name}` (call register first)"),
            });
        };
        let recipes: Vec<String> = serde_json::from_str(&recipes_json)
            .map_err(|e| MasterError::Corrupt(format!("slave {name} recipes: {e}")))?;
        let info = SlaveInfo {
            recipes,
            slots: slots as u32,
        };
        self.lock_slaves().insert(name.to_string(), info.clone());
        Ok(info)
    }

    /// Renews a slave's leases and tells it which tasks to stop. With `held` (the tasks the
    /// slave knows it holds) only those leases are renewed: one whose claim reply never reached
    /// the slave then ends with its lease instead of being kept alive by every heartbeat, and a
    /// listed task that is no longer the slave's is among those to stop.
    pub async fn heartbeat(
        &self,
        slave: &str,
        held: Option<&[pyti_wire::job::TaskId]>,
    ) -> Result<HeartbeatReply, MasterError> {
        job_spec::check_name("slave", slave)?;
        if held.is_some_and(|held| held.len() > MAX_SLOTS as usize) {
            return Err(MasterError::field(
                "held",
                format!("a slave holds at most {MAX_SLOTS} tasks (its slots)"),
            ));
        }
        let now = self.now();
        let lease_ms = self.lease_ms();
        let (renewed, cancel) = on_backend!(self, dispatch::heartbeat(slave, held, lease_ms, now))?;
        Ok(HeartbeatReply { renewed, cancel })
    }

    /// Takes a task for `slave` if one is queued for its recipes (no waiting).
    pub async fn try_claim(&self, slave: &str) -> Result<Option<ClaimedTask>, MasterError> {
        let started = Instant::now();
        let info = self.slave(slave).await?;
        let lease_id = new_lease_id();
        let (reply, answer) = oneshot::channel();
        let job = ClaimJob {
            slave: slave.to_string(),
            recipes: info.recipes,
            slots: info.slots as i64,
            lease_id: lease_id.clone(),
            reply,
        };
        self.claims
            .send(job)
            .await
            .map_err(|_| MasterError::Dispatch("the claim batcher stopped".into()))?;
        let claimed = answer
            .await
            .map_err(|_| MasterError::Dispatch("the claim batcher stopped".into()))?
            .map_err(MasterError::Dispatch)?;
        self.counters.claim_latency.observe(started.elapsed());
        let Some((claimed, upload)) = claimed else {
            self.counters.empty_claims.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        };
        self.counters.claims.fetch_add(1, Ordering::Relaxed);
        self.publish(&[claimed.change]);
        let mut package: PackageSpec =
            serde_json::from_str(&claimed.picked.package_spec).map_err(|e| {
                MasterError::Corrupt(format!("job {} package: {e}", claimed.picked.task.job_id))
            })?;
        if let (PackageSpec::Upload { content_hex, .. }, Some(bytes)) = (&mut package, upload) {
            *content_hex = encode_hex(&bytes);
        }
        let recipe = self.snapshot(claimed.picked.task.snapshot_id).await?;
        Ok(Some(ClaimedTask {
            task_id: claimed.picked.task.id,
            job_id: claimed.picked.task.job_id,
            attempt: claimed.change.attempt,
            lease_id,
            lease_secs: self.options.lease_secs,
            package,
            recipe: (*recipe).clone(),
        }))
    }

    async fn snapshot(&self, id: i64) -> Result<Arc<Recipe>, MasterError> {
        if let Some(r) = self
            .snapshots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            return Ok(r.clone());
        }
        let body = read_on_backend!(self, reads::snapshot(id))?;
        let recipe: Arc<Recipe> = Arc::new(
            serde_json::from_str(&body)
                .map_err(|e| MasterError::Corrupt(format!("recipe snapshot {id}: {e}")))?,
        );
        self.snapshots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, recipe.clone());
        Ok(recipe)
    }

    /// Waits up to `wait` for a task for `slave` (long poll); `None` if none came.
    pub async fn claim(
        &self,
        slave: &str,
        wait: Duration,
    ) -> Result<Option<ClaimedTask>, MasterError> {
        job_spec::check_name("slave", slave)?;
        let deadline = Instant::now() + wait;
        let mut stopping = self.stopping.subscribe();
        loop {
            let woken = self.work_queued.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            if let Some(task) = self.try_claim(slave).await? {
                return Ok(Some(task));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || *stopping.borrow() {
                return Ok(None);
            }
            tokio::select! {
                _ = woken => {}
                _ = tokio::time::sleep(left.min(CLAIM_POLL)) => {}
                _ = stopping.changed() => return Ok(None),
            }
        }
    }

    /// Records a phase event (the first marks the task running).
    pub async fn report_progress(&self, report: &ProgressReport) -> Result<(), MasterError> {
        job_spec::check_name("phase", &report.phase)?;
        if report.message.len() > MAX_PROGRESS_MESSAGE_BYTES {
            return Err(MasterError::field(
                "message",
                format!("longer than {MAX_PROGRESS_MESSAGE_BYTES} bytes"),
            ));
        }
        check_lease_id(&report.lease_id)?;
        let now = self.now();
        let change = on_backend!(self, results::progress(report, now))?;
        if let Some(c) = change {
            self.publish(&[c]);
        }
        Ok(())
    }

    /// The raw-data API: ends an attempt (idempotent, see `backend/results.rs`).
    pub async fn report_result(&self, report: &ResultReport) -> Result<ReportReceipt, MasterError> {
        check_lease_id(&report.lease_id)?;
        if let Some(reason) = report.outcome.reason() {
            if reason.len() > MAX_REASON_BYTES {
                return Err(MasterError::field(
                    "outcome.reason",
                    format!("longer than {MAX_REASON_BYTES} bytes"),
                ));
            }
        }
        let canonical =
            serde_json::to_vec(report).map_err(|e| MasterError::field("report", e.to_string()))?;
        let sha = hex::encode(Sha256::digest(&canonical));
        let now = self.now();
        let max_attempts = self.options.max_attempts;
        let (receipt, change) =
            on_backend!(self, results::report(report, &sha, max_attempts, now))?;
        self.counters.reports.fetch_add(1, Ordering::Relaxed);
        if receipt.duplicate {
            self.counters
                .duplicate_reports
                .fetch_add(1, Ordering::Relaxed);
        }
        if let Some(c) = change {
            self.publish(&[c]);
        }
        Ok(receipt)
    }

    /// Extends every open lease to a full lease period from now (a master starting: slaves had
    /// no one to heartbeat to); returns how many leases were extended.
    pub async fn extend_open_leases(&self) -> Result<u64, MasterError> {
        let until = self.now() + self.lease_ms();
        on_backend!(self, dispatch::extend_open_leases(until))
    }

    /// Requeues or gives up on tasks whose lease ran out; returns how many.
    pub async fn expire_leases(&self) -> Result<usize, MasterError> {
        let now = self.now();
        let max_attempts = self.options.max_attempts;
        let changes = on_backend!(self, dispatch::expire(max_attempts, now))?;
        self.counters
            .expired_leases
            .fetch_add(changes.len() as u64, Ordering::Relaxed);
        self.publish(&changes);
        Ok(changes.len())
    }

    // ----- readers -----

    /// A job and its tasks.
    pub async fn get_job(&self, job_id: i64) -> Result<Job, MasterError> {
        let found = read_on_backend!(self, reads::job(job_id))?;
        let (job, tasks) = found.ok_or(MasterError::NotFound {
            what: "job",
            id: job_id.to_string(),
        })?;
        build_job(job, tasks)
    }

    /// Jobs matching `filter`, newest first.
    pub async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<Job>, MasterError> {
        if let Some(status) = &filter.status {
            let states = ["queued", "leased", "running", "finished", "cancelled"];
            if Verdict::parse(status).is_none() && !states.contains(&status.as_str()) {
                return Err(MasterError::field(
                    "status",
                    format!("`{status}` is not a state ({}) or a verdict (pass, fail, error, timeout, tmpfail)", states.join(", ")),
                ));
            }
        }
        if let Some(p) = &filter.package {
            job_spec::check_name("package", p)?;
        }
        if let Some(r) = &filter.recipe {
            job_spec::check_name("recipe", r)?;
        }
        if let Some(s) = &filter.submitter {
            job_spec::check_name("submitter", s)?;
        }
        let rows = read_on_backend!(self, reads::list_jobs(filter))?;
        rows.into_iter()
            .map(|(job, tasks)| build_job(job, tasks))
            .collect()
    }

    /// A task with every attempt (and its raw data).
    pub async fn get_task(&self, task_id: i64) -> Result<Task, MasterError> {
        let found = read_on_backend!(self, reads::task(task_id))?;
        let (task, job, attempts) = found.ok_or(MasterError::NotFound {
            what: "task",
            id: task_id.to_string(),
        })?;
        let mut out = task.to_task(job.package()?)?;
        out.attempts = attempts
            .into_iter()
            .map(|a| {
                let outcome =
                    match &a.outcome {
                        Some(o) => Some(state::outcome_from_db(o).ok_or_else(|| {
                            MasterError::Corrupt(format!("attempt outcome `{o}`"))
                        })?),
                        None => None,
                    };
                let raw_result = match &a.raw_result {
                    Some(json) => Some(serde_json::from_str(json).map_err(|e| {
                        MasterError::Corrupt(format!("task {task_id} raw result: {e}"))
                    })?),
                    None => None,
                };
                let _ = &a.report_sha256;
                Ok(Attempt {
                    attempt: a.attempt as u32,
                    slave: a.slave,
                    leased_at_ms: a.leased_ms,
                    started_at_ms: a.started_ms,
                    finished_at_ms: a.finished_ms,
                    outcome,
                    reason: a.reason,
                    raw_result,
                })
            })
            .collect::<Result<_, MasterError>>()?;
        Ok(out)
    }

    /// A task's progress events and state changes, oldest first: at most
    /// [`TASK_LOG_PAGE_LINES`] from line `from_line` (0-based).
    pub async fn task_log(
        &self,
        task_id: i64,
        from_line: u32,
    ) -> Result<Vec<LogEntry>, MasterError> {
        let page = i64::from(TASK_LOG_PAGE_LINES);
        let lines = read_on_backend!(self, reads::task_log(task_id, i64::from(from_line), page))?;
        let lines = lines.ok_or(MasterError::NotFound {
            what: "task",
            id: task_id.to_string(),
        })?;
        Ok(lines
            .into_iter()
            .map(|(at_ms, attempt, phase, message)| LogEntry {
                at_ms,
                attempt: attempt as u32,
                phase,
                message,
            })
            .collect())
    }

    /// A package's latest verdict per version and recipe (its newest versions, see
    /// [`CompareRequest::limit`]), and the regressions between consecutive versions (in order of
    /// first submission).
    pub async fn compare(&self, request: &CompareRequest) -> Result<Comparison, MasterError> {
        job_spec::check_name("package", &request.package)?;
        for (i, r) in request.recipes.iter().enumerate() {
            job_spec::check_name(&format!("recipes[{i}]"), r)?;
        }
        let limit = request.limit.unwrap_or(COMPARE_DEFAULT_VERSIONS);
        if !(1..=COMPARE_MAX_VERSIONS).contains(&limit) {
            return Err(MasterError::field(
                "limit",
                format!("must be 1 to {COMPARE_MAX_VERSIONS} versions"),
            ));
        }
        let recipes_json = serde_json::json!(request.recipes).to_string();
        let rows = read_on_backend!(
            self,
            reads::package_cells(&request.package, &recipes_json, i64::from(limit))
        )?;
        // One row per cell, oldest version first: the versions in order, and the cells.
        let mut versions: Vec<String> = Vec::new();
        let mut all_versions = 0;
        let mut cells = Vec::with_capacity(rows.len());
        for (version, recipe, task_id, state_text, verdict, count) in rows {
            all_versions = count;
            if versions.last() != Some(&version) {
                versions.push(version.clone());
            }
            let verdict = match state::from_db(&state_text, verdict.as_deref()) {
                Some(TaskState::Finished(v)) => Some(v),
                Some(_) => None,
                None => return Err(MasterError::Corrupt(format!("task {task_id} state"))),
            };
            cells.push(CompareCell {
                version,
                recipe,
                task_id,
                verdict,
            });
        }
        // By recipe, each recipe's versions still oldest first (the sort is stable): a
        // regression is a cell that did not pass after the recipe's last non-tmpfail verdict
        // passed.
        cells.sort_by(|a, b| a.recipe.cmp(&b.recipe));
        let mut recipes: Vec<String> = Vec::new();
        let mut regressions = Vec::new();
        let mut previous: Option<(&str, Verdict)> = None;
        for cell in &cells {
            if recipes.last() != Some(&cell.recipe) {
                recipes.push(cell.recipe.clone());
                previous = None;
            }
            let Some(verdict) = cell.verdict.filter(|v| *v != Verdict::Tmpfail) else {
                continue;
            };
            if let Some((from_version, Verdict::Pass)) = previous {
                if verdict != Verdict::Pass {
                    regressions.push(Regression {
                        recipe: cell.recipe.clone(),
                        from_version: from_version.to_string(),
                        to_version: cell.version.clone(),
                        from: Verdict::Pass,
                        to: verdict,
                    });
                }
            }
            previous = Some((&cell.version, verdict));
        }
        let older_versions = u32::try_from(all_versions)
            .unwrap_or(u32::MAX)
            .saturating_sub(versions.len() as u32);
        Ok(Comparison {
            package: pyti_wire::job::normalize_name(&request.package),
            versions,
            recipes,
            cells,
            regressions,
            older_versions,
        })
    }

    /// Checks that the database answers (`/health`).
    pub async fn ping(&self) -> Result<(), MasterError> {
        read_on_backend!(self, reads::ping())
    }

    /// Tasks per state name and verdict (`/metrics`).
    pub async fn state_counts(&self) -> Result<Vec<(TaskState, i64)>, MasterError> {
        let rows = read_on_backend!(self, reads::state_counts())?;
        rows.into_iter()
            .map(|(s, v, n)| {
                let state = state::from_db(&s, v.as_deref())
                    .ok_or_else(|| MasterError::Corrupt(format!("task state `{s}`")))?;
                Ok((state, n))
            })
            .collect()
    }

    // ----- tokens (see crate::tokens) -----

    pub(crate) async fn token_add(
        &self,
        name: &str,
        role: &str,
        sha256: &str,
    ) -> Result<(), MasterError> {
        let now = self.now();
        on_backend!(self, tokens::add(name, role, sha256, now))
    }

    pub(crate) async fn token_list(
        &self,
    ) -> Result<Vec<(String, String, i64, Option<i64>)>, MasterError> {
        read_on_backend!(self, tokens::list())
    }

    pub(crate) async fn token_revoke(&self, name: &str) -> Result<bool, MasterError> {
        let now = self.now();
        on_backend!(self, tokens::revoke(name, now))
    }

    pub(crate) async fn token_lookup(
        &self,
        sha256: &str,
    ) -> Result<Option<(String, String)>, MasterError> {
        read_on_backend!(self, tokens::lookup(sha256))
    }
}

/// A PostgreSQL pool of at most `connections` that pings a connection only after it has been idle
/// for [`POSTGRES_PING_IDLE_AFTER`].
fn postgres_pool(connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(connections)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > POSTGRES_PING_IDLE_AFTER {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

/// Checkpoints SQLite's write-ahead log every [`SQLITE_CHECKPOINT_EVERY`] on a reader
/// connection (`PASSIVE`: it never blocks the writer or readers). Ends when the store is dropped
/// or its pools are closed.
async fn checkpoint_sqlite(pool: sqlx::SqlitePool, mut dropped: watch::Receiver<()>) {
    let mut every = tokio::time::interval(SQLITE_CHECKPOINT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = dropped.changed() => return,
        }
        if pool.is_closed() {
            return;
        }
        match sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            Ok(_) => failing = false,
            Err(_) if pool.is_closed() => return,
            // The commit-time backstop still bounds the log; said once until it works again.
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "SQLite checkpoint failed; commits will checkpoint instead");
            }
            Err(_) => {}
        }
    }
}

/// A claimed task, with its job's uploaded bytes if it has an upload.
type ClaimAnswer = (Claimed, Option<Vec<u8>>);

/// A claim waiting for the batcher.
struct ClaimJob {
    slave: String,
    recipes: Vec<String>,
    slots: i64,
    lease_id: String,
    reply: oneshot::Sender<Result<Option<ClaimAnswer>, String>>,
}

/// Serves claims in batches: takes the waiting claims, oldest first, up to an even share of
/// the claims waiting and in flight ([`batch_share`]), and leases their tasks in one
/// transaction, with up to [`POSTGRES_CLAIM_BATCHES`] transactions in flight on PostgreSQL (one
/// on SQLite, which then takes every waiting claim). Ends when the store is dropped.
async fn batch_claims(
    backend: Backend,
    mut queue: mpsc::Receiver<ClaimJob>,
    lease_ms: i64,
    clock: Clock,
) {
    let batches = match backend {
        Backend::Sqlite { .. } => 1,
        Backend::Postgres { .. } => POSTGRES_CLAIM_BATCHES,
    };
    let in_flight = Arc::new(Semaphore::new(batches));
    // Claims in the batches being written.
    let claims_in_flight = Arc::new(AtomicUsize::new(0));
    // Claims taken off the channel and not yet in a batch, oldest first: at most CLAIM_QUEUE,
    // so with the channel's own room at most twice that many claims wait.
    let mut waiting: VecDeque<ClaimJob> = VecDeque::new();
    loop {
        if waiting.is_empty() {
            match queue.recv().await {
                Some(job) => waiting.push_back(job),
                None => return,
            }
        }
        // Claims arriving while every batch is in flight wait for a connection with this one.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        while waiting.len() < CLAIM_QUEUE {
            match queue.try_recv() {
                Ok(job) => waiting.push_back(job),
                Err(_) => break,
            }
        }
        let share = batch_share(
            waiting.len(),
            claims_in_flight.load(Ordering::Relaxed),
            batches,
        );
        let batch: Vec<ClaimJob> = waiting.drain(..share).collect();
        claims_in_flight.fetch_add(batch.len(), Ordering::Relaxed);
        let backend = backend.clone();
        let clock = clock.clone();
        let claims_in_flight = claims_in_flight.clone();
        tokio::spawn(async move {
            let batch_started = Instant::now();
            let result = lease_claim_batch(&backend, &batch, lease_ms, &clock).await;
            claims_in_flight.fetch_sub(batch.len(), Ordering::Relaxed);
            drop(permit);
            tracing::debug!(claims = batch.len(), elapsed = ?batch_started.elapsed(), "claim batch");
            // The batch is committed: its claimers are answered (after reading any uploads,
            // which may be megabytes) beside the next batch, which need not wait for that.
            answer_batch(backend, batch, result).await;
        });
    }
}

/// How many of the `waiting` claims (oldest first) a batch starting now takes, while batches
/// holding `in_flight` claims are being written, with at most `batches` batches in flight: an
/// even share of all of them, at least one and at most [`MAX_CLAIM_BATCH`].
///
/// Taking every waiting claim, as one writer must, splits a saturated PostgreSQL into one batch
/// of nearly every claimer and one of a single claim: the lone claimer's batch comes back
/// first, and it starts the next one alone while the others wait for the big one (measured
/// with 50 claimers: more than half of the batches had one claim, a tenth had 48 or 49). Each
/// batch costs a fixed part (round trips, statements) whatever its size, so those one-claim
/// batches took a connection for little. With even shares the two batches stay about
/// the same size (9 to 25 claims, 17 on average, in the same bench), and each is shorter.
fn batch_share(waiting: usize, in_flight: usize, batches: usize) -> usize {
    (waiting + in_flight)
        .div_ceil(batches.max(1))
        .clamp(1, MAX_CLAIM_BATCH)
        .min(waiting)
}

/// Leases tasks for `batch` in one transaction, tried again on a PostgreSQL deadlock or
/// serialization failure.
async fn lease_claim_batch(
    backend: &Backend,
    batch: &[ClaimJob],
    lease_ms: i64,
    clock: &Clock,
) -> Result<Vec<Option<Claimed>>, MasterError> {
    let wants: Vec<ClaimWant> = batch
        .iter()
        .map(|j| ClaimWant {
            slave: &j.slave,
            recipes: &j.recipes,
            slots: j.slots,
            lease_id: &j.lease_id,
        })
        .collect();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let now = clock.now_ms();
        let result = match backend {
            Backend::Sqlite { read, write } => {
                sqlite::dispatch::claim_batch(sqlite::Pools { read, write }, &wants, lease_ms, now)
                    .await
            }
            Backend::Postgres { pool, claims } => {
                let pools = postgres::Pools {
                    read: pool,
                    write: claims,
                };
                postgres::dispatch::claim_batch(pools, &wants, lease_ms, now).await
            }
        };
        match result {
            Err(e) if attempt < CLAIM_BATCH_TRIES && is_transient(&e) => continue,
            other => return other,
        }
    }
}

/// Answers a committed claim batch: reads the uploads of the claimed tasks that have one (one
/// read for the whole batch) and hands each claimer its task, or the batch's error.
async fn answer_batch(
    backend: Backend,
    batch: Vec<ClaimJob>,
    result: Result<Vec<Option<Claimed>>, MasterError>,
) {
    let result = match result {
        Ok(claimed) => {
            let job_ids: Vec<i64> = claimed
                .iter()
                .flatten()
                .filter(|c| c.picked.has_upload)
                .map(|c| c.picked.task.job_id)
                .collect();
            let uploads = read_on_backend!(backend: &backend, reads::uploads(&job_ids));
            uploads.map(|uploads| {
                claimed
                    .into_iter()
                    .map(|c| {
                        let c = c?;
                        let upload = if c.picked.has_upload {
                            Some(uploads.get(&c.picked.task.job_id).cloned()?)
                        } else {
                            None
                        };
                        Some((c, upload))
                    })
                    .collect::<Vec<_>>()
            })
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(claimed) => {
            for (job, claim) in batch.into_iter().zip(claimed) {
                let _ = job.reply.send(Ok(claim));
            }
        }
        Err(e) => {
            let message = e.to_string();
            for job in batch {
                let _ = job.reply.send(Err(message.clone()));
            }
        }
    }
}

/// Times a claim batch is tried when PostgreSQL reports a deadlock, a serialization failure or
/// a lost connection: at least once more than the claim connections, each of which the server
/// may have ended while it was pooled.
const CLAIM_BATCH_TRIES: u32 = POSTGRES_CLAIM_BATCHES as u32 + 1;

/// Whether a claim batch that failed with `e` is tried again: a PostgreSQL deadlock (40P01) or
/// serialization failure (40001), or a connection the server ended. A batch returns an error
/// only when its first round failed, and its lease is one statement; one whose outcome a lost
/// connection hid was never answered, so its leases expire and nothing runs twice.
fn is_transient(e: &MasterError) -> bool {
    match e {
        MasterError::Database(sqlx::Error::Database(db))
            if matches!(db.code().as_deref(), Some("40P01") | Some("40001")) =>
        {
            true
        }
        MasterError::Database(e) => postgres::connection_lost(e),
        _ => false,
    }
}

fn build_job(
    job: crate::backend::rows::JobRow,
    tasks: Vec<crate::backend::rows::TaskRow>,
) -> Result<Job, MasterError> {
    let package = job.package()?;
    let tasks = tasks
        .iter()
        .map(|t| t.to_task(package.clone()))
        .collect::<Result<_, _>>()?;
    Ok(Job {
        id: job.id,
        package,
        submitter: job.submitter,
        priority: job.priority as u8,
        trigger: job.trigger_label,
        created_at_ms: job.created_ms,
        tasks,
    })
}

/// 16 random bytes, hex.
fn new_lease_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

fn check_lease_id(lease_id: &str) -> Result<(), MasterError> {
    if lease_id.len() != 32 || !lease_id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(MasterError::field(
            "lease_id",
            "must be the 32 hex digits `claim` returned",
        ));
    }
    Ok(())
}

/// The URL without its password, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// An open event subscription (see [`Store::subscription_guard`]).
pub struct SubscriptionGuard<'a> {
    store: &'a Store,
}

impl Drop for SubscriptionGuard<'_> {
    fn drop(&mut self) {
        self.store
            .subscriptions
            .send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_writer_takes_every_waiting_claim_up_to_the_batch_limit() {
        assert_eq!(batch_share(1, 0, 1), 1);
        assert_eq!(batch_share(50, 0, 1), 50);
        assert_eq!(batch_share(1000, 0, 1), MAX_CLAIM_BATCH);
    }

    #[test]
    fn two_batches_take_even_shares_and_never_leave_a_lone_claim_waiting() {
        // A burst with nothing in flight: half now, half on the other connection.
        assert_eq!(batch_share(100, 0, 2), 50);
        assert_eq!(batch_share(50, 50, 2), 50);
        // The big batch's claimers are back while a small one is written.
        assert_eq!(batch_share(49, 1, 2), 25);
        // A light load is served at once, whatever is in flight.
        assert_eq!(batch_share(1, 0, 2), 1);
        assert_eq!(batch_share(1, 49, 2), 1);
        assert_eq!(batch_share(3, 1, 2), 2);
    }

    /// A closed loop of 50 claimers on two connections, each batch taking a fixed time and a
    /// time per claim, started from the lopsided split measured before shares (49 claims in one
    /// batch, the 50th waiting): the batches settle at even sizes. Taking every waiting claim
    /// instead keeps alternating between one big batch and batches of one.
    #[test]
    fn saturated_claimers_settle_into_even_batches() {
        let batch_time = |claims: usize| 1.0 + 0.05 * claims as f64;
        let mut waiting = 1;
        let mut in_flight: Vec<(f64, usize)> = vec![(batch_time(49), 49)];
        let mut now = 0.0;
        let mut sizes = Vec::new();
        while sizes.len() < 400 {
            while in_flight.len() < 2 && waiting > 0 {
                let held = in_flight.iter().map(|b| b.1).sum();
                let claims = batch_share(waiting, held, 2);
                waiting -= claims;
                in_flight.push((now + batch_time(claims), claims));
                sizes.push(claims);
            }
            // The first batch to end answers its claimers, who claim again at once.
            let first = (0..in_flight.len())
                .min_by(|&a, &b| in_flight[a].0.total_cmp(&in_flight[b].0))
                .expect("a batch in flight");
            let (ends, claims) = in_flight.swap_remove(first);
            now = ends;
            waiting += claims;
        }
        let settled = &sizes[100..];
        assert!(
            settled.iter().all(|claims| (20..=30).contains(claims)),
            "batch sizes: {settled:?}"
        );
    }

    async fn show(pool: &sqlx::PgPool, sql: &'static str) -> String {
        sqlx::query_scalar(sql)
            .fetch_one(pool)
            .await
            .expect("query the setting")
    }

    /// Claims are committed without waiting for the WAL flush, on the same schema as the rest;
    /// every other write still waits for the flush.
    #[tokio::test]
    async fn on_postgres_only_claims_commit_without_waiting_for_the_flush_and_nothing_is_jit_compiled(
    ) {
        let base = std::env::var("PYTI_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://pyti:pyti@127.0.0.1:5432/pyti_test".to_string());
        let schema = format!("pyti_test_{}", hex::encode(rand::random::<[u8; 6]>()));
        let admin = sqlx::PgPool::connect(&base)
            .await
            .expect("PostgreSQL for tests (see scripts/setup-host.sh --tests)");
        let create = format!("CREATE SCHEMA {schema}");
        sqlx::query(sqlx::AssertSqlSafe(create))
            .execute(&admin)
            .await
            .expect("create schema");
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
        let options = StoreOptions {
            lease_secs: 60,
            max_attempts: 3,
            connections: 2,
            clock: Clock::System,
            recipes: Arc::new(RecipeCatalog::default()),
        };
        let store = Store::open(&url, options).await.expect("open store");
        let Backend::Postgres { pool, claims } = &store.backend else {
            panic!("a postgres:// URL opens a PostgreSQL store");
        };
        assert_eq!(show(claims, "SHOW synchronous_commit").await, "off");
        assert_eq!(show(pool, "SHOW synchronous_commit").await, "on");
        // No connection compiles its statements (the server's default is `on`).
        assert_eq!(show(claims, "SHOW jit").await, "off");
        assert_eq!(show(pool, "SHOW jit").await, "off");
        // Both keep the URL's own options (here the test's schema).
        assert_eq!(show(claims, "SELECT current_schema()::text").await, schema);
        assert_eq!(show(pool, "SELECT current_schema()::text").await, schema);
        store.close().await;
        let drop = format!("DROP SCHEMA {schema} CASCADE");
        sqlx::query(sqlx::AssertSqlSafe(drop))
            .execute(&admin)
            .await
            .expect("drop schema");
        admin.close().await;
    }
}
