//! `pyti run`: one job end to end in one process: an embedded master (SQLite in the user's data
//! directory) and a slave, live progress per task, then the results table.

use super::client::job_results;
use super::package_arg::package_spec;
use super::report;
use super::slave::{data_dir, slave_config, slot_mode};
use super::{master, recipes};
use crate::cli::RunArgs;
use anyhow::Context;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use pyti_master::recipes::RecipeCatalog;
use pyti_master::tokens::{self, Role};
use pyti_master::{Master, MasterConfig};
use pyti_slave::daemon::{self, SlaveEvent};
use pyti_wire::client::http_client;
use pyti_wire::job::JobSpec;
use pyti_wire::rpc::PytiApiClient;
use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the job's state is read while it runs.
const POLL: Duration = Duration::from_millis(500);

/// The recipe named after the host's distribution (`debian-12` on Debian 12).
fn host_recipe() -> String {
    let release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let field = |key: &str| {
        release
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(|v| v.trim_matches('"').to_string())
    };
    match (field("ID"), field("VERSION_ID")) {
        (Some(id), Some(version)) => {
            format!("{id}-{}", version.split('.').next().unwrap_or(&version))
        }
        _ => "debian-12".to_string(),
    }
}

/// Live display: one line per task with its phase and elapsed time.
struct Progress {
    bars: MultiProgress,
    tasks: Mutex<HashMap<i64, ProgressBar>>,
    image: ProgressBar,
}

impl Progress {
    fn new(quiet: bool) -> Arc<Progress> {
        let bars = MultiProgress::new();
        if quiet {
            bars.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        }
        let image = bars.add(ProgressBar::new_spinner().with_style(style()));
        image.enable_steady_tick(Duration::from_millis(120));
        Arc::new(Progress {
            bars,
            tasks: Mutex::new(HashMap::new()),
            image,
        })
    }

    fn event(&self, event: SlaveEvent) {
        match event {
            SlaveEvent::Image { recipe, phase } => {
                self.image.set_message(format!("image `{recipe}`: {phase}"))
            }
            SlaveEvent::Phase { slot, task, phase } => {
                let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
                let bar = tasks.entry(task).or_insert_with(|| {
                    let bar = self
                        .bars
                        .add(ProgressBar::new_spinner().with_style(style()));
                    bar.enable_steady_tick(Duration::from_millis(120));
                    bar
                });
                bar.set_message(format!("task {task} (slot {slot}): {phase}"));
            }
        }
    }

    fn println(&self, line: String) {
        if self.bars.is_hidden() {
            eprintln!("{line}");
        } else {
            let _ = self.bars.println(line);
        }
    }

    fn finish(&self) {
        self.image.finish_and_clear();
        for bar in self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            bar.finish_and_clear();
        }
    }
}

fn style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("static template")
}

/// Picks the first free slave name `local-N`, held by a lock file for as long as the run lasts:
/// concurrent runs never share (and clean up) each other's VMs, while a crashed run's leftovers
/// are cleaned by the next run that takes its name.
fn claim_slave_name() -> anyhow::Result<(String, std::fs::File)> {
    let dir = data_dir("run")?;
    for n in 0..64 {
        let path = dir.join(format!("local-{n}.lock"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        if file.try_lock().is_ok() {
            return Ok((format!("local-{n}"), file));
        }
    }
    anyhow::bail!("64 `pyti run` are already running as this user; wait for one to finish")
}

pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let recipe_name = args.recipe.clone().unwrap_or_else(host_recipe);
    let recipe = recipes::load(&recipe_name, &args.recipes)?;
    let package = package_spec(&args.package)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(run_embedded(args, recipe, package))
}

async fn run_embedded(
    args: RunArgs,
    recipe: pyti_wire::recipe::Recipe,
    package: pyti_wire::job::PackageSpec,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let progress = Progress::new(args.json);

    // The master: SQLite in the user's data directory, on a free loopback port.
    let config = MasterConfig {
        listen: "127.0.0.1:0".parse().expect("static address"),
        database_url: master::default_database()?,
        recipes_dir: args.recipes.recipes_dir.clone(),
        ..MasterConfig::default()
    };
    let catalog = Arc::new(RecipeCatalog::from_recipes(vec![recipe.clone()]));
    let master = Master::open_with_recipes(config, catalog).await?;
    let url = format!("http://{}", master.local_addr());
    let token_name = format!("pyti-run-{}", std::process::id());
    let token = tokens::add(master.store(), &token_name, Role::Admin).await?;
    let store = master.store().clone();
    let (stop_master, master_stopped) = tokio::sync::oneshot::channel::<()>();
    let master_task = tokio::spawn(master.serve(async move {
        let _ = master_stopped.await;
    }));

    // The slave: build (or reuse) the image, then serve one slot.
    let (slave_name, _name_lock) = claim_slave_name()?;
    let slave = slave_config(
        slave_name,
        url.clone(),
        Some(token.clone()),
        1,
        slot_mode(args.mode),
        vec![recipe.clone()],
        args.libvirt.libvirt_uri.clone(),
    )?;
    let events = {
        let progress = progress.clone();
        move |event: SlaveEvent| progress.event(event)
    };
    let images = daemon::build_images(&slave, events.clone())
        .await
        .context("building the guest image")?;
    progress.image.finish_and_clear();
    progress.println(format!(
        "image for `{}` ready ({:.1} s)",
        recipe.name,
        started.elapsed().as_secs_f64()
    ));
    let (stop_slave, slave_stopped) = tokio::sync::oneshot::channel::<()>();
    let slave_task = tokio::spawn(daemon::run(
        slave,
        images,
        async move {
            let _ = slave_stopped.await;
        },
        Arc::new(events),
    ));

    // The job.
    let client = http_client(&url, Some(&token), Duration::from_secs(60))?;
    let receipt = client
        .submit_job(JobSpec {
            package,
            recipes: vec![recipe.name.clone()],
            submitter: None,
            priority: 5,
            trigger: "pyti run".to_string(),
        })
        .await
        .map_err(|e| anyhow::anyhow!("submitting the job: {e}"))?;
    progress.println(format!(
        "job {} submitted: {} on {}",
        receipt.job_id, args.package, recipe.name
    ));
    let outcome = loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = super::shutdown_signal() => break Err(anyhow::anyhow!("interrupted; the job stays in the database")),
        }
        if slave_task.is_finished() {
            break Err(anyhow::anyhow!("the slave stopped before the job finished"));
        }
        match client.get_job(receipt.job_id).await {
            Ok(job) if job.tasks.iter().all(|t| t.state.is_terminal()) => break Ok(()),
            Ok(_) => {}
            Err(e) => break Err(anyhow::anyhow!("reading the job: {e}")),
        }
    };
    progress.finish();
    let results = match outcome {
        Ok(()) => Some(job_results(&client, receipt.job_id).await?),
        Err(e) => {
            eprintln!("error: {e:#}");
            None
        }
    };

    let _ = stop_slave.send(());
    match slave_task.await {
        Ok(Err(e)) => eprintln!("error: the slave failed: {e}"),
        Err(e) => eprintln!("error: the slave panicked: {e}"),
        Ok(Ok(())) => {}
    }
    let _ = tokens::revoke(&store, &token_name).await;
    let _ = stop_master.send(());
    let _ = master_task.await;

    let Some(results) = results else {
        return Ok(ExitCode::from(2));
    };
    if let Some(path) = &args.junit {
        std::fs::write(path, report::junit(&results))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        println!("{}", report::summary_table(&results));
        for task in &results.tasks {
            print!("{}", report::step_details(task));
        }
        println!("total {:.1} s", started.elapsed().as_secs_f64());
    }
    Ok(ExitCode::from(results.exit_code()))
}
