//! VM slots on real QEMU (TCG here) with the real debian-12 image and agent: cold and warm
//! cycles of three tasks each, where every task checks that the previous task's marker file is
//! gone from the guest's root filesystem (rollback), an overrunning guest destroyed at its
//! deadline, a cancelled task stopped at once, and crash recovery of a slot's own leftovers.

#[path = "support/agent.rs"]
mod agent;
#[path = "real_qemu_slot/fixture.rs"]
mod fixture;

use fixture::*;
use pyti_vmanager::warm_snapshot::RevertPath;
use pyti_vmanager::{probe_accel, IoDiskSource, ResolvedAccel, SlotMode, TaskOutcome, VmSlot};
use pyti_wire::agent_protocol::AgentMessage;
use std::time::{Duration, Instant};

/// Plenty for a one-line step under TCG (it takes ~1 s); a stuck guest fails the test, not CI.
const TASK_DEADLINE: Duration = Duration::from_secs(90);
/// The overrunning task's deadline: short, the point is that it is enforced.
const OVERRUN_DEADLINE: Duration = Duration::from_secs(6);
/// How long the warm test's guest gets to notice each plug of an I/O disk (~0.2 s needed).
const NOTICE_TIMEOUT: Duration = Duration::from_secs(5);

/// Checks that no earlier task's marker survived, then leaves one (and syncs it to the disk).
/// Also checks that the task starts after the recipe's prepare step.
fn marker_command(n: u32) -> String {
    format!(
        "test -e {PREPARED_FILE} || {{ echo 'prepare step did not run'; exit 4; }}; \
         test ! -e /var/tmp/marker || {{ echo \"marker of $(cat /var/tmp/marker) survived\"; exit 3; }}; \
         echo task-{n} > /var/tmp/marker && sync"
    )
}

/// How a test hands the I/O disk to the slot.
#[derive(Clone, Copy, PartialEq)]
enum Attach {
    File,
    /// Through nbdkit on a unix socket, as in production.
    Nbd,
}

async fn run_marker_task(
    slot: &mut VmSlot,
    dir: &std::path::Path,
    n: u32,
    attach: Attach,
) -> pyti_vmanager::TaskReport {
    let task_id = format!("{}-task-{n}", slot.name());
    let task = shell_task(&task_id, &marker_command(n), 60);
    let disk = io_disk(dir, &task);
    let export = (attach == Attach::Nbd)
        .then(|| NbdExport::start(&disk, &dir.join(format!("nbd-{n}.sock"))));
    let source = match &export {
        Some(export) => IoDiskSource::NbdUnix(export.socket.clone()),
        None => IoDiskSource::File(disk.clone()),
    };
    let report = slot
        .run_task(&task_id, source, TASK_DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    drop(export);
    assert_eq!(
        report.outcome,
        TaskOutcome::Done(AgentMessage::Done {
            task_id: task_id.clone()
        }),
        "task {n}; console: {}",
        std::fs::read_to_string(&slot.paths().console_log).unwrap_or_default()
    );
    let result = read_result(&disk);
    assert_eq!(result.task_id, task_id);
    // The agent also copied it into the result region, which the host reads without a mount.
    assert_eq!(
        read_region(&disk),
        result,
        "task {n}: the region holds result.json"
    );
    let step = &result.steps[0];
    assert!(step.outcome.succeeded(), "task {n}: {step:?}");
    eprintln!("task {n}: {:?}", report.timings);
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_qemu_cold_slot_boots_each_task_from_the_clean_disk() {
    let recipe = recipe();
    let image = tokio::task::spawn_blocking({
        let recipe = recipe.clone();
        move || guest_image(&recipe)
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir_in(target_tmp()).unwrap();
    let config = slot_config("cold", SlotMode::Cold, &recipe, &image, dir.path());
    let mut slot = VmSlot::open(hypervisor(), config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let prepared = slot.prepare().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(prepared.ready, AgentMessage::Ready { prepared: true, .. }),
        "{:?}",
        prepared.ready
    );
    eprintln!("cold prepare: boot to ready {:?}", prepared.boot_to_ready);

    for n in 1..=3 {
        let report = run_marker_task(&mut slot, dir.path(), n, Attach::File).await;
        assert!(report.timings.boot_to_ready.is_some(), "a cold task boots");
    }
    let name = slot.name().to_string();
    slot.undefine().await.unwrap();
    let hv = hypervisor();
    assert!(
        pyti_vmanager::slot_domain::SlotDomain::lookup(hv.connect(), &name)
            .unwrap()
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_qemu_warm_slot_reverts_between_tasks_and_survives_overrun_cancel_and_kill() {
    let recipe = recipe();
    let image = tokio::task::spawn_blocking({
        let recipe = recipe.clone();
        move || guest_image(&recipe)
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir_in(target_tmp()).unwrap();
    let mut config = slot_config("warm", SlotMode::Warm, &recipe, &image, dir.path());
    config.io_disk_notice_timeout = NOTICE_TIMEOUT;
    let mut slot = VmSlot::open(hypervisor(), config.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let prepared = slot.prepare().await.unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "warm prepare: boot to ready {:?}, snapshot {:?}",
        prepared.boot_to_ready, prepared.snapshot
    );

    for (n, attach) in [(1, Attach::File), (2, Attach::Nbd)] {
        let report = run_marker_task(&mut slot, dir.path(), n, attach).await;
        assert_eq!(
            report.timings.revert_path,
            Some(RevertPath::InPlace),
            "QEMU stays alive between tasks"
        );
    }

    // A guest that never reports done: it leaves a marker, then sleeps past the slot deadline.
    let task_id = format!("{}-overrun", slot.name());
    let task = shell_task(
        &task_id,
        "echo overrun > /var/tmp/marker && sync && sleep 600",
        900,
    );
    let disk = io_disk(dir.path(), &task);
    let started = Instant::now();
    let report = slot
        .run_task(&task_id, IoDiskSource::File(disk), OVERRUN_DEADLINE)
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(
        report.outcome,
        TaskOutcome::Overrun {
            deadline: OVERRUN_DEADLINE
        }
    );
    assert!(
        took < OVERRUN_DEADLINE + Duration::from_secs(15),
        "overrun handled in {took:?}"
    );
    assert_eq!(
        report.timings.revert_path,
        Some(RevertPath::Restarted),
        "the destroyed guest came back from the snapshot"
    );
    eprintln!("overrun: {:?}", report.timings);

    // The task's job is cancelled while the guest runs it: the guest is destroyed at once, not
    // at the deadline, and the slot comes back from the snapshot.
    let task_id = format!("{}-cancelled", slot.name());
    let task = shell_task(
        &task_id,
        "echo cancelled > /var/tmp/marker && sync && sleep 600",
        900,
    );
    let disk = io_disk(dir.path(), &task);
    let cancel = pyti_vmanager::CancellationToken::new();
    let canceller = {
        let (cancel, console) = (cancel.clone(), slot.paths().console_log.clone());
        std::thread::spawn(move || {
            wait_for_console(&console, "I/O disk found");
            cancel.cancel();
            Instant::now()
        })
    };
    let report = slot
        .run_task_until(&task_id, IoDiskSource::File(disk), TASK_DEADLINE, &cancel)
        .await
        .unwrap();
    let cancelled_at = canceller.join().unwrap();
    assert_eq!(report.outcome, TaskOutcome::Cancelled);
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(15),
        "cancel honoured after {:?}",
        cancelled_at.elapsed()
    );
    assert_eq!(report.timings.revert_path, Some(RevertPath::Restarted));

    // QEMU dies under a running task (killed from outside, as an OOM killer would): reported at
    // once as a dead guest, not at the deadline.
    let task_id = format!("{}-killed", slot.name());
    let task = shell_task(
        &task_id,
        "echo killed > /var/tmp/marker && sync && sleep 600",
        900,
    );
    let disk = io_disk(dir.path(), &task);
    let (name, console) = (slot.name().to_string(), slot.paths().console_log.clone());
    let killer = std::thread::spawn(move || {
        // Kill once the agent has picked the disk up (it says so on the console).
        wait_for_console(&console, "I/O disk found");
        let hv = hypervisor();
        let domain = pyti_vmanager::slot_domain::SlotDomain::lookup(hv.connect(), &name)
            .unwrap()
            .unwrap();
        domain.destroy().unwrap();
    });
    let started = Instant::now();
    let report = slot
        .run_task(&task_id, IoDiskSource::File(disk), TASK_DEADLINE)
        .await
        .unwrap();
    killer.join().unwrap();
    assert!(
        matches!(report.outcome, TaskOutcome::GuestDied { .. }),
        "{:?}",
        report.outcome
    );
    assert!(
        started.elapsed() < TASK_DEADLINE / 2,
        "death seen in {:?}",
        started.elapsed()
    );
    assert_eq!(report.timings.revert_path, Some(RevertPath::Restarted));

    // The guest misses the disk's hot-plug. Here the disk first carries another label, so the
    // agent ignores it, as a guest that lost the notification would; the label is fixed once the
    // agent has passed the disk over. The slot plugs the disk in again, and the task runs.
    let task_id = format!("{}-unnoticed-once", slot.name());
    let disk = io_disk(dir.path(), &shell_task(&task_id, "true", 60));
    relabel(&disk, "NOT-PYTI");
    let fixer = {
        let (disk, console) = (disk.clone(), slot.paths().console_log.clone());
        std::thread::spawn(move || {
            wait_for_console(&console, "not an I/O disk (label \"NOT-PYTI\")");
            relabel(&disk, "PYTI-IO");
        })
    };
    let report = slot
        .run_task(&task_id, IoDiskSource::File(disk), TASK_DEADLINE)
        .await
        .unwrap();
    fixer.join().unwrap();
    assert!(
        matches!(report.outcome, TaskOutcome::Done(_)),
        "{:?}",
        report.outcome
    );
    assert_eq!(report.timings.plugs, 2, "plugged in again once");
    assert_eq!(report.timings.revert_path, Some(RevertPath::InPlace));

    // A guest that never notices the disk is given up on after three plugs, long before the
    // task's deadline, and destroyed; the slot comes back from the snapshot.
    let task_id = format!("{}-unnoticed", slot.name());
    let disk = io_disk(dir.path(), &shell_task(&task_id, "true", 60));
    relabel(&disk, "NOT-PYTI");
    let started = Instant::now();
    let report = slot
        .run_task(&task_id, IoDiskSource::File(disk), TASK_DEADLINE)
        .await
        .unwrap();
    assert_eq!(
        report.outcome,
        TaskOutcome::DiskUnnoticed {
            plugs: 3,
            waited: NOTICE_TIMEOUT
        }
    );
    assert!(
        started.elapsed() < TASK_DEADLINE / 2,
        "given up after {:?}",
        started.elapsed()
    );
    assert_eq!(report.timings.revert_path, Some(RevertPath::Restarted));

    // The slot serves the next task, and the overrunning and killed tasks' markers are gone.
    let report = run_marker_task(&mut slot, dir.path(), 3, Attach::File).await;
    assert_eq!(report.timings.revert_path, Some(RevertPath::InPlace));

    // Crash recovery: a slave that died leaves the domain running with its snapshot; the next
    // slot of the same name cleans it up.
    let name = slot.name().to_string();
    drop(slot);
    let slot = VmSlot::open(hypervisor(), config).await.unwrap();
    assert!(
        slot.recovered().destroyed_domain && slot.recovered().undefined_domain,
        "{:?}",
        slot.recovered()
    );
    slot.undefine().await.unwrap();
    let hv = hypervisor();
    assert!(
        pyti_vmanager::slot_domain::SlotDomain::lookup(hv.connect(), &name)
            .unwrap()
            .is_none()
    );
}

/// Waits (at most a minute) until the guest's console log shows `text` after what it held when
/// called (the log is appended to across tasks, and starts afresh when QEMU restarts).
fn wait_for_console(console: &std::path::Path, text: &str) {
    let read = || std::fs::read(console).unwrap_or_default();
    let mut from = read().len();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let log = read();
        if log.len() < from {
            from = 0;
        }
        if String::from_utf8_lossy(&log[from..]).contains(text) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn real_qemu_accel_probe_decides_within_ten_seconds() {
    let started = Instant::now();
    let decision = probe_accel(URI).unwrap_or_else(|e| panic!("{e}"));
    let took = started.elapsed();
    eprintln!("accel probe: {decision:?} in {took:?}");
    assert!(took < Duration::from_secs(10), "probe took {took:?}");
    assert!(!decision.reason.is_empty());
    if decision.accel == ResolvedAccel::Tcg && std::path::Path::new("/dev/kvm").exists() {
        assert!(
            decision.reason.contains("KVM"),
            "the reason names what failed: {}",
            decision.reason
        );
    }
}
