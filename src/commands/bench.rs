//! `pyti bench`: the task cycle's cost per phase, warm against cold against naive.

use super::package_arg::package_spec;
use super::recipes;
use super::slave::{data_dir, slave_config, slot_mode};
use crate::cli::{BenchArgs, SlotMode as CliSlotMode};
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use pyti_slave::bench::{self, median, BenchConfig, BenchEvent, BenchMode, ModeReport};
use pyti_slave::daemon::{self, SlaveEvent};
use std::process::ExitCode;
use std::time::Duration;

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let recipe = recipes::load(&args.recipe, &args.recipes)?;
    let package = package_spec(&args.package)?;
    let tasks = args.tasks as usize;
    let mut modes = vec![(BenchMode::Warm, tasks), (BenchMode::Cold, tasks)];
    if !args.skip_naive {
        modes.push((
            BenchMode::Naive,
            args.naive_tasks.map_or(tasks, |n| n as usize),
        ));
    }
    // The slave's own paths and caches, under a name no real slave uses.
    let slave = slave_config(
        "bench".to_string(),
        String::new(),
        None,
        1,
        slot_mode(CliSlotMode::Warm),
        vec![recipe.clone()],
        args.libvirt.libvirt_uri.clone(),
    )?;
    let runtime = tokio::runtime::Runtime::new()?;
    let reports = runtime.block_on(async {
        let bar = ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("static template"),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        let images = {
            let bar = bar.clone();
            daemon::build_images(&slave, move |event| {
                if let SlaveEvent::Image { recipe, phase } = event {
                    bar.set_message(format!("image `{recipe}`: {phase}"));
                }
            })
            .await
            .context("building the guest image")?
        };
        let config = BenchConfig {
            package,
            image: images
                .get(&recipe.name)
                .cloned()
                .context("the image build returned no image")?,
            recipe,
            modes,
            libvirt_uri: args.libvirt.libvirt_uri,
            state_dir: data_dir("bench")?,
            wheelhouse_cache: slave.wheelhouse_cache,
            output_limit_bytes: slave.output_limit_bytes,
            slot_name: "bench".to_string(),
        };
        let show = |event: BenchEvent| match event {
            BenchEvent::Setup { mode, what } => bar.set_message(format!("{}: {what}", mode.name())),
            BenchEvent::Task { mode, index, phase } => {
                bar.set_message(format!("{}: task {}: {phase}", mode.name(), index + 1))
            }
            BenchEvent::TaskDone { mode, index, total } => {
                let line = format!(
                    "{} task {} done in {:.2} s",
                    mode.name(),
                    index + 1,
                    total.as_secs_f64()
                );
                // Without a terminal the bar is hidden; the lines still tell the progress.
                if bar.is_hidden() {
                    eprintln!("{line}");
                } else {
                    bar.println(line);
                }
            }
        };
        let reports = bench::run(&config, &show).await;
        bar.finish_and_clear();
        anyhow::Ok(reports?)
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json_report(&reports))?);
    } else {
        print!("{}", table(&reports));
    }
    Ok(ExitCode::SUCCESS)
}

fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

/// The median of one measure over a mode's samples.
fn med(report: &ModeReport, measure: impl Fn(&bench::BenchSample) -> Duration) -> Duration {
    median(report.samples.iter().map(measure).collect())
}

/// Boot (cold) or attach (warm), per task.
fn start_of(sample: &bench::BenchSample) -> Duration {
    sample
        .cycle
        .vm_phases
        .as_ref()
        .and_then(|p| p.boot_to_ready.or(p.attach))
        .unwrap_or_default()
}

/// Times the task's I/O disk was plugged in (warm; more than 1 when the guest missed one).
fn plugs_of(sample: &bench::BenchSample) -> u32 {
    sample.cycle.vm_phases.as_ref().map_or(0, |p| p.plugs)
}

fn detach_and_revert(sample: &bench::BenchSample) -> Duration {
    sample.cycle.vm_phases.as_ref().map_or(Duration::ZERO, |p| {
        p.detach.unwrap_or_default() + p.revert.unwrap_or_default()
    })
}

/// The per-phase table (medians, seconds) and the ratios against warm.
fn table(reports: &[ModeReport]) -> String {
    let mut table = super::new_table();
    table.set_header([
        "mode", "tasks", "session", "prepare", "acquire", "inject", "start", "guest", "steps",
        "revert", "extract", "overhead", "total",
    ]);
    for report in reports {
        table.add_row([
            report.mode.name().to_string(),
            report.samples.len().to_string(),
            secs(report.session_start),
            secs(report.slot_prepare),
            secs(med(report, |s| s.acquire)),
            secs(med(report, |s| s.cycle.inject)),
            secs(med(report, start_of)),
            secs(med(report, |s| s.cycle.guest_run)),
            secs(med(report, |s| s.cycle.steps)),
            secs(med(report, detach_and_revert)),
            secs(med(report, |s| s.cycle.extract)),
            secs(med(report, |s| s.overhead())),
            secs(med(report, |s| s.total)),
        ]);
    }
    let mut out = format!(
        "{table}\nmedians in seconds. session: appliance launch; prepare: first boot of the slot; \
         start: boot (cold) or disk hot-plug (warm); guest: disk given to the guest until done; \
         revert: detach and return to the snapshot (warm: during the extract); overhead: total \
         minus the steps' own time\n"
    );
    let overhead = |mode| {
        reports
            .iter()
            .find(|r| r.mode == mode)
            .map(|r| med(r, |s| s.overhead()))
    };
    if let Some(warm) = overhead(BenchMode::Warm) {
        out.push_str(&format!(
            "warm overhead {} s (target <= 1.00 s)\n",
            secs(warm)
        ));
        for other in [BenchMode::Cold, BenchMode::Naive] {
            if let Some(o) = overhead(other) {
                out.push_str(&format!(
                    "{} overhead {} s: {:.1}x the warm overhead{}\n",
                    other.name(),
                    secs(o),
                    o.as_secs_f64() / warm.as_secs_f64().max(1e-3),
                    if other == BenchMode::Naive {
                        " (target >= 20x)"
                    } else {
                        ""
                    }
                ));
            }
        }
        if let Some(report) = reports.iter().find(|r| r.mode == BenchMode::Warm) {
            out.push_str(&format!(
                "warm task end to end {} s median\n",
                secs(med(report, |s| s.total))
            ));
        }
    }
    for report in reports {
        out.push_str(&format!(
            "{}: {} appliance launch(es)\n",
            report.mode.name(),
            report.appliance_launches
        ));
        if report.mode == BenchMode::Warm {
            let replugged = report.samples.iter().filter(|s| plugs_of(s) > 1).count();
            out.push_str(&format!(
                "warm: {replugged} of {} task(s) had their I/O disk plugged in again (the guest missed the hot-plug)\n",
                report.samples.len()
            ));
        }
    }
    out
}

fn json_report(reports: &[ModeReport]) -> serde_json::Value {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    serde_json::Value::Array(
        reports
            .iter()
            .map(|r| {
                serde_json::json!({
                    "mode": r.mode.name(),
                    "session_start_ms": ms(r.session_start),
                    "slot_prepare_ms": ms(r.slot_prepare),
                    "appliance_launches": r.appliance_launches,
                    "tasks": r.samples.iter().map(|s| serde_json::json!({
                        "acquire_ms": ms(s.acquire),
                        "inject_ms": ms(s.cycle.inject),
                        "start_ms": ms(start_of(s)),
                        "vm_ms": ms(s.cycle.vm),
                        "guest_run_ms": ms(s.cycle.guest_run),
                        "steps_ms": ms(s.cycle.steps),
                        "io_disk_plugs": plugs_of(s),
                        "detach_and_revert_ms": ms(detach_and_revert(s)),
                        "extract_ms": ms(s.cycle.extract),
                        "overhead_ms": ms(s.overhead()),
                        "total_ms": ms(s.total),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}
