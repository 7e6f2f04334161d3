//! The thread that owns the libguestfs handle and runs every blocking call.
//!
//! `guestfs::Handle` is not `Send`. Rather than assert it is (libguestfs >= 1.38 does lock each
//! handle, but the crate's error path reads per-handle "last error" state that another thread's
//! call could overwrite between the call and the read), the handle is created, used and closed on
//! this one thread. The async session talks to it over a channel; a call that blocks for seconds
//! (launch) blocks only this thread, never the executor.

use crate::appliance::{Appliance, LaunchSettings};
use crate::config::{ExtractLimits, InjectMethod};
use crate::extract::{self, ExtractError, GuestOutput};
use crate::infrastructure::InfrastructureError;
use crate::inject::{self, InjectError, InjectSizing};
use crate::io_disk::{self, IoDisk};
use crate::nbd_export::NbdExport;
use crate::payload::TaskPayload;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use tokio::sync::oneshot;

/// A request to the worker; each carries the channel its answer goes back on.
pub(crate) enum Command {
    /// Launch the appliance now (at session start) rather than on the first operation.
    Launch {
        reply: oneshot::Sender<Result<(), InfrastructureError>>,
    },
    Inject {
        slot: usize,
        payload: Box<TaskPayload>,
        reply: oneshot::Sender<Result<(), InjectError>>,
    },
    Extract {
        slot: usize,
        task_id: String,
        output_limit: u64,
        reply: oneshot::Sender<Result<GuestOutput, ExtractError>>,
    },
}

/// Counters the session reads without asking the worker.
#[derive(Debug, Default)]
pub(crate) struct WorkerStats {
    /// Successful appliance launches so far (a failed KVM attempt before TCG is not counted).
    pub(crate) launches: AtomicU64,
    /// QEMU pid of the current appliance (0: none).
    pub(crate) qemu_pid: AtomicI32,
}

/// Everything the worker needs, built on the session's side (all `Send`).
pub(crate) struct WorkerSetup {
    pub(crate) disks: Vec<IoDisk>,
    pub(crate) launch: LaunchSettings,
    pub(crate) sizing: InjectSizing,
    pub(crate) limits: ExtractLimits,
    pub(crate) method: InjectMethod,
    pub(crate) per_operation: bool,
    pub(crate) stats: Arc<WorkerStats>,
}

impl WorkerSetup {
    /// Runs the worker on the calling thread until the session drops its sender.
    pub(crate) fn run(self, commands: Receiver<Command>) {
        let WorkerSetup {
            disks,
            launch,
            sizing,
            limits,
            method,
            per_operation,
            stats,
        } = self;
        Worker {
            exports: disks.iter().map(|_| None).collect(),
            images_created: false,
            disks,
            launch,
            sizing,
            limits,
            method,
            per_operation,
            stats,
            appliance: None,
        }
        .run(commands)
    }
}

/// State owned by the worker thread; the appliance (not `Send`) is created here. nbdkit is
/// started here too: it runs with `--exit-with-parent`, which Linux ties to the parent *thread*,
/// so it must be spawned by this long-lived thread (a pooled blocking thread would take it down
/// when it retires).
struct Worker {
    disks: Vec<IoDisk>,
    images_created: bool,
    exports: Vec<Option<NbdExport>>,
    launch: LaunchSettings,
    sizing: InjectSizing,
    limits: ExtractLimits,
    method: InjectMethod,
    /// Discard the appliance before every operation (the naive cycle of benchmarks).
    per_operation: bool,
    stats: Arc<WorkerStats>,
    appliance: Option<Appliance>,
}

impl Worker {
    /// Serves commands until the session drops its sender, then closes the appliance (stopping
    /// QEMU) before the exports, and removes the images.
    fn run(mut self, commands: Receiver<Command>) {
        while let Ok(command) = commands.recv() {
            match command {
                Command::Launch { reply } => {
                    let _ = reply.send(self.ensure_appliance().map(|_| ()));
                }
                Command::Inject {
                    slot,
                    payload,
                    reply,
                } => {
                    if self.per_operation {
                        self.drop_appliance();
                    }
                    let outcome = self.guarded("inject", |worker| worker.inject(slot, &payload));
                    let _ = reply.send(outcome);
                }
                Command::Extract {
                    slot,
                    task_id,
                    output_limit,
                    reply,
                } => {
                    if self.per_operation {
                        self.drop_appliance();
                    }
                    let limits = self.limits;
                    // The naive cycle of benchmarks reads through the appliance, as a naive tool
                    // would.
                    let region = match self.disks.get(slot) {
                        Some(disk) if !self.per_operation => extract::from_region(
                            &disk.image_path,
                            disk.size,
                            &task_id,
                            output_limit,
                            limits,
                        ),
                        _ => Ok(None),
                    };
                    let outcome = match region {
                        Ok(Some(output)) => Ok(output),
                        Err(e) => Err(e),
                        Ok(None) => self.guarded("extract", |worker| {
                            let appliance = worker.ensure_appliance()?;
                            extract::from_filesystem(
                                appliance,
                                slot,
                                &task_id,
                                output_limit,
                                limits,
                            )
                        }),
                    };
                    let _ = reply.send(outcome);
                }
            }
        }
        self.drop_appliance();
        self.exports.clear();
        for disk in &self.disks {
            let _ = std::fs::remove_file(&disk.image_path);
        }
    }

    fn inject(&mut self, slot: usize, payload: &TaskPayload) -> Result<(), InjectError> {
        let checked = payload.check()?;
        let needed = inject::precheck(&checked, self.sizing)?;
        let sizing = self.sizing;
        match self.method {
            InjectMethod::HostMkfs => {
                self.ensure_exports()?;
                inject::inject_on_host(&self.disks[slot], &checked, needed, sizing)
            }
            InjectMethod::Appliance => {
                let appliance = self.ensure_appliance()?;
                inject::inject_through_appliance(appliance, slot, &checked, needed, sizing)
            }
        }
    }

    /// Runs one operation; afterwards makes sure nothing is left mounted (or discards the
    /// appliance), and turns a panic inside the bindings into an infrastructure failure.
    fn guarded<T, E: From<InfrastructureError>>(
        &mut self,
        during: &'static str,
        operation: impl FnOnce(&mut Worker) -> Result<T, E>,
    ) -> Result<T, E> {
        let outcome = catch_unwind(AssertUnwindSafe(|| operation(self)));
        let outcome = match outcome {
            Ok(result) => result,
            Err(_) => {
                tracing::error!(
                    during,
                    "libguestfs bindings panicked; discarding the appliance"
                );
                self.drop_appliance();
                return Err(InfrastructureError::Guestfs {
                    during,
                    detail: "the libguestfs bindings panicked".into(),
                }
                .into());
            }
        };
        let clean = self.appliance.as_ref().is_none_or(|appliance| {
            let g = appliance.handle();
            match g.mounts() {
                Ok(mounts) if mounts.is_empty() => true,
                Ok(_) => g.umount_all().is_ok(),
                Err(_) => false,
            }
        });
        if !clean {
            tracing::warn!(
                during,
                "appliance left a filesystem mounted or stopped answering; discarding it"
            );
            self.drop_appliance();
        }
        outcome
    }

    fn drop_appliance(&mut self) {
        self.appliance = None;
        self.stats.qemu_pid.store(0, Ordering::SeqCst);
    }

    /// Creates the images on first use and (re)starts any nbdkit that is not running; a restart
    /// invalidates the appliance's connection to it, so the appliance is relaunched next.
    fn ensure_exports(&mut self) -> Result<(), InfrastructureError> {
        if !self.images_created {
            for disk in &self.disks {
                io_disk::create_image(&disk.image_path, disk.size)?;
            }
            self.images_created = true;
        }
        let mut restarted = false;
        for (disk, export) in self.disks.iter().zip(self.exports.iter_mut()) {
            let running = export.as_mut().is_some_and(NbdExport::is_running);
            if !running {
                if export.is_some() {
                    tracing::warn!(
                        slot = disk.slot,
                        "nbdkit exited; restarting it and the appliance"
                    );
                }
                *export = Some(NbdExport::start(&disk.image_path, &disk.nbd_socket)?);
                restarted = true;
            }
        }
        if restarted {
            self.drop_appliance();
        }
        Ok(())
    }

    /// The running appliance, relaunched if it died (or an export had to be restarted).
    fn ensure_appliance(&mut self) -> Result<&Appliance, InfrastructureError> {
        self.ensure_exports()?;
        let alive = self.appliance.as_ref().is_some_and(Appliance::is_alive);
        if !alive {
            if self.appliance.is_some() {
                tracing::warn!("libguestfs appliance died; relaunching");
            }
            self.drop_appliance();
            let sockets: Vec<PathBuf> = self.disks.iter().map(|d| d.nbd_socket.clone()).collect();
            let mut failure = None;
            let mut launched = None;
            for accelerator in self.launch.accelerator.candidates() {
                let started = std::time::Instant::now();
                let settings = LaunchSettings {
                    accelerator,
                    ..self.launch.clone()
                };
                match Appliance::launch(&sockets, &settings) {
                    Ok(appliance) => {
                        self.stats.launches.fetch_add(1, Ordering::SeqCst);
                        tracing::info!(
                            secs = started.elapsed().as_secs_f64(),
                            ?accelerator,
                            "libguestfs appliance launched"
                        );
                        // Later relaunches go straight to what worked.
                        self.launch.accelerator = accelerator;
                        launched = Some(appliance);
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(?accelerator, error = %e, "appliance launch failed");
                        failure = Some(e);
                    }
                }
            }
            let appliance = match (launched, failure) {
                (Some(appliance), _) => appliance,
                (None, Some(e)) => return Err(e),
                (None, None) => {
                    return Err(InfrastructureError::Launch {
                        detail: "no accelerator to try".into(),
                    })
                }
            };
            self.stats
                .qemu_pid
                .store(appliance.qemu_pid().unwrap_or(0), Ordering::SeqCst);
            self.appliance = Some(appliance);
        }
        self.appliance
            .as_ref()
            .ok_or(InfrastructureError::SessionClosed)
    }
}
