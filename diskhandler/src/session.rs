//! The async face of the diskhandler: one appliance for the slave's lifetime, shared by all slots.

use crate::appliance::{self, LaunchSettings};
use crate::config::SessionConfig;
use crate::extract::{ExtractError, GuestOutput};
use crate::infrastructure::InfrastructureError;
use crate::inject::{InjectError, InjectSizing};
use crate::io_disk::{HeldDisk, IoDisk, ReleasedDisk};
use crate::payload::TaskPayload;
use crate::worker::{Command, WorkerSetup, WorkerStats};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// After the watchdog kills a hung appliance, how long the worker gets to notice.
const KILL_GRACE: Duration = Duration::from_secs(30);

/// One long-lived libguestfs appliance with one NBD-exported I/O disk per VM slot.
///
/// Cheap to share (`&Session` from several tasks); operations on different slots queue on the
/// one appliance, each taking well under a second.
pub struct Session {
    commands: Mutex<mpsc::Sender<Command>>,
    disks: Vec<IoDisk>,
    config: SessionConfig,
    stats: Arc<WorkerStats>,
    worker: Option<std::thread::JoinHandle<()>>,
}

/// An inject that did not happen: the disk is still held (do not start the VM).
#[derive(Debug)]
pub struct InjectFailure {
    pub disk: HeldDisk,
    pub error: InjectError,
}

/// The end of an extract: the disk is held again whatever the outcome.
#[derive(Debug)]
pub struct Extraction {
    pub disk: HeldDisk,
    pub outcome: Result<GuestOutput, ExtractError>,
}

impl Session {
    /// Creates and formats the I/O disks, exports them over NBD and launches the appliance (the
    /// ~9 s cost under TCG, paid once), all on the session's own thread. Returns the session and each slot's disk, held.
    pub async fn start(
        config: SessionConfig,
    ) -> Result<(Session, Vec<HeldDisk>), InfrastructureError> {
        config.validate().map_err(InfrastructureError::Config)?;
        std::fs::create_dir_all(&config.work_dir).map_err(|source| {
            InfrastructureError::CreateImage {
                path: config.work_dir.clone(),
                source,
            }
        })?;
        let disks: Vec<IoDisk> = (0..config.slots)
            .map(|slot| IoDisk {
                slot,
                image_path: config.work_dir.join(format!("io-slot-{slot}.img")),
                nbd_socket: config.work_dir.join(format!("io-slot-{slot}.sock")),
                size: config.io_disk_bytes,
            })
            .collect();
        let stats = Arc::new(WorkerStats::default());
        let worker = WorkerSetup {
            disks: disks.clone(),
            launch: LaunchSettings {
                accelerator: config.accelerator,
                memory_mib: config.appliance_memory_mib,
            },
            sizing: InjectSizing {
                disk_bytes: config.io_disk_bytes,
                max_disk_bytes: config.max_io_disk_bytes,
                output_reserve: config.output_reserve_bytes,
            },
            limits: config.extract_limits,
            method: config.inject_method,
            per_operation: config.appliance_per_operation,
            stats: Arc::clone(&stats),
        };
        let (sender, receiver) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("pyti-guestfs".into())
            .spawn(move || worker.run(receiver))
            .map_err(|e| InfrastructureError::Launch {
                detail: format!("cannot start the guestfs thread: {e}"),
            })?;
        let session = Session {
            commands: Mutex::new(sender),
            disks: disks.clone(),
            config,
            stats,
            worker: Some(thread),
        };
        let timeout = session.config.launch_timeout;
        session
            .call("launch", timeout, |reply| Command::Launch { reply })
            .await
            .and_then(|launched| launched)?;
        let held = disks.into_iter().map(|disk| HeldDisk { disk }).collect();
        Ok((session, held))
    }

    /// Every slot's I/O disk (for vmanager: the NBD socket of each).
    pub fn io_disks(&self) -> &[IoDisk] {
        &self.disks
    }

    /// Successful appliance launches so far (1 after start; more only after the appliance died).
    pub fn launch_count(&self) -> u64 {
        self.stats.launches.load(Ordering::SeqCst)
    }

    /// QEMU process id of the current appliance, if known (diagnostics and tests).
    pub fn appliance_pid(&self) -> Option<i32> {
        Some(self.stats.qemu_pid.load(Ordering::SeqCst)).filter(|pid| *pid > 0)
    }

    /// Checks the payload fits, wipes the slot and writes the payload (see
    /// [`crate::config::InjectMethod`]); the returned disk may be given to the guest. With the
    /// appliance method, relaunches the appliance first if it died.
    pub async fn inject(
        &self,
        disk: HeldDisk,
        payload: &TaskPayload,
    ) -> Result<ReleasedDisk, InjectFailure> {
        let slot = disk.disk.slot;
        if self.disks.get(slot) != Some(&disk.disk) {
            return Err(InjectFailure {
                disk,
                error: InjectError::ForeignDisk { slot },
            });
        }
        let payload_box = Box::new(payload.clone());
        let outcome = self
            .call("inject", self.operation_timeout(), |reply| {
                Command::Inject {
                    slot,
                    payload: payload_box,
                    reply,
                }
            })
            .await;
        match outcome.map_err(InjectError::from).and_then(|r| r) {
            Ok(()) => Ok(ReleasedDisk {
                disk: disk.disk,
                task_id: payload.task.task_id.clone(),
                output_limit_bytes: payload.task.output_limit_bytes,
            }),
            Err(error) => Err(InjectFailure { disk, error }),
        }
    }

    /// Takes the disk back from the guest (call once the guest is done with it) and reads its
    /// result and artifacts, checked against the limits.
    pub async fn extract(&self, disk: ReleasedDisk) -> Extraction {
        let ReleasedDisk {
            disk,
            task_id,
            output_limit_bytes,
        } = disk;
        let slot = disk.slot;
        let outcome = self
            .call("extract", self.operation_timeout(), |reply| {
                Command::Extract {
                    slot,
                    task_id,
                    output_limit: output_limit_bytes,
                    reply,
                }
            })
            .await;
        Extraction {
            disk: HeldDisk { disk },
            outcome: outcome.map_err(ExtractError::from).and_then(|r| r),
        }
    }

    /// Stops the appliance and nbdkit and removes the images, waiting for it to finish.
    pub async fn shutdown(mut self) {
        let worker = self.worker.take();
        drop(self);
        if let Some(worker) = worker {
            let _ = tokio::task::spawn_blocking(move || worker.join()).await;
        }
    }

    /// An operation that must relaunch a dead appliance first gets the launch time on top.
    fn operation_timeout(&self) -> Duration {
        let alive = self.appliance_pid().is_some_and(appliance::process_running);
        if alive && !self.config.appliance_per_operation {
            self.config.operation_timeout
        } else {
            self.config.operation_timeout + self.config.launch_timeout
        }
    }

    /// Sends a command and waits for its answer; if none comes in `timeout`, kills the
    /// appliance's QEMU (the blocked call then fails) so the slave never hangs.
    async fn call<T>(
        &self,
        during: &'static str,
        timeout: Duration,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, InfrastructureError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .lock()
            .map_err(|_| InfrastructureError::SessionClosed)?
            .send(command(reply))
            .map_err(|_| InfrastructureError::SessionClosed)?;
        let mut answer = answer;
        match tokio::time::timeout(timeout, &mut answer).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(InfrastructureError::SessionClosed),
            Err(_) => {
                for disk in &self.disks {
                    for pid in appliance::appliance_processes(&disk.nbd_socket) {
                        tracing::error!(pid, during, "appliance hung; killing its QEMU");
                        // SAFETY: kill(2) has no memory-safety preconditions.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
                let _ = tokio::time::timeout(KILL_GRACE, answer).await;
                Err(InfrastructureError::Hung {
                    during,
                    secs: timeout.as_secs(),
                })
            }
        }
    }
}
