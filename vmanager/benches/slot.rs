//! Slot phase timings on this host's real QEMU: a table of medians over several tasks.
//!
//! Phases: cold boot to ready; warm revert to running (in-place `loadvm`, QEMU kept alive);
//! attaching the I/O disk; done → reverted (guest releases the disk + revert). Baselines measured
//! in the same run: libvirt's own revert (restarting QEMU) and a cold boot.
//!
//! `cargo bench -p pyti-vmanager --bench slot` (needs libvirtd, virtlogd and QEMU; builds the
//! test image once into target/tmp). `PYTI_BENCH_RUNS=N` sets the sample count (default 7).

#[path = "../tests/support/agent.rs"]
mod agent;
#[path = "../tests/real_qemu_slot/fixture.rs"]
mod fixture;

use fixture::*;
use pyti_vmanager::slot_domain::SlotDomain;
use pyti_vmanager::{warm_snapshot, IoDiskSource, SlotMode, TaskOutcome, VmSlot};
use std::time::{Duration, Instant};

/// Targets from the vmanager issue, for this 2-core TCG machine.
const TARGET_WARM_REVERT_PLUS_ATTACH: f64 = 0.7;
const TARGET_COLD_BOOT: f64 = 4.5;

fn median(values: &[Duration]) -> f64 {
    let mut v = values.to_vec();
    v.sort();
    v.get(v.len() / 2)
        .map(|d| d.as_secs_f64())
        .unwrap_or(f64::NAN)
}

fn range(values: &[Duration]) -> String {
    let min = values
        .iter()
        .min()
        .map(|d| d.as_secs_f64())
        .unwrap_or(f64::NAN);
    let max = values
        .iter()
        .max()
        .map(|d| d.as_secs_f64())
        .unwrap_or(f64::NAN);
    format!("{min:.3}–{max:.3}")
}

async fn trivial_task(
    slot: &mut VmSlot,
    dir: &std::path::Path,
    n: usize,
) -> pyti_vmanager::TaskReport {
    let task_id = format!("{}-bench-{n}", slot.name());
    let disk = io_disk(dir, &shell_task(&task_id, "true", 60));
    let report = slot
        .run_task(&task_id, IoDiskSource::File(disk), Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(report.outcome, TaskOutcome::Done(_)),
        "{:?}",
        report.outcome
    );
    report
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs: usize = std::env::var("PYTI_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7)
        .max(5);
    let recipe = recipe();
    let image = tokio::task::spawn_blocking({
        let recipe = recipe.clone();
        move || guest_image(&recipe)
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir_in(target_tmp()).unwrap();
    let hv = hypervisor();

    // Cold: every task boots.
    let mut slot = VmSlot::open(
        hv.clone(),
        slot_config("bench-cold", SlotMode::Cold, &recipe, &image, dir.path()),
    )
    .await
    .unwrap();
    eprintln!(
        "accelerator: {:?} ({})",
        slot.accel().accel,
        slot.accel().reason
    );
    slot.prepare().await.unwrap();
    let mut cold_boot = Vec::new();
    for n in 0..runs {
        let report = trivial_task(&mut slot, dir.path(), n).await;
        cold_boot.extend(report.timings.boot_to_ready);
    }
    slot.undefine().await.unwrap();

    // Warm: revert in place, attach, run, detach.
    let mut slot = VmSlot::open(
        hv.clone(),
        slot_config("bench-warm", SlotMode::Warm, &recipe, &image, dir.path()),
    )
    .await
    .unwrap();
    slot.prepare().await.unwrap();
    let (mut revert, mut attach, mut done_to_reverted, mut revert_attach) =
        (vec![], vec![], vec![], vec![]);
    let mut replugged = 0;
    for n in 0..runs {
        let t = trivial_task(&mut slot, dir.path(), n).await.timings;
        replugged += usize::from(t.plugs > 1);
        let (Some(a), Some(d), Some(r)) = (t.attach, t.detach, t.revert) else {
            panic!("warm task without attach/detach/revert timings: {t:?}");
        };
        attach.push(a);
        revert.push(r);
        done_to_reverted.push(d + r);
        revert_attach.push(r + a);
    }
    // Baseline: libvirt's own revert of the running guest, which kills QEMU and starts another.
    let domain = SlotDomain::lookup(hv.connect(), slot.name())
        .unwrap()
        .expect("warm domain exists");
    let mut restart_revert = Vec::new();
    for _ in 0..runs {
        let domain = domain.clone();
        let took = tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            warm_snapshot::revert_restarting(&domain).unwrap();
            let took = t.elapsed();
            domain.resume().unwrap();
            took
        })
        .await
        .unwrap();
        restart_revert.push(took);
    }
    slot.undefine().await.unwrap();

    println!("\nvmanager slot phases, {runs} samples each (seconds)\n");
    println!(
        "{:<44} {:>8} {:>14} {:>8}",
        "phase", "median", "range", "target"
    );
    let row = |name: &str, v: &[Duration], target: Option<f64>| {
        let target = target.map(|t| format!("<= {t}")).unwrap_or_default();
        println!("{name:<44} {:>8.3} {:>14} {target:>8}", median(v), range(v));
    };
    row("cold boot to ready", &cold_boot, Some(TARGET_COLD_BOOT));
    row("warm revert to running (in place)", &revert, None);
    row("attach I/O disk", &attach, None);
    row(
        "warm revert + attach",
        &revert_attach,
        Some(TARGET_WARM_REVERT_PLUS_ATTACH),
    );
    row(
        "done -> reverted (detach + revert)",
        &done_to_reverted,
        None,
    );
    row(
        "baseline: libvirt revert (restarts QEMU)",
        &restart_revert,
        None,
    );
    println!("\nwarm tasks whose I/O disk went unnoticed and was plugged in again: {replugged} of {runs}");
    println!(
        "\nratios: restart revert / in-place revert = {:.1}x; cold boot / (warm revert + attach) = {:.1}x",
        median(&restart_revert) / median(&revert),
        median(&cold_boot) / median(&revert_attach)
    );
}
