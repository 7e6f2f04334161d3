//! The task cycle of one slot: inject → run in the VM → extract → back to the clean state.
//!
//! One [`SlotRunner`] owns a VM slot and its I/O disk; the libguestfs session is shared by all
//! slots. Every way a task can go wrong ends in a [`CycleOutcome`] that says whose fault it was,
//! and the slot is ready for the next task afterwards (it re-prepares itself if the VM failed).

use crate::task_plan::{guest_deadline, guest_task, PackageArgument, TaskFacts};
use pyti_diskhandler::{HeldDisk, PayloadFile, Session, TaskPayload};
use pyti_vmanager::image::GuestImage;
use pyti_vmanager::{
    BootFiles, CancellationToken, Hypervisor, IoDiskSource, PhaseTimings, SlotConfig, SlotMode,
    TaskOutcome, VmSlot,
};
use pyti_wire::agent_protocol::AgentMessage;
use pyti_wire::raw_data::RawResult;
use pyti_wire::recipe::Recipe;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a task ended, by whose fault.
#[derive(Debug, Clone, PartialEq)]
pub enum CycleOutcome {
    /// The agent's raw data: the master judges pass or fail from it.
    Raw(RawResult),
    /// The guest ran past the task's deadline and was destroyed.
    Timeout { detail: String },
    /// The package or the task's input is at fault (too big, unusable result): not retried.
    PackageError { reason: String },
    /// pyti's machinery failed (VM, appliance, libvirt): retried by the master.
    Infrastructure { reason: String },
    /// The task was cancelled (its job was); the guest, if it ran, was stopped.
    Cancelled,
}

/// A phase of the cycle, reported as progress while it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CyclePhase {
    Inject,
    Run,
    Extract,
}

impl CyclePhase {
    /// The phase's name in progress events and timing tables.
    pub fn name(self) -> &'static str {
        match self {
            CyclePhase::Inject => "inject",
            CyclePhase::Run => "run",
            CyclePhase::Extract => "extract",
        }
    }
}

/// Where one task's time went (host side).
#[derive(Debug, Clone, Default)]
pub struct CycleTimings {
    pub inject: Duration,
    /// Giving the guest the disk until it is done with it (attach, run, detach; boot and
    /// shutdown in cold mode). A warm slot's revert runs during `extract`.
    pub vm: Duration,
    /// Of `vm`: the guest's own time with the task (from the disk being handed over to Done).
    pub guest_run: Duration,
    pub extract: Duration,
    /// Sum of the steps' wall times as the agent measured them.
    pub steps: Duration,
    /// vmanager's own breakdown of `vm` (boot, attach, detach, revert), when the VM ran.
    pub vm_phases: Option<PhaseTimings>,
}

impl CycleTimings {
    /// Host time not spent running the steps: what pyti itself costs per task.
    pub fn overhead(&self) -> Duration {
        (self.inject + self.vm + self.extract).saturating_sub(self.steps)
    }
}

/// A finished cycle.
#[derive(Debug, Clone)]
pub struct CycleReport {
    pub outcome: CycleOutcome,
    pub timings: CycleTimings,
}

/// The package as it goes onto the I/O disk.
#[derive(Debug, Clone)]
pub struct TaskInput {
    pub package: PackageArgument,
    /// Normalised distribution name.
    pub dist: String,
    /// Files for `package/` (the package under test, if it is a file).
    pub package_files: Vec<PayloadFile>,
    /// Files for `wheelhouse/`.
    pub wheelhouse_files: Vec<PayloadFile>,
}

/// One task for [`SlotRunner::run`].
#[derive(Debug, Clone, Copy)]
pub struct CycleRequest<'a> {
    /// The id the guest's `result.json` must carry.
    pub task_id: &'a str,
    pub recipe: &'a Recipe,
    pub input: &'a TaskInput,
    /// Per-stream output cap of each step.
    pub output_limit_bytes: u64,
}

/// Where a slot's VM lives and how it behaves; the recipe it boots is chosen per task.
#[derive(Clone)]
pub struct SlotContext {
    pub hypervisor: Arc<Hypervisor>,
    /// The slave's name (domains are `pyti-<slave>-<index>`).
    pub slave: String,
    pub index: u32,
    pub mode: SlotMode,
    /// Parent of the slot's own directory (overlays, channel socket, console log).
    pub state_dir: PathBuf,
    /// Built images, by recipe name.
    pub images: Arc<HashMap<String, GuestImage>>,
}

/// A VM slot bound to the recipe whose image it boots.
struct BoundSlot {
    recipe: String,
    slot: VmSlot,
    /// Whether the slot must `prepare` before its next task (first use, or after a VM error).
    needs_prepare: bool,
}

/// One VM slot with its I/O disk.
pub struct SlotRunner {
    context: SlotContext,
    /// The libguestfs session and this slot's disk while the appliance holds it; `None` until
    /// [`SlotRunner::give_io_disk`] (the slot can boot before the appliance is up), or if a
    /// previous extract lost the disk.
    io: Option<(Arc<Session>, Option<HeldDisk>)>,
    bound: Option<BoundSlot>,
}

impl SlotRunner {
    /// A runner for slot `context.index`; it needs its I/O disk before it can run tasks.
    pub fn new(context: SlotContext) -> SlotRunner {
        SlotRunner {
            context,
            io: None,
            bound: None,
        }
    }

    /// Hands the slot the I/O disk the session made for it.
    pub fn give_io_disk(&mut self, session: Arc<Session>, disk: HeldDisk) {
        self.io = Some((session, Some(disk)));
    }

    /// The slot's index.
    pub fn index(&self) -> u32 {
        self.context.index
    }

    /// Opens (or re-opens, for another recipe) the VM slot and establishes its clean state.
    pub async fn ensure_prepared(&mut self, recipe: &Recipe) -> Result<(), String> {
        if self.bound.as_ref().is_some_and(|b| b.recipe != recipe.name) {
            if let Some(old) = self.bound.take() {
                if let Err(e) = old.slot.undefine().await {
                    tracing::warn!(
                        "removing the slot's domain for recipe `{}`: {e}",
                        old.recipe
                    );
                }
            }
        }
        if self.bound.is_none() {
            let image =
                self.context.images.get(&recipe.name).ok_or_else(|| {
                    format!("this slave has no image for recipe `{}`", recipe.name)
                })?;
            let mut config = SlotConfig::new(
                &self.context.slave,
                self.context.index,
                recipe,
                BootFiles {
                    kernel: image.kernel.clone(),
                    initrd: Some(image.initrd.clone()),
                    system_disk: image.system_disk.clone(),
                    kernel_cmdline: image.kernel_cmdline.clone(),
                },
                self.context.state_dir.clone(),
            );
            config.mode = self.context.mode;
            // The cycle reverts while it extracts the results (see `run_phases`).
            config.revert_after_task = false;
            let slot = VmSlot::open(self.context.hypervisor.clone(), config)
                .await
                .map_err(|e| format!("opening VM slot {}: {e}", self.context.index))?;
            self.bound = Some(BoundSlot {
                recipe: recipe.name.clone(),
                slot,
                needs_prepare: true,
            });
        }
        let bound = self.bound.as_mut().expect("bound just above");
        if bound.needs_prepare {
            let report = bound
                .slot
                .prepare()
                .await
                .map_err(|e| format!("preparing VM slot {}: {e}", bound.slot.name()))?;
            if let AgentMessage::Ready {
                prepared: false,
                detail,
                ..
            } = &report.ready
            {
                return Err(format!(
                    "the recipe's prepare steps failed in slot {}: {detail}",
                    bound.slot.name()
                ));
            }
            tracing::info!(slot = %bound.slot.name(), boot_to_ready = ?report.boot_to_ready, "slot ready");
            bound.needs_prepare = false;
        }
        Ok(())
    }

    /// Removes the slot's domain (slave shutdown).
    pub async fn close(mut self) {
        if let Some(bound) = self.bound.take() {
            if let Err(e) = bound.slot.undefine().await {
                tracing::warn!("removing slot {}: {e}", self.context.index);
            }
        }
    }

    /// Runs one task of `recipe` with `input`, reporting each phase as it starts. When `cancel`
    /// fires, a running guest is destroyed at once and the outcome is
    /// [`CycleOutcome::Cancelled`]; the slot is clean again for the next task.
    pub async fn run(
        &mut self,
        request: CycleRequest<'_>,
        progress: &mut (dyn FnMut(CyclePhase) + Send),
        cancel: &CancellationToken,
    ) -> CycleReport {
        let mut timings = CycleTimings::default();
        let outcome = self
            .run_phases(request, progress, cancel, &mut timings)
            .await;
        if let CycleOutcome::Raw(result) = &outcome {
            timings.steps =
                Duration::from_secs_f64(result.steps.iter().map(|s| s.wall_secs).sum::<f64>());
        }
        CycleReport { outcome, timings }
    }

    async fn run_phases(
        &mut self,
        request: CycleRequest<'_>,
        progress: &mut (dyn FnMut(CyclePhase) + Send),
        cancel: &CancellationToken,
        timings: &mut CycleTimings,
    ) -> CycleOutcome {
        let CycleRequest {
            task_id,
            recipe,
            input,
            output_limit_bytes,
        } = request;
        let facts = TaskFacts {
            task_id: task_id.to_string(),
            package: input.package.clone(),
            dist: input.dist.clone(),
            output_limit_bytes,
            host_time_unix: unix_now(),
        };
        let task = match guest_task(recipe, &facts) {
            Ok(task) => task,
            Err(e) => {
                return CycleOutcome::PackageError {
                    reason: e.to_string(),
                }
            }
        };
        let deadline = guest_deadline(&task);
        if let Err(reason) = self.ensure_prepared(recipe).await {
            return CycleOutcome::Infrastructure { reason };
        }
        if cancel.is_cancelled() {
            return CycleOutcome::Cancelled;
        }
        let Some((session, Some(held))) = self.io.as_mut().map(|(s, d)| (s.clone(), d.take()))
        else {
            return CycleOutcome::Infrastructure {
                reason: format!("slot {} has no I/O disk", self.context.index),
            };
        };
        let bound = self.bound.as_mut().expect("prepared above");

        progress(CyclePhase::Inject);
        let started = Instant::now();
        let payload = TaskPayload {
            task,
            package: input.package_files.clone(),
            wheelhouse: input.wheelhouse_files.clone(),
        };
        let released = match session.inject(held, &payload).await {
            Ok(released) => released,
            Err(failure) => {
                self.give_io_disk(session, failure.disk);
                let reason = failure.error.to_string();
                return if failure.error.is_infrastructure() {
                    CycleOutcome::Infrastructure { reason }
                } else {
                    CycleOutcome::PackageError { reason }
                };
            }
        };
        timings.inject = started.elapsed();

        progress(CyclePhase::Run);
        let started = Instant::now();
        let socket = released.io_disk().nbd_socket.clone();
        let vm = bound
            .slot
            .run_task_until(task_id, IoDiskSource::NbdUnix(socket), deadline, cancel)
            .await;
        timings.vm = started.elapsed();

        // The disk comes back whatever the VM did: extract re-holds it. The guest is done with
        // the disk, so the warm slot returns to its snapshot meanwhile (VM and appliance are
        // separate machines; the next task finds the slot ready).
        progress(CyclePhase::Extract);
        let extract = async {
            let started = Instant::now();
            let extraction = session.extract(released).await;
            (extraction, started.elapsed())
        };
        let ((extraction, extract_took), restored) = tokio::join!(extract, bound.slot.restore());
        timings.extract = extract_took;
        self.give_io_disk(session, extraction.disk);
        let bound = self.bound.as_mut().expect("prepared above");

        let report = match vm {
            Ok(report) => report,
            Err(e) => {
                bound.needs_prepare = true;
                return CycleOutcome::Infrastructure {
                    reason: format!("VM slot {}: {e}", bound.slot.name()),
                };
            }
        };
        timings.guest_run = report.timings.run;
        let mut vm_phases = report.timings.clone();
        if let Some((path, took)) = restored {
            vm_phases.revert = Some(took);
            vm_phases.revert_path = Some(path);
        }
        timings.vm_phases = Some(vm_phases);
        match report.outcome {
            TaskOutcome::Done(_) => match extraction.outcome {
                Ok(output) => CycleOutcome::Raw(output.result),
                Err(e) if e.is_infrastructure() => CycleOutcome::Infrastructure { reason: e.to_string() },
                Err(e) => CycleOutcome::PackageError {
                    reason: format!("the guest's output is unusable: {e}"),
                },
            },
            TaskOutcome::Overrun { deadline } => CycleOutcome::Timeout {
                detail: format!(
                    "the guest did not finish within {} s (sum of the step timeouts plus the agent's allowance); it was destroyed",
                    deadline.as_secs()
                ),
            },
            TaskOutcome::AgentFailed(message) => CycleOutcome::Infrastructure {
                reason: format!("the agent could not run the task: {message:?}"),
            },
            TaskOutcome::GuestDied { detail } => {
                bound.needs_prepare = true;
                CycleOutcome::Infrastructure {
                    reason: format!("the guest stopped before finishing: {detail}"),
                }
            }
            TaskOutcome::DiskUnnoticed { plugs, waited } => {
                bound.needs_prepare = true;
                CycleOutcome::Infrastructure {
                    reason: format!(
                        "the guest never noticed its I/O disk (plugged in {plugs} times, {} s each); the slot is prepared again",
                        waited.as_secs()
                    ),
                }
            }
            TaskOutcome::Cancelled => CycleOutcome::Cancelled,
        }
    }
}

/// Seconds since the Unix epoch (the guest steps its clock to at least this).
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
