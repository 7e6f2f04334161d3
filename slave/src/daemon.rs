//! The slave daemon: register with the master, heartbeat, claim tasks per slot, run them, report.
//!
//! Every call to the master is retried with back-off while the master is unreachable; results go
//! through the [`Outbox`] first, so nothing a slot produced is lost if the master is down or the
//! slave restarts. On shutdown the slave stops claiming, lets running tasks finish and reports
//! them, then removes its VMs.

use crate::acquire::{AcquireError, PackageAcquirer};
use crate::cycle::{CycleOutcome, CyclePhase, CycleRequest, SlotContext, SlotRunner};
use crate::outbox::Outbox;
use crate::wheelhouse;
use jsonrpsee::core::ClientError;
use jsonrpsee::http_client::HttpClient;
use pyti_diskhandler::{Accelerator, Session, SessionConfig};
use pyti_vmanager::image::{self, GuestImage, ImageCache};
use pyti_vmanager::{CancellationToken, Hypervisor, ResolvedAccel, SlotMode};
use pyti_wire::client::http_client;
use pyti_wire::job::{
    ClaimRequest, ClaimedTask, ProgressReport, ReportOutcome, ResultReport, SlaveRegistration,
    TaskId,
};
use pyti_wire::recipe::Recipe;
use pyti_wire::recipe::{Accel, GuestTool};
use pyti_wire::rpc::PytiApiClient;
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// How long one claim waits at the master for a task (long poll).
const CLAIM_WAIT_SECS: u32 = 20;
/// First and longest pause between retries while the master is unreachable.
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Everything a slave needs to run.
#[derive(Debug, Clone)]
pub struct SlaveConfig {
    /// Unique name at the master; VM domains are `pyti-<name>-<slot>`.
    pub name: String,
    /// The master's URL (`http://host:port`).
    pub master_url: String,
    /// Bearer token with the `slave` role.
    pub token: Option<String>,
    /// Tasks run at once.
    pub slots: usize,
    pub mode: SlotMode,
    /// Recipes this slave offers (an image is built for each at start-up).
    pub recipes: Vec<Recipe>,
    pub libvirt_uri: String,
    /// Slot directories, I/O disks and the outbox live here.
    pub state_dir: PathBuf,
    pub image_cache: PathBuf,
    /// The in-guest agent baked into images.
    pub agent_binary: PathBuf,
    /// Downloaded wheels, shared by all tasks.
    pub wheelhouse_cache: PathBuf,
    /// Per-stream output cap of each step.
    pub output_limit_bytes: u64,
}

impl SlaveConfig {
    /// One slot per two host cores, at least one (two 1-vCPU TCG guests on two cores gave 1.8x).
    pub fn default_slots() -> usize {
        std::thread::available_parallelism()
            .map(|n| (n.get() / 2).max(1))
            .unwrap_or(1)
    }
}

/// Why the slave could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SlaveError {
    #[error("building the image for recipe `{recipe}`: {source}")]
    Image {
        recipe: String,
        #[source]
        source: image::ImageError,
    },
    #[error("installing the host's uv for the images of recipes with `tools = [\"uv\"]`: {0}")]
    Tool(#[source] wheelhouse::WheelhouseError),
    #[error(transparent)]
    Vm(#[from] pyti_vmanager::VmError),
    #[error("starting the libguestfs session: {0}")]
    Disk(#[from] pyti_diskhandler::InfrastructureError),
    #[error(transparent)]
    Outbox(#[from] crate::outbox::OutboxError),
    #[error("bad master URL or token: {0}")]
    Client(String),
    #[error("the master refused this slave: {0}; check the token has the `slave` role")]
    Refused(String),
}

/// Something that happened on the slave, for the embedded mode's live display.
#[derive(Debug, Clone)]
pub enum SlaveEvent {
    /// Building or reusing a recipe's image.
    Image { recipe: String, phase: String },
    /// A slot started a task's phase.
    Phase { slot: u32, task: i64, phase: String },
}

/// Builds (or reuses) the image of each of `config`'s recipes, with the agent and the tools
/// the recipe names (the wheelhouse's pinned uv); blocking work runs off the executor.
pub async fn build_images(
    config: &SlaveConfig,
    events: impl Fn(SlaveEvent) + Send + Sync + 'static,
) -> Result<HashMap<String, GuestImage>, SlaveError> {
    // Installing uv takes seconds the first time (a no-op after): say what is happening.
    for recipe in config.recipes.iter().filter(|r| !r.guest.tools.is_empty()) {
        events(SlaveEvent::Image {
            recipe: recipe.name.clone(),
            phase: "host tools (installed once)".into(),
        });
    }
    let files = host_files(
        &config.recipes,
        config.agent_binary.clone(),
        &config.wheelhouse_cache,
    )
    .await
    .map_err(SlaveError::Tool)?;
    let cache = config.image_cache.clone();
    let events = Arc::new(events);
    let mut images = HashMap::new();
    for recipe in &config.recipes {
        let (recipe2, files, cache, events) =
            (recipe.clone(), files.clone(), cache.clone(), events.clone());
        let built = tokio::task::spawn_blocking(move || {
            image::build(&recipe2, &files, &ImageCache::new(cache), &mut |progress| {
                let phase = match progress {
                    image::BuildPhase::Started { phase } => phase.name().to_string(),
                    image::BuildPhase::Finished { phase, elapsed } => {
                        format!("{} done in {:.1} s", phase.name(), elapsed.as_secs_f64())
                    }
                    image::BuildPhase::CacheHit { .. } => "cached".to_string(),
                };
                events(SlaveEvent::Image {
                    recipe: recipe2.name.clone(),
                    phase,
                })
            })
        })
        .await
        .map_err(|e| SlaveError::Client(format!("image build panicked: {e}")))?
        .map_err(|source| SlaveError::Image {
            recipe: recipe.name.clone(),
            source,
        })?;
        images.insert(recipe.name.clone(), built);
    }
    // Older images nothing has used for a week go: each is ~250 MB.
    let keep: Vec<String> = images.values().map(|i| i.key.clone()).collect();
    let pruned = tokio::task::spawn_blocking(move || {
        let keep: Vec<&str> = keep.iter().map(String::as_str).collect();
        ImageCache::new(cache)
            .prune(&keep, IMAGE_KEEP_UNUSED)
            .map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    match pruned {
        Ok(p) if !p.keys.is_empty() => tracing::info!(
            images = p.keys.len(),
            freed_mb = p.freed_bytes / (1024 * 1024),
            "removed cached images unused for a week"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("pruning the image cache failed: {e}"),
    }
    Ok(images)
}

/// Cached images unused this long are removed when a slave starts.
const IMAGE_KEEP_UNUSED: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// How often a running slave records that its images are in use (far below
/// [`IMAGE_KEEP_UNUSED`], so another slave starting on this host never prunes them) and trims
/// its wheelhouse cache.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(60 * 60);

/// Every [`HOUSEKEEPING_EVERY`] until `stop` changes, from the start: records that `images` are
/// in use, and trims the wheelhouse cache to [`wheelhouse::DEFAULT_MAX_CACHE_BYTES`] (least
/// recently used files first; safe while tasks run).
async fn housekeeping(
    images: Arc<HashMap<String, GuestImage>>,
    wheelhouse_cache: PathBuf,
    mut stop: watch::Receiver<bool>,
) {
    let settings = wheelhouse::WheelhouseSettings::new(wheelhouse_cache);
    loop {
        let marked = images.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for image in marked.values() {
                if let Err(e) = image.mark_used() {
                    tracing::warn!("{e}; another slave on this host may prune the image");
                }
            }
        })
        .await;
        match wheelhouse::prune_cache(&settings, wheelhouse::DEFAULT_MAX_CACHE_BYTES).await {
            Ok(report) if report.removed_files > 0 || report.removed_staging_dirs > 0 => {
                tracing::info!(?report, "trimmed the wheelhouse cache")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("trimming the wheelhouse cache failed: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(HOUSEKEEPING_EVERY) => {}
            _ = stop.changed() => return,
        }
    }
}

/// The host files images of `recipes` bake in: `agent`, and uv (the wheelhouse's pinned one,
/// installed on first use) when a recipe names it in `[guest] tools`.
pub async fn host_files(
    recipes: &[Recipe],
    agent: PathBuf,
    wheelhouse_cache: &Path,
) -> Result<image::HostFiles, wheelhouse::WheelhouseError> {
    let uv = if recipes
        .iter()
        .any(|r| r.guest.tools.contains(&GuestTool::Uv))
    {
        let settings = wheelhouse::WheelhouseSettings::new(wheelhouse_cache);
        Some(wheelhouse::uv_binary(&settings).await?)
    } else {
        None
    };
    Ok(image::HostFiles { agent, uv })
}

/// The tasks this slave holds, from its claim until the master has its result: heartbeats renew
/// exactly these leases, and the master's cancel requests reach them.
#[derive(Clone, Default)]
struct HeldTasks(Arc<Mutex<HashMap<TaskId, CancellationToken>>>);

impl HeldTasks {
    /// Registers `task`; the token fires if the master cancels it.
    fn start(&self, task: TaskId) -> CancellationToken {
        let token = CancellationToken::new();
        self.lock().insert(task, token.clone());
        token
    }

    fn finish(&self, task: TaskId) {
        self.lock().remove(&task);
    }

    /// The tasks held now, for a heartbeat.
    fn held(&self) -> Vec<TaskId> {
        let mut held: Vec<TaskId> = self.lock().keys().copied().collect();
        held.sort_unstable();
        held
    }

    /// Cancels those of `tasks` running here; returns how many were.
    fn cancel(&self, tasks: &[TaskId]) -> usize {
        let running = self.lock();
        tasks
            .iter()
            .filter_map(|task| running.get(task))
            .inspect(|token| token.cancel())
            .count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, CancellationToken>> {
        // The map holds no invariant a panicking holder could break.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Opens libvirt and probes the accelerator once (a throw-away guest): the answer holds for the
/// VMs and for the libguestfs appliance alike.
pub(crate) async fn open_hypervisor(
    uri: &str,
) -> Result<(Arc<Hypervisor>, Accelerator), pyti_vmanager::VmError> {
    let uri = uri.to_string();
    let (hypervisor, accel) = tokio::task::spawn_blocking(move || {
        let hypervisor = Hypervisor::open(&uri)?;
        let accel = hypervisor.accel_for(Accel::Auto)?;
        Ok::<_, pyti_vmanager::VmError>((hypervisor, accel))
    })
    .await
    .map_err(|e| pyti_vmanager::VmError::Worker(e.to_string()))??;
    tracing::info!(accel = ?accel.accel, reason = %accel.reason, "accelerator chosen");
    let accelerator = match accel.accel {
        ResolvedAccel::Kvm => Accelerator::Kvm,
        ResolvedAccel::Tcg => Accelerator::Tcg,
    };
    Ok((hypervisor, accelerator))
}

/// Whether an RPC error means "try again later" (transport) rather than "no".
fn is_transient(error: &ClientError) -> bool {
    !matches!(error, ClientError::Call(_))
}

/// Runs the slave until `shutdown` resolves: then stops claiming, finishes running tasks,
/// delivers their results and removes its VMs.
pub async fn run(
    config: SlaveConfig,
    images: HashMap<String, GuestImage>,
    shutdown: impl Future<Output = ()> + Send,
    events: Arc<dyn Fn(SlaveEvent) + Send + Sync>,
) -> Result<(), SlaveError> {
    let outbox = Outbox::open(config.state_dir.join("outbox"))?;
    let client = Arc::new(
        http_client(
            &config.master_url,
            config.token.as_deref(),
            Duration::from_secs(u64::from(CLAIM_WAIT_SECS) + 30),
        )
        .map_err(|e| SlaveError::Client(e.to_string()))?,
    );
    let (stop_tx, stop_rx) = watch::channel(false);

    let (hypervisor, accelerator) = open_hypervisor(&config.libvirt_uri).await?;
    let mut session_config = SessionConfig::new(config.state_dir.join("io"), config.slots);
    session_config.accelerator = accelerator;
    // The appliance launch and the first boot of every slot are independent (~10-15 s each under
    // TCG): do them at once.
    let images = Arc::new(images);
    tokio::spawn(housekeeping(
        images.clone(),
        config.wheelhouse_cache.clone(),
        stop_rx.clone(),
    ));
    let mut runners: Vec<SlotRunner> = (0..config.slots)
        .map(|index| {
            SlotRunner::new(SlotContext {
                hypervisor: hypervisor.clone(),
                slave: config.name.clone(),
                index: index as u32,
                mode: config.mode,
                state_dir: config.state_dir.join("slots"),
                images: images.clone(),
            })
        })
        .collect();
    let first_recipe = config.recipes.first().cloned();
    let boots = futures::future::join_all(runners.iter_mut().map(|runner| {
        let recipe = first_recipe.clone();
        async move {
            if let Some(recipe) = recipe {
                if let Err(e) = runner.ensure_prepared(&recipe).await {
                    // Not fatal: the slot retries before its first task and reports then.
                    tracing::warn!(slot = runner.index(), "first boot failed: {e}");
                }
            }
        }
    }));
    let (started, _) = tokio::join!(Session::start(session_config), boots);
    let (session, disks) = started?;
    let session = Arc::new(session);
    let acquirer = Arc::new(PackageAcquirer::new(config.wheelhouse_cache.clone()));

    // Results kept from an earlier run go first: registering ends the leases still held under
    // this name (that run is over), after which the master would refuse them as stale.
    deliver_pending(&client, &outbox, &stop_rx).await;
    let registration = SlaveRegistration {
        name: config.name.clone(),
        recipes: config.recipes.iter().map(|r| r.name.clone()).collect(),
        slots: config.slots as u32,
    };
    let reply = retry(&stop_rx, "register", || {
        client.register(registration.clone())
    })
    .await;
    let reply = match reply {
        Some(Ok(reply)) => reply,
        Some(Err(e)) => return Err(SlaveError::Refused(e.to_string())),
        None => return Ok(()),
    };
    if !reply.unknown_recipes.is_empty() {
        tracing::warn!(unknown = ?reply.unknown_recipes, "the master does not know these recipes; they will not be dispatched");
    }
    tracing::info!(slave = %config.name, slots = config.slots, master = %config.master_url, "registered");

    let running = HeldTasks::default();
    let heartbeat = {
        let (client, name, mut stop) = (client.clone(), config.name.clone(), stop_rx.clone());
        let running = running.clone();
        let every = Duration::from_secs(reply.heartbeat_secs.max(1));
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.changed() => break,
                }
                match client.heartbeat(name.clone(), Some(running.held())).await {
                    Ok(reply) if !reply.cancel.is_empty() => {
                        let stopped = running.cancel(&reply.cancel);
                        if stopped > 0 {
                            tracing::warn!(tasks = ?reply.cancel, stopped, "the master cancelled running tasks; stopping their guests");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!("heartbeat failed: {e}"),
                }
            }
        })
    };

    let mut slot_tasks = Vec::new();
    for (mut runner, disk) in runners.into_iter().zip(disks) {
        runner.give_io_disk(session.clone(), disk);
        let worker = SlotWorker {
            runner,
            client: client.clone(),
            outbox: outbox.clone(),
            acquirer: acquirer.clone(),
            slave: config.name.clone(),
            output_limit_bytes: config.output_limit_bytes,
            events: events.clone(),
            running: running.clone(),
        };
        slot_tasks.push(tokio::spawn(worker.serve(stop_rx.clone())));
    }

    shutdown.await;
    tracing::info!("shutting down: no new claims; running tasks finish first");
    let _ = stop_tx.send(true);
    for task in slot_tasks {
        if let Ok(runner) = task.await {
            runner.close().await;
        }
    }
    let _ = heartbeat.await;
    if let Ok(session) = Arc::try_unwrap(session) {
        session.shutdown().await;
    }
    Ok(())
}

/// Calls `call` until it succeeds or fails for a reason other than the transport; `None` when
/// the slave is stopping.
async fn retry<T, F, Fut>(
    stop: &watch::Receiver<bool>,
    what: &str,
    mut call: F,
) -> Option<Result<T, ClientError>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ClientError>>,
{
    let mut pause = RETRY_MIN;
    let mut stop = stop.clone();
    loop {
        if *stop.borrow() {
            return None;
        }
        match call().await {
            Err(e) if is_transient(&e) => {
                tracing::warn!(
                    "{what}: master unreachable ({e}); retrying in {:.1} s",
                    pause.as_secs_f64()
                );
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.changed() => return None,
                }
                pause = (pause * 2).min(RETRY_MAX);
            }
            other => return Some(other),
        }
    }
}

/// Sends every stored report; keeps those the master could not be reached for.
async fn deliver_pending(client: &HttpClient, outbox: &Outbox, stop: &watch::Receiver<bool>) {
    let pending = match outbox.pending().await {
        Ok(pending) => pending,
        Err(e) => {
            tracing::error!("reading the outbox: {e}");
            return;
        }
    };
    for (entry, report) in pending {
        match retry(stop, "report_result", || {
            client.report_result(report.clone())
        })
        .await
        {
            Some(Ok(receipt)) => {
                tracing::info!(
                    task = report.task_id,
                    attempt = report.attempt,
                    duplicate = receipt.duplicate,
                    "delivered a stored result"
                );
                let _ = outbox.remove(&entry).await;
            }
            Some(Err(e)) => {
                // The master refused it for good (stale lease, cancelled task): keep nothing.
                tracing::warn!(
                    task = report.task_id,
                    "the master refused a stored result: {e}"
                );
                let _ = outbox.remove(&entry).await;
            }
            None => return,
        }
    }
}

/// One slot's claim → run → report loop.
struct SlotWorker {
    runner: SlotRunner,
    client: Arc<HttpClient>,
    outbox: Outbox,
    acquirer: Arc<PackageAcquirer>,
    slave: String,
    output_limit_bytes: u64,
    events: Arc<dyn Fn(SlaveEvent) + Send + Sync>,
    running: HeldTasks,
}

impl SlotWorker {
    async fn serve(mut self, stop: watch::Receiver<bool>) -> SlotRunner {
        let request = ClaimRequest {
            slave: self.slave.clone(),
            wait_secs: CLAIM_WAIT_SECS,
        };
        loop {
            let mut stop_changed = stop.clone();
            let claimed = tokio::select! {
                claimed = retry(&stop, "claim", || self.client.claim(request.clone())) => claimed,
                _ = stop_changed.changed() => None,
            };
            let task = match claimed {
                None => break,
                Some(Ok(None)) => continue,
                Some(Ok(Some(task))) => task,
                Some(Err(e)) => {
                    tracing::error!(
                        slot = self.runner.index(),
                        "claim refused: {e}; retrying in {} s",
                        RETRY_MAX.as_secs()
                    );
                    tokio::time::sleep(RETRY_MAX).await;
                    continue;
                }
            };
            let cancel = self.running.start(task.task_id);
            let report = self.run_task(&task, &cancel).await;
            // Still held until the master has the result: its lease must not end meanwhile.
            self.deliver(report, &stop).await;
            self.running.finish(task.task_id);
        }
        self.runner
    }

    /// Acquires the package, runs the cycle, and turns the outcome into the report.
    async fn run_task(&mut self, task: &ClaimedTask, cancel: &CancellationToken) -> ResultReport {
        let slot = self.runner.index();
        tracing::info!(slot, task = task.task_id, attempt = task.attempt, recipe = %task.recipe.name, package = %task.package, "running task");
        let (progress_tx, mut progress_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let forwarder = {
            let (client, events) = (self.client.clone(), self.events.clone());
            let (task_id, attempt, lease_id) = (task.task_id, task.attempt, task.lease_id.clone());
            tokio::spawn(async move {
                while let Some(phase) = progress_rx.recv().await {
                    events(SlaveEvent::Phase {
                        slot,
                        task: task_id,
                        phase: phase.clone(),
                    });
                    let report = ProgressReport {
                        task_id,
                        attempt,
                        lease_id: lease_id.clone(),
                        phase,
                        message: String::new(),
                    };
                    if let Err(e) = client.report_progress(report).await {
                        tracing::debug!("progress report failed: {e}");
                    }
                }
            })
        };
        let _ = progress_tx.send("acquire".to_string());
        let acquired = tokio::select! {
            acquired = self.acquirer.acquire(&task.package, &task.recipe) => Some(acquired),
            _ = cancel.cancelled() => None,
        };
        let outcome = match acquired {
            None => CycleOutcome::Cancelled,
            Some(Err(AcquireError::Package(reason))) => CycleOutcome::PackageError { reason },
            Some(Err(AcquireError::Infrastructure(reason))) => {
                CycleOutcome::Infrastructure { reason }
            }
            Some(Ok(acquired)) => {
                tracing::info!(
                    slot,
                    task = task.task_id,
                    files = acquired.wheelhouse.files.len(),
                    bytes = acquired.wheelhouse.total_bytes,
                    from_cache = acquired.wheelhouse.from_cache,
                    "package acquired"
                );
                // The master checks result.json against the task id; each inject wipes the disk,
                // so an earlier attempt's result can never be read for this one.
                let guest_task_id = task.task_id.to_string();
                let tx = progress_tx.clone();
                let mut progress = move |phase: CyclePhase| {
                    let _ = tx.send(phase.name().to_string());
                };
                let report = self
                    .runner
                    .run(
                        CycleRequest {
                            task_id: &guest_task_id,
                            recipe: &task.recipe,
                            input: &acquired.input,
                            output_limit_bytes: self.output_limit_bytes,
                        },
                        &mut progress,
                        cancel,
                    )
                    .await;
                tracing::info!(slot, task = task.task_id, overhead = ?report.timings.overhead(), timings = ?report.timings, "task finished");
                report.outcome
            }
        };
        drop(progress_tx);
        let _ = forwarder.await;
        ResultReport {
            task_id: task.task_id,
            attempt: task.attempt,
            lease_id: task.lease_id.clone(),
            outcome: report_outcome(outcome),
        }
    }

    /// Stores the report, sends it, and forgets it once acknowledged.
    async fn deliver(&self, report: ResultReport, stop: &watch::Receiver<bool>) {
        let entry = match self.outbox.store(&report).await {
            Ok(entry) => Some(entry),
            Err(e) => {
                tracing::error!("cannot store a result before sending it: {e}");
                None
            }
        };
        // Delivery goes on while stopping: a finished task's result must reach the master.
        let never = watch::channel(false).1;
        let stop = if *stop.borrow() { &never } else { stop };
        match retry(stop, "report_result", || {
            self.client.report_result(report.clone())
        })
        .await
        {
            Some(Ok(_)) | Some(Err(_)) => {
                if let Some(entry) = entry {
                    let _ = self.outbox.remove(&entry).await;
                }
            }
            None => tracing::warn!(
                task = report.task_id,
                "result kept in the outbox; it is delivered at the next start"
            ),
        }
    }
}

/// Maps whose-fault to the raw-data API's outcome.
fn report_outcome(outcome: CycleOutcome) -> ReportOutcome {
    match outcome {
        CycleOutcome::Raw(result) => ReportOutcome::Raw { result },
        CycleOutcome::Timeout { detail } => ReportOutcome::GuestTimeout { detail },
        CycleOutcome::PackageError { reason } => ReportOutcome::PackageError { reason },
        CycleOutcome::Infrastructure { reason } => ReportOutcome::Infrastructure { reason },
        // The master asked for it and records the task as cancelled, not as a failure.
        CycleOutcome::Cancelled => ReportOutcome::Infrastructure {
            reason: "cancelled by the master; the guest was stopped".to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancel_request_reaches_only_the_named_running_tasks() {
        let running = HeldTasks::default();
        let (one, two) = (running.start(1), running.start(2));
        assert_eq!(running.cancel(&[2, 3]), 1, "task 3 is not running here");
        assert!(!one.is_cancelled());
        assert!(two.is_cancelled());
        assert_eq!(running.held(), [1, 2]);
        running.finish(1);
        assert_eq!(running.cancel(&[1]), 0, "a finished task is forgotten");
        assert!(!one.is_cancelled());
        assert_eq!(running.held(), [2], "heartbeats renew only held tasks");
    }
}
