//! A VM slot: one libvirt domain that runs tasks one after another, each from a clean state.
//!
//! Cold: `prepare` boots the guest once on an overlay over the image, waits for `Ready` (the
//! agent ran the recipe's prepare steps and synced) and stops it: that overlay is the clean base.
//! Each task boots a fresh overlay over it with the I/O disk present at boot.
//!
//! Warm (default): `prepare` boots the guest, waits for `Ready` and snapshots the running guest
//! (memory included, I/O disk never). Each task hot-plugs the I/O disk into that guest, waits
//! for `Done`, detaches the disk and reverts in place, so QEMU stays alive between tasks.
//!
//! Every wait has a deadline; a guest that overruns it is destroyed, never left running. All
//! libvirt calls run on the blocking pool.

use crate::accel::AccelDecision;
use crate::agent_channel::{AgentChannel, ChannelEvent};
use crate::blocking::blocking;
use crate::domain_xml::DomainSpec;
use crate::hypervisor::Hypervisor;
use crate::io_disk::IoDiskSource;
use crate::overlay::{create_overlay, remove_if_present};
use crate::recovery::{clean_leftovers, Recovered};
use crate::slot_config::{SlotConfig, SlotMode};
use crate::slot_domain::SlotDomain;
use crate::slot_paths::SlotPaths;
use crate::task_outcome::{PhaseTimings, TaskOutcome, TaskReport};
use crate::warm_snapshot::{self, RevertPath};
use crate::VmError;
use pyti_wire::agent_protocol::AgentMessage;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How often a wait checks that the guest is still alive when the agent is silent.
const STATE_POLL: Duration = Duration::from_millis(500);
/// How long QEMU gets to create the channel socket after libvirt reports it started.
const CHANNEL_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Console bytes quoted when a guest dies (the end of the log says why).
const CONSOLE_TAIL_BYTES: u64 = 1024;
/// Plugs of one task's I/O disk before a warm slot gives up on the guest noticing it.
const IO_DISK_PLUGS: u32 = 3;
/// Invalid channel lines logged per wait; a guest spamming garbage must not flood the log.
const MAX_LOGGED_INVALID_LINES: usize = 5;

/// Where the slot is between tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    /// No clean state yet: call `prepare`.
    Unprepared,
    /// Cold: the prepared overlay exists; no QEMU between tasks.
    ColdClean,
    /// Warm: QEMU runs the guest at the warm snapshot, no I/O disk.
    WarmClean,
    /// Warm: the snapshot exists but the guest is not at it (used, destroyed or crashed).
    WarmNeedsRevert,
}

/// Whether the guest noticed a task's hot-plugged I/O disk.
enum Noticed {
    /// The agent started the task.
    Started,
    /// The wait ended before `Started`: the agent ended the task at once (`Done` or `Failed`),
    /// or the deadline passed, the guest died or the task was cancelled.
    Ended(Waited),
    /// Every plug went unnoticed; the guest was destroyed.
    Never(TaskOutcome),
}

/// Whether `message` ends task `task_id`: its `Done`, or a `Failed` for it (or for no task, when
/// the agent could not even read which task it was given).
fn ends_task(message: &AgentMessage, task_id: &str) -> bool {
    match message {
        AgentMessage::Done { task_id: id } => id == task_id,
        AgentMessage::Failed { task_id: id, .. } => id.as_deref().is_none_or(|id| id == task_id),
        AgentMessage::Ready { .. } | AgentMessage::Started { .. } => false,
    }
}

/// What a wait for an agent message ended with.
enum Waited {
    Message(AgentMessage),
    TimedOut,
    GuestGone(String),
    Cancelled,
}

/// Timings of `prepare`.
#[derive(Debug, Clone)]
pub struct PrepareReport {
    /// Starting QEMU until the agent's `Ready` (prepare steps included).
    pub boot_to_ready: Duration,
    /// Warm: taking the memory snapshot.
    pub snapshot: Option<Duration>,
    /// The agent's `Ready` message.
    pub ready: AgentMessage,
}

/// One VM slot (see the module documentation).
#[derive(Debug)]
pub struct VmSlot {
    hypervisor: Arc<Hypervisor>,
    config: SlotConfig,
    name: String,
    paths: SlotPaths,
    accel: AccelDecision,
    domain: Option<SlotDomain>,
    channel: Option<AgentChannel>,
    /// libvirt's id of the QEMU process `channel` is connected to.
    channel_qemu: Option<u32>,
    state: SlotState,
    recovered: Recovered,
    /// When the agent last said `Ready` (cold tasks time their boot with it).
    last_ready: Option<Instant>,
}

impl VmSlot {
    /// Opens slot `pyti-<slave>-<slot>`: decides the accelerator (probing once per connection)
    /// and cleans what an earlier run of this same slot left behind (domain, snapshot, overlays).
    pub async fn open(hypervisor: Arc<Hypervisor>, config: SlotConfig) -> Result<VmSlot, VmError> {
        let name = config.domain_name().map_err(|detail| VmError::BadName {
            name: config.slave.clone(),
            detail,
        })?;
        let paths = SlotPaths::new(&config.state_dir, &name);
        let (accel, recovered) = {
            let hypervisor = hypervisor.clone();
            let (name, paths, requested) = (name.clone(), paths.clone(), config.accel);
            blocking(move || {
                let accel = hypervisor.accel_for(requested)?;
                let recovered = clean_leftovers(hypervisor.connect(), &name, &paths)?;
                std::fs::create_dir_all(&paths.dir)
                    .map_err(VmError::io("cannot create slot directory", &paths.dir))?;
                Ok((accel, recovered))
            })
            .await?
        };
        Ok(VmSlot {
            hypervisor,
            config,
            name,
            paths,
            accel,
            domain: None,
            channel: None,
            channel_qemu: None,
            state: SlotState::Unprepared,
            recovered,
            last_ready: None,
        })
    }

    /// The libvirt domain name, `pyti-<slave>-<slot>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The accelerator this slot's guests use, and why.
    pub fn accel(&self) -> &AccelDecision {
        &self.accel
    }

    /// This slot's files (console log, overlays, channel socket).
    pub fn paths(&self) -> &SlotPaths {
        &self.paths
    }

    /// Cold or warm.
    pub fn mode(&self) -> SlotMode {
        self.config.mode
    }

    /// What `open` cleaned up from an earlier run.
    pub fn recovered(&self) -> &Recovered {
        &self.recovered
    }

    /// Establishes the slot's clean state: boots the guest once, waits for `Ready`, then keeps
    /// the stopped disk (cold) or snapshots the running guest (warm).
    pub async fn prepare(&mut self) -> Result<PrepareReport, VmError> {
        self.destroy().await?;
        let disk = match self.config.mode {
            SlotMode::Cold => self.paths.prepared_overlay.clone(),
            SlotMode::Warm => self.paths.warm_overlay.clone(),
        };
        let base = self.config.boot.system_disk.clone();
        {
            let disk = disk.clone();
            blocking(move || create_overlay(&base, &disk)).await?;
        }
        let started = Instant::now();
        self.start(&disk, None).await?;
        let ready = self.wait_ready(self.config.ready_timeout).await?;
        let boot_to_ready = started.elapsed();
        let snapshot = match self.config.mode {
            SlotMode::Cold => {
                self.destroy().await?;
                self.state = SlotState::ColdClean;
                None
            }
            SlotMode::Warm => {
                let domain = self.domain()?.clone();
                let t = Instant::now();
                blocking(move || warm_snapshot::take(&domain)).await?;
                self.state = SlotState::WarmClean;
                Some(t.elapsed())
            }
        };
        tracing::info!(domain = %self.name, mode = ?self.config.mode, ?boot_to_ready, ?snapshot, "slot prepared");
        Ok(PrepareReport {
            boot_to_ready,
            snapshot,
            ready,
        })
    }

    /// Runs one task: gives the guest the I/O disk, waits up to `deadline` for the agent's
    /// `Done` for `task_id`, and returns the slot to its clean state. The deadline runs from
    /// the moment the guest gets the disk (in cold mode that includes the boot).
    pub async fn run_task(
        &mut self,
        task_id: &str,
        io_disk: IoDiskSource,
        deadline: Duration,
    ) -> Result<TaskReport, VmError> {
        self.run_task_until(task_id, io_disk, deadline, &CancellationToken::new())
            .await
    }

    /// [`VmSlot::run_task`] that also stops when `cancel` is cancelled: the guest is destroyed
    /// at once (its work is discarded), the outcome is [`TaskOutcome::Cancelled`], and the slot
    /// is back at its clean state for the next task.
    pub async fn run_task_until(
        &mut self,
        task_id: &str,
        io_disk: IoDiskSource,
        deadline: Duration,
        cancel: &CancellationToken,
    ) -> Result<TaskReport, VmError> {
        match self.state {
            SlotState::Unprepared => Err(VmError::NotPrepared {
                domain: self.name.clone(),
            }),
            SlotState::ColdClean => self.run_cold(task_id, io_disk, deadline, cancel).await,
            SlotState::WarmClean | SlotState::WarmNeedsRevert => {
                self.run_warm(task_id, io_disk, deadline, cancel).await
            }
        }
    }

    async fn run_cold(
        &mut self,
        task_id: &str,
        io_disk: IoDiskSource,
        deadline: Duration,
        cancel: &CancellationToken,
    ) -> Result<TaskReport, VmError> {
        let mut timings = PhaseTimings::default();
        let (base, overlay) = (
            self.paths.prepared_overlay.clone(),
            self.paths.task_overlay.clone(),
        );
        {
            let overlay = overlay.clone();
            blocking(move || create_overlay(&base, &overlay)).await?;
        }
        let started = Instant::now();
        self.start(&overlay, Some(io_disk)).await?;
        let outcome = self.wait_done(task_id, deadline, cancel).await?;
        timings.run = started.elapsed();
        timings.boot_to_ready = self
            .last_ready
            .and_then(|r| r.checked_duration_since(started));
        self.destroy().await?;
        blocking(move || remove_if_present(&overlay)).await?;
        Ok(TaskReport { outcome, timings })
    }

    async fn run_warm(
        &mut self,
        task_id: &str,
        io_disk: IoDiskSource,
        deadline: Duration,
        cancel: &CancellationToken,
    ) -> Result<TaskReport, VmError> {
        let mut timings = PhaseTimings::default();
        if self.state == SlotState::WarmNeedsRevert {
            let t = Instant::now();
            timings.revert_path = Some(self.revert().await?);
            timings.revert = Some(t.elapsed());
        }
        if let Some(channel) = &mut self.channel {
            let stale = channel.drain();
            if stale > 0 {
                tracing::debug!(domain = %self.name, stale, "dropped agent messages from before the revert");
            }
        }
        let t = Instant::now();
        self.attach_io_disk(&io_disk).await?;
        timings.attach = Some(t.elapsed());
        timings.plugs = 1;
        self.state = SlotState::WarmNeedsRevert;
        let started = Instant::now();
        let ends_by = started + deadline;
        let noticed = self
            .wait_noticed(task_id, &io_disk, ends_by, cancel, &mut timings.plugs)
            .await?;
        let outcome = match noticed {
            Noticed::Started => {
                let waited = self
                    .wait_for(ends_by, |m| ends_task(m, task_id), cancel)
                    .await?;
                self.task_outcome(waited, deadline).await?
            }
            Noticed::Ended(waited) => self.task_outcome(waited, deadline).await?,
            Noticed::Never(outcome) => outcome,
        };
        timings.run = started.elapsed();
        if matches!(outcome, TaskOutcome::Done(_) | TaskOutcome::AgentFailed(_)) {
            let t = Instant::now();
            match self.detach_io_disk(&io_disk).await {
                Ok(true) => timings.detach = Some(t.elapsed()),
                Ok(false) => {
                    tracing::warn!(domain = %self.name, "guest did not release the I/O disk; restarting QEMU from the snapshot")
                }
                Err(e) => {
                    tracing::warn!(domain = %self.name, "detaching the I/O disk failed ({e}); restarting QEMU from the snapshot")
                }
            }
        }
        // Back to the warm state now, so the next task starts at once (unless the caller
        // restores it itself); the outcome of this task stands either way.
        if self.config.revert_after_task {
            if let Some((path, took)) = self.restore().await {
                timings.revert = Some(took);
                timings.revert_path = Some(path);
            }
        }
        Ok(TaskReport { outcome, timings })
    }

    /// Returns a warm slot that ran a task to its snapshot, if it is not there yet; `None` when
    /// there was nothing to do or the revert failed (logged; the next task retries it).
    pub async fn restore(&mut self) -> Option<(RevertPath, Duration)> {
        if self.state != SlotState::WarmNeedsRevert {
            return None;
        }
        let started = Instant::now();
        match self.revert().await {
            Ok(path) => Some((path, started.elapsed())),
            Err(e) => {
                tracing::warn!(domain = %self.name, "could not return to the warm snapshot: {e}");
                None
            }
        }
    }

    /// Defines the domain over `system_disk` (with the I/O disk at boot if given), starts it
    /// paused, connects the agent channel and lets the guest run.
    pub async fn start(
        &mut self,
        system_disk: &Path,
        io_disk: Option<IoDiskSource>,
    ) -> Result<(), VmError> {
        self.channel = None;
        self.channel_qemu = None;
        let spec = DomainSpec {
            name: self.name.clone(),
            accel: self.accel.accel,
            memory_mib: self.config.memory_mib,
            vcpus: self.config.vcpus,
            kernel: self.config.boot.kernel.clone(),
            initrd: self.config.boot.initrd.clone(),
            kernel_cmdline: self.config.boot.kernel_cmdline.clone(),
            system_disk: system_disk.to_path_buf(),
            io_disk,
            console_log: self.paths.console_log.clone(),
            agent_socket: self.paths.agent_socket.clone(),
        };
        for file in [&spec.kernel, &spec.system_disk] {
            if !file.is_file() {
                return Err(VmError::ImageMissing { path: file.clone() });
            }
        }
        let hypervisor = self.hypervisor.clone();
        let domain = blocking(move || {
            let domain = SlotDomain::define(hypervisor.connect(), &spec)?;
            domain.start_paused()?;
            Ok(domain)
        })
        .await?;
        self.domain = Some(domain);
        self.connect_channel_and_resume().await
    }

    /// Waits up to `timeout` for the agent's `Ready`; a guest that does not report in time is
    /// destroyed. `Ready` with failed prepare steps is an error naming them.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<AgentMessage, VmError> {
        let deadline = Instant::now() + timeout;
        let waited = self
            .wait_for(
                deadline,
                |m| matches!(m, AgentMessage::Ready { .. }),
                &CancellationToken::new(),
            )
            .await?;
        let detail = match waited {
            Waited::Message(AgentMessage::Ready {
                prepared: false,
                detail,
                ..
            }) => {
                self.destroy().await?;
                return Err(VmError::PrepareFailed {
                    domain: self.name.clone(),
                    detail,
                });
            }
            Waited::Message(ready) => return Ok(ready),
            Waited::TimedOut => {
                "no ready message before the deadline; the guest was destroyed".to_string()
            }
            Waited::GuestGone(detail) => detail,
            Waited::Cancelled => "waiting for the agent was cancelled".to_string(),
        };
        self.destroy().await?;
        Err(VmError::NotReady {
            domain: self.name.clone(),
            waited: timeout,
            detail,
            console: self.paths.console_log.clone(),
        })
    }

    /// Waits up to `timeout` for the agent's `Done` (or `Failed`) for `task_id`, ignoring
    /// messages about other tasks, or until `cancel`. An overrunning or cancelled guest is
    /// destroyed before this returns.
    pub async fn wait_done(
        &mut self,
        task_id: &str,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<TaskOutcome, VmError> {
        let deadline = Instant::now() + timeout;
        let waited = self
            .wait_for(deadline, |m| ends_task(m, task_id), cancel)
            .await?;
        self.task_outcome(waited, timeout).await
    }

    /// Waits until the agent starts (or ends) `task_id` after its I/O disk was plugged in. A
    /// guest silent for the notice timeout gets the disk unplugged and plugged in again, up to
    /// [`IO_DISK_PLUGS`] plugs in all (`plugs` counts them); a guest that misses every one is
    /// destroyed. A hot-plug notification can be lost by the guest, and would otherwise hold
    /// the task until its deadline.
    async fn wait_noticed(
        &mut self,
        task_id: &str,
        io_disk: &IoDiskSource,
        deadline: Instant,
        cancel: &CancellationToken,
        plugs: &mut u32,
    ) -> Result<Noticed, VmError> {
        let notice = self.config.io_disk_notice_timeout;
        loop {
            let noticed_by = deadline.min(Instant::now() + notice);
            let accept = |m: &AgentMessage| {
                ends_task(m, task_id)
                    || matches!(m, AgentMessage::Started { task_id: id } if id == task_id)
            };
            let waited = self.wait_for(noticed_by, accept, cancel).await?;
            match waited {
                Waited::Message(AgentMessage::Started { .. }) => return Ok(Noticed::Started),
                Waited::TimedOut if Instant::now() < deadline && *plugs < IO_DISK_PLUGS => {
                    let console = self.with_console_tail("no word from the agent").await;
                    tracing::warn!(
                        domain = %self.name,
                        plug = *plugs,
                        "the guest has not noticed the I/O disk within {notice:?}; plugging it in again ({console})"
                    );
                    // A LUN is unplugged at once whatever the guest does; if it is not, the
                    // slot cannot trust this guest.
                    if !self.detach_io_disk(io_disk).await? {
                        tracing::warn!(domain = %self.name, "the unnoticed I/O disk could not be unplugged");
                        break;
                    }
                    self.attach_io_disk(io_disk).await?;
                    *plugs += 1;
                }
                Waited::TimedOut if Instant::now() < deadline => break,
                other => return Ok(Noticed::Ended(other)),
            }
        }
        tracing::warn!(domain = %self.name, plugs = *plugs, "the guest never noticed its I/O disk; destroying it");
        self.destroy().await?;
        Ok(Noticed::Never(TaskOutcome::DiskUnnoticed {
            plugs: *plugs,
            waited: notice,
        }))
    }

    /// What a wait for the end of a task came to; a guest that overran, died or was cancelled
    /// is destroyed first.
    async fn task_outcome(
        &mut self,
        waited: Waited,
        timeout: Duration,
    ) -> Result<TaskOutcome, VmError> {
        Ok(match waited {
            Waited::Message(done @ AgentMessage::Done { .. }) => TaskOutcome::Done(done),
            Waited::Message(failed) => TaskOutcome::AgentFailed(failed),
            Waited::TimedOut => {
                self.destroy().await?;
                TaskOutcome::Overrun { deadline: timeout }
            }
            Waited::GuestGone(detail) => {
                self.destroy().await?;
                TaskOutcome::GuestDied { detail }
            }
            Waited::Cancelled => {
                self.destroy().await?;
                TaskOutcome::Cancelled
            }
        })
    }

    /// Hot-plugs the I/O disk into the running guest.
    pub async fn attach_io_disk(&mut self, io_disk: &IoDiskSource) -> Result<(), VmError> {
        let domain = self.domain()?.clone();
        let io_disk = io_disk.clone();
        blocking(move || domain.attach_io_disk(&io_disk)).await
    }

    /// Asks the guest to release the I/O disk; `Ok(false)` if it did not within libvirt's wait.
    pub async fn detach_io_disk(&mut self, io_disk: &IoDiskSource) -> Result<bool, VmError> {
        let domain = self.domain()?.clone();
        let io_disk = io_disk.clone();
        blocking(move || domain.detach_io_disk(&io_disk)).await
    }

    /// Returns a warm slot's guest to the warm snapshot, running; in place when QEMU is alive.
    pub async fn revert(&mut self) -> Result<RevertPath, VmError> {
        let domain = self.domain()?.clone();
        let path = blocking(move || warm_snapshot::revert(&domain)).await?;
        if path == RevertPath::Restarted {
            self.connect_channel_and_resume().await?;
        }
        self.state = SlotState::WarmClean;
        Ok(path)
    }

    /// Stops QEMU at once (no guest shutdown). The slot keeps its clean state: a warm slot
    /// reverts (restarting QEMU) before its next task.
    pub async fn destroy(&mut self) -> Result<(), VmError> {
        self.channel = None;
        self.channel_qemu = None;
        if let Some(domain) = self.domain.clone() {
            blocking(move || domain.destroy()).await?;
        }
        if self.state == SlotState::WarmClean {
            self.state = SlotState::WarmNeedsRevert;
        }
        Ok(())
    }

    /// Destroys and undefines the domain (with its snapshot) and deletes the slot's files.
    pub async fn undefine(mut self) -> Result<(), VmError> {
        self.destroy().await?;
        let hypervisor = self.hypervisor.clone();
        let (name, paths) = (self.name.clone(), self.paths.clone());
        blocking(move || {
            clean_leftovers(hypervisor.connect(), &name, &paths)?;
            match std::fs::remove_dir(&paths.dir) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(VmError::Io {
                    action: "cannot remove slot directory",
                    path: paths.dir.clone(),
                    source: e,
                }),
            }
        })
        .await
    }

    fn domain(&self) -> Result<&SlotDomain, VmError> {
        self.domain.as_ref().ok_or_else(|| VmError::NotPrepared {
            domain: self.name.clone(),
        })
    }

    async fn connect_channel_and_resume(&mut self) -> Result<(), VmError> {
        let domain = self.domain()?.clone();
        let (name, socket) = (self.name.clone(), self.paths.agent_socket.clone());
        let (channel, qemu) = blocking(move || {
            let channel =
                AgentChannel::connect(&name, &socket, Instant::now() + CHANNEL_CONNECT_TIMEOUT);
            let channel = match channel {
                Ok(channel) => channel,
                Err(e) => {
                    let _ = domain.destroy();
                    return Err(e);
                }
            };
            domain.resume()?;
            Ok((channel, domain.qemu_id()))
        })
        .await?;
        self.channel = Some(channel);
        self.channel_qemu = qemu;
        Ok(())
    }

    /// Waits for a message `accept`ed, the deadline, the guest's death, or `cancel`, whichever
    /// is first.
    async fn wait_for(
        &mut self,
        deadline: Instant,
        accept: impl Fn(&AgentMessage) -> bool,
        cancel: &CancellationToken,
    ) -> Result<Waited, VmError> {
        let domain = self.domain()?.clone();
        let mut invalid = 0usize;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(Waited::TimedOut);
            }
            let poll_until = tokio::time::Instant::from_std(deadline.min(now + STATE_POLL));
            if cancel.is_cancelled() {
                return Ok(Waited::Cancelled);
            }
            let event = match self.channel.as_mut() {
                Some(channel) => tokio::select! {
                    event = channel.next_before(poll_until) => event,
                    _ = cancel.cancelled() => return Ok(Waited::Cancelled),
                },
                None => Some(ChannelEvent::Closed),
            };
            match event {
                Some(ChannelEvent::Message(message)) if accept(&message) => {
                    if matches!(message, AgentMessage::Ready { .. }) {
                        self.last_ready = Some(Instant::now());
                    }
                    return Ok(Waited::Message(message));
                }
                Some(ChannelEvent::Message(message @ AgentMessage::Ready { .. })) => {
                    self.last_ready = Some(Instant::now());
                    tracing::debug!(domain = %self.name, ?message, "agent ready");
                }
                Some(ChannelEvent::Message(message)) => {
                    tracing::debug!(domain = %self.name, ?message, "agent message not waited for")
                }
                Some(ChannelEvent::Invalid(why)) => {
                    invalid += 1;
                    if invalid <= MAX_LOGGED_INVALID_LINES {
                        tracing::warn!(domain = %self.name, "invalid line on the agent channel: {why}");
                    }
                }
                Some(ChannelEvent::Closed) => {
                    return Ok(Waited::GuestGone(
                        self.with_console_tail("the agent channel closed").await,
                    ));
                }
                None => {
                    let d = domain.clone();
                    if !blocking(move || d.is_running()).await? {
                        return Ok(Waited::GuestGone(
                            self.with_console_tail("the domain stopped").await,
                        ));
                    }
                }
            }
        }
    }

    /// `what`, followed by the end of the guest's console log (the evidence of what it did).
    async fn with_console_tail(&self, what: &str) -> String {
        let log = self.paths.console_log.clone();
        let tail = blocking(move || Ok(console_tail(&log)))
            .await
            .unwrap_or_default();
        format!("{what}; last console output:\n{tail}")
    }
}

/// The end of the console log, printable characters only (guest output is untrusted).
fn console_tail(path: &Path) -> String {
    let Ok(mut file) = std::fs::File::open(path) else {
        return "(no console log)".into();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(CONSOLE_TAIL_BYTES)));
    let mut bytes = Vec::new();
    let _ = file.take(CONSOLE_TAIL_BYTES).read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes)
        .chars()
        .filter(|c| !c.is_control() || *c == '\n')
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slot_config::BootFiles;
    use crate::slot_domain::tests::test_spec;
    use pyti_wire::recipe::Accel;

    fn config(slave: &str, state_dir: &Path) -> SlotConfig {
        SlotConfig {
            slave: slave.into(),
            slot: 3,
            mode: SlotMode::Warm,
            state_dir: state_dir.to_path_buf(),
            boot: BootFiles {
                kernel: "/nonexistent/vmlinux".into(),
                initrd: None,
                system_disk: "/nonexistent/system.qcow2".into(),
                kernel_cmdline: String::new(),
            },
            memory_mib: 256,
            vcpus: 1,
            accel: Accel::Auto,
            ready_timeout: Duration::from_secs(1),
            revert_after_task: true,
            io_disk_notice_timeout: Duration::from_secs(1),
        }
    }

    #[tokio::test]
    async fn open_recovers_its_leftovers_and_refuses_tasks_before_prepare() {
        let hypervisor = Hypervisor::open("test:///default").unwrap();
        let state = tempfile::tempdir().unwrap();
        let leftover =
            SlotDomain::define(hypervisor.connect(), &test_spec("pyti-vmtest-open-3")).unwrap();
        leftover.start_paused().unwrap();

        let mut slot = VmSlot::open(hypervisor.clone(), config("vmtest-open", state.path()))
            .await
            .unwrap();
        assert_eq!(slot.name(), "pyti-vmtest-open-3");
        assert_eq!(slot.accel().accel, crate::ResolvedAccel::Tcg);
        assert!(slot.recovered().destroyed_domain && slot.recovered().undefined_domain);
        assert!(slot.paths().dir.is_dir());

        let err = slot
            .run_task(
                "t",
                IoDiskSource::File("/tmp/io.img".into()),
                Duration::from_secs(1),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, VmError::NotPrepared { .. }), "{err}");
        // The image is checked before anything is defined, with the command that fixes it.
        let err = slot.prepare().await.unwrap_err();
        assert!(err.to_string().contains("pyti image build"), "{err}");
        slot.undefine().await.unwrap();
        assert!(!state.path().join("pyti-vmtest-open-3").exists());
    }

    /// Compiles only if a slot and its task future can move between executor threads
    /// (the slave spawns one task per slot).
    #[allow(dead_code)]
    fn slot_and_task_future_are_send(slot: &mut VmSlot) {
        fn send<T: Send>(_: &T) {}
        send(slot);
        let future = slot.run_task("t", IoDiskSource::File("/x".into()), Duration::ZERO);
        send(&future);
    }

    #[tokio::test]
    async fn slave_names_that_would_make_odd_domain_names_are_refused() {
        let hypervisor = Hypervisor::open("test:///default").unwrap();
        let state = tempfile::tempdir().unwrap();
        for bad in ["", "a b", "../x", "é"] {
            let err = VmSlot::open(hypervisor.clone(), config(bad, state.path()))
                .await
                .unwrap_err();
            assert!(matches!(err, VmError::BadName { .. }), "{bad:?}: {err}");
        }
    }
}
