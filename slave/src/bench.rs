//! The task-cycle benchmark: the same package through warm, cold and naive slots, phase by phase.
//!
//! Each mode gets its own appliance session and VM slot (set up untimed, then reported), runs
//! `tasks` tasks of the package, and records where each task's time went. Every task must pass:
//! a benchmark of failing tasks measures nothing. The naive mode is the cycle pyti exists to
//! avoid: a cold boot per task and a fresh libguestfs appliance for the inject and for the
//! extract (the inject through the appliance, as a naive tool would write the disk).
//!
//! What is not measured: the RPC round trips to a master (claim, progress, report), which are
//! milliseconds on a LAN and the same for every mode.

use crate::acquire::{AcquireError, PackageAcquirer};
use crate::cycle::{CycleOutcome, CyclePhase, CycleRequest, CycleTimings, SlotContext, SlotRunner};
use crate::daemon::open_hypervisor;
use pyti_diskhandler::{InjectMethod, Session, SessionConfig};
use pyti_vmanager::image::GuestImage;
use pyti_vmanager::{CancellationToken, SlotMode};
use pyti_wire::job::PackageSpec;
use pyti_wire::recipe::Recipe;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most tasks one mode may run (a typo of 10000 should not occupy the host for a day).
pub const MAX_BENCH_TASKS: usize = 1000;

/// How the slot and the appliance are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BenchMode {
    /// pyti's default: one appliance session, a warm snapshot reverted per task.
    Warm,
    /// One appliance session, a clean boot per task.
    Cold,
    /// A clean boot per task and an appliance launched for every inject and extract.
    Naive,
}

impl BenchMode {
    pub fn name(self) -> &'static str {
        match self {
            BenchMode::Warm => "warm",
            BenchMode::Cold => "cold",
            BenchMode::Naive => "naive",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub package: PackageSpec,
    pub recipe: Recipe,
    /// The recipe's built image.
    pub image: GuestImage,
    /// Tasks per mode, in this order.
    pub modes: Vec<(BenchMode, usize)>,
    pub libvirt_uri: String,
    /// Slot directories and I/O disks (one subdirectory per mode).
    pub state_dir: PathBuf,
    pub wheelhouse_cache: PathBuf,
    pub output_limit_bytes: u64,
    /// Domains are `pyti-<name>-0`; pick one no slave on this host uses.
    pub slot_name: String,
}

/// One task's timings.
#[derive(Debug, Clone)]
pub struct BenchSample {
    /// Resolving the package and its wheelhouse (a cache hit after the first task).
    pub acquire: Duration,
    pub cycle: CycleTimings,
    /// Acquire through extract.
    pub total: Duration,
}

impl BenchSample {
    /// The orchestration overhead: everything but the steps' own run time.
    pub fn overhead(&self) -> Duration {
        self.total.saturating_sub(self.cycle.steps)
    }
}

/// One mode's run.
#[derive(Debug, Clone)]
pub struct ModeReport {
    pub mode: BenchMode,
    /// Starting the appliance session (once per slave in production).
    pub session_start: Duration,
    /// Booting the slot and running the recipe's prepare steps (once per slot).
    pub slot_prepare: Duration,
    pub samples: Vec<BenchSample>,
    /// Appliance launches the mode needed in all (1 for a session; 1 + 2 per task naive).
    pub appliance_launches: u64,
}

/// Progress while the benchmark runs.
#[derive(Debug, Clone)]
pub enum BenchEvent {
    Setup {
        mode: BenchMode,
        what: &'static str,
    },
    Task {
        mode: BenchMode,
        index: usize,
        phase: &'static str,
    },
    TaskDone {
        mode: BenchMode,
        index: usize,
        total: Duration,
    },
}

/// Why the benchmark stopped.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("bench mode {mode}: {detail}")]
    Setup { mode: &'static str, detail: String },
    #[error("bench mode {mode}, task {index}: the task did not pass ({detail}); a benchmark needs a package whose tasks pass")]
    TaskFailed {
        mode: &'static str,
        index: usize,
        detail: String,
    },
    #[error("{0} tasks per mode is out of range (1..={MAX_BENCH_TASKS})")]
    TaskCount(usize),
}

/// Runs every mode of `config` in turn.
pub async fn run(
    config: &BenchConfig,
    events: &(dyn Fn(BenchEvent) + Send + Sync),
) -> Result<Vec<ModeReport>, BenchError> {
    if let Some((_, n)) = config
        .modes
        .iter()
        .find(|(_, n)| *n == 0 || *n > MAX_BENCH_TASKS)
    {
        return Err(BenchError::TaskCount(*n));
    }
    let mut reports = Vec::new();
    for &(mode, tasks) in &config.modes {
        reports.push(run_mode(config, mode, tasks, events).await?);
    }
    Ok(reports)
}

async fn run_mode(
    config: &BenchConfig,
    mode: BenchMode,
    tasks: usize,
    events: &(dyn Fn(BenchEvent) + Send + Sync),
) -> Result<ModeReport, BenchError> {
    let setup = |detail: String| BenchError::Setup {
        mode: mode.name(),
        detail,
    };
    let (hypervisor, accelerator) = open_hypervisor(&config.libvirt_uri)
        .await
        .map_err(|e| setup(e.to_string()))?;
    let dir = config.state_dir.join(mode.name());
    let mut session_config = SessionConfig::new(dir.join("io"), 1);
    session_config.accelerator = accelerator;
    if mode == BenchMode::Naive {
        session_config.inject_method = InjectMethod::Appliance;
        session_config.appliance_per_operation = true;
    }
    events(BenchEvent::Setup {
        mode,
        what: "starting the appliance session",
    });
    let started = Instant::now();
    let (session, mut disks) = Session::start(session_config)
        .await
        .map_err(|e| setup(e.to_string()))?;
    let session_start = started.elapsed();
    let session = Arc::new(session);

    let mut runner = SlotRunner::new(SlotContext {
        hypervisor,
        slave: config.slot_name.clone(),
        index: 0,
        mode: match mode {
            BenchMode::Warm => SlotMode::Warm,
            BenchMode::Cold | BenchMode::Naive => SlotMode::Cold,
        },
        state_dir: dir.join("slots"),
        images: Arc::new(HashMap::from([(
            config.recipe.name.clone(),
            config.image.clone(),
        )])),
    });
    events(BenchEvent::Setup {
        mode,
        what: "preparing the VM slot",
    });
    let started = Instant::now();
    let prepared = runner.ensure_prepared(&config.recipe).await;
    let slot_prepare = started.elapsed();
    let outcome = match (prepared, disks.pop()) {
        (Err(e), _) => Err(setup(e)),
        (Ok(()), None) => Err(setup("the session made no I/O disk".into())),
        (Ok(()), Some(disk)) => {
            runner.give_io_disk(session.clone(), disk);
            run_tasks(config, mode, tasks, &mut runner, events).await
        }
    };
    runner.close().await;
    let appliance_launches = session.launch_count();
    if let Ok(session) = Arc::try_unwrap(session) {
        session.shutdown().await;
    }
    Ok(ModeReport {
        mode,
        session_start,
        slot_prepare,
        samples: outcome?,
        appliance_launches,
    })
}

async fn run_tasks(
    config: &BenchConfig,
    mode: BenchMode,
    tasks: usize,
    runner: &mut SlotRunner,
    events: &(dyn Fn(BenchEvent) + Send + Sync),
) -> Result<Vec<BenchSample>, BenchError> {
    let acquirer = PackageAcquirer::new(config.wheelhouse_cache.clone());
    let never = CancellationToken::new();
    let mut samples = Vec::with_capacity(tasks);
    for index in 0..tasks {
        let failed = |detail: String| BenchError::TaskFailed {
            mode: mode.name(),
            index,
            detail,
        };
        events(BenchEvent::Task {
            mode,
            index,
            phase: "acquire",
        });
        let started = Instant::now();
        let acquired = acquirer
            .acquire(&config.package, &config.recipe)
            .await
            .map_err(|e| match e {
                AcquireError::Package(reason) | AcquireError::Infrastructure(reason) => {
                    failed(reason)
                }
            })?;
        let acquire = started.elapsed();
        let task_id = format!("bench-{}-{index}", mode.name());
        let mut progress = |phase: CyclePhase| {
            events(BenchEvent::Task {
                mode,
                index,
                phase: phase.name(),
            })
        };
        let report = runner
            .run(
                CycleRequest {
                    task_id: &task_id,
                    recipe: &config.recipe,
                    input: &acquired.input,
                    output_limit_bytes: config.output_limit_bytes,
                },
                &mut progress,
                &never,
            )
            .await;
        let total = started.elapsed();
        match &report.outcome {
            CycleOutcome::Raw(result) => {
                if let Some(step) = result.steps.iter().find(|s| !s.outcome.succeeded()) {
                    return Err(failed(format!(
                        "step `{}` ended {:?}",
                        step.name, step.outcome
                    )));
                }
            }
            other => return Err(failed(format!("{other:?}"))),
        }
        events(BenchEvent::TaskDone { mode, index, total });
        samples.push(BenchSample {
            acquire,
            cycle: report.timings,
            total,
        });
    }
    Ok(samples)
}

/// The median of `values` (the upper one of an even count); zero for none.
pub fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_takes_the_middle_of_the_sorted_values() {
        let ms = Duration::from_millis;
        assert_eq!(median(vec![ms(5), ms(1), ms(3)]), ms(3));
        assert_eq!(median(vec![ms(4), ms(1), ms(3), ms(2)]), ms(3));
        assert_eq!(median(Vec::new()), Duration::ZERO);
    }

    #[test]
    fn overhead_is_everything_but_the_steps() {
        let sample = BenchSample {
            acquire: Duration::from_millis(10),
            cycle: CycleTimings {
                steps: Duration::from_millis(700),
                ..CycleTimings::default()
            },
            total: Duration::from_millis(1500),
        };
        assert_eq!(sample.overhead(), Duration::from_millis(800));
    }
}
