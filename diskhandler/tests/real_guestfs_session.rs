//! The diskhandler's stories against real libguestfs (TCG here): one appliance for many tasks, a
//! guest writing behind the appliance's back through the shared NBD export, hostile guest output,
//! and an appliance that dies or hangs. The "guest" is a second appliance in another process
//! (tests/support/guest_writer.rs) attached to the same export.

mod support;

use pyti_diskhandler::{
    Accelerator, ExtractError, HeldDisk, InfrastructureError, InjectMethod, PayloadFile,
    ResultSource, Session, SessionConfig, TaskPayload,
};
use pyti_wire::guest_task::{GuestStep, GuestTask, GUEST_TASK_SCHEMA};
use pyti_wire::raw_data::{CapturedOutput, RawResult, StepOutcome, StepRawData, RAW_RESULT_SCHEMA};
use std::path::Path;
use std::time::{Duration, Instant};
use support::guest_writer::GuestWriter;

const MIB: u64 = 1024 * 1024;

fn config(dir: &Path) -> SessionConfig {
    let mut config = SessionConfig::new(dir, 1);
    config.io_disk_bytes = 64 * MIB;
    config.output_reserve_bytes = 4 * MIB;
    // Host without working KVM; the accelerator is a setting, tests pin it.
    config.accelerator = Accelerator::Tcg;
    config
}

fn payload(dir: &Path, task_id: &str) -> TaskPayload {
    let package = dir.join(format!("{task_id}.tar.gz"));
    std::fs::write(&package, format!("package of {task_id}")).unwrap();
    let wheel = dir.join("dep-1.0-py3-none-any.whl");
    std::fs::write(&wheel, vec![7u8; 100_000]).unwrap();
    TaskPayload {
        task: GuestTask {
            schema: GUEST_TASK_SCHEMA,
            task_id: task_id.to_string(),
            host_time_unix: 1_700_000_000,
            output_limit_bytes: 64 * 1024,
            steps: vec![GuestStep {
                name: "test".into(),
                command: "python -m pytest".into(),
                timeout_secs: 60,
                fails_task: true,
            }],
        },
        package: vec![PayloadFile::from_path(&package).unwrap()],
        wheelhouse: vec![PayloadFile::from_path(&wheel).unwrap()],
    }
}

fn result_json(task_id: &str) -> String {
    let result = RawResult {
        schema: RAW_RESULT_SCHEMA,
        task_id: task_id.to_string(),
        agent_version: "test".into(),
        guest_kernel: "6.1".into(),
        interpreter_version: "Python 3.11".into(),
        uptime_start_secs: 1.0,
        uptime_end_secs: 2.0,
        steps: vec![StepRawData {
            name: "test".into(),
            command: "python -m pytest".into(),
            outcome: StepOutcome::Exited { code: 0 },
            wall_secs: 1.0,
            user_cpu_secs: 0.5,
            system_cpu_secs: 0.1,
            max_rss_kib: 1000,
            stdout: CapturedOutput {
                head: format!("passed {task_id}"),
                ..Default::default()
            },
            stderr: CapturedOutput::default(),
        }],
    };
    serde_json::to_string(&result).unwrap()
}

/// Injects a task and acts as the guest (writes `words`), returning the released disk's extract.
async fn run_task(
    session: &Session,
    writer: &GuestWriter,
    held: HeldDisk,
    dir: &Path,
    task_id: &str,
    guest: &[&str],
) -> pyti_diskhandler::Extraction {
    let released = session
        .inject(held, &payload(dir, task_id))
        .await
        .unwrap_or_else(|f| panic!("inject {task_id}: {}", f.error));
    writer.as_guest(guest);
    session.extract(released).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_guestfs_twenty_tasks_one_launch_and_guest_writes_are_seen() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (session, mut disks) = Session::start(config(dir.path()))
        .await
        .expect("session start");
    eprintln!("session start: {:?}", started.elapsed());
    assert_eq!(session.launch_count(), 1);
    let io = session.io_disks()[0].clone();
    assert!(io.nbd_socket.exists() && io.size == 64 * MIB);
    let started = Instant::now();
    let writer = GuestWriter::start(&io.nbd_socket);
    eprintln!("guest writer start: {:?}", started.elapsed());
    let mut held = disks.pop().unwrap();
    let (mut inject_time, mut guest_time, mut extract_time) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for i in 0..20 {
        let task_id = format!("task-{i}");
        let result = result_json(&task_id);
        let artifact = format!("log of {task_id}");
        let started = Instant::now();
        let released = session
            .inject(held, &payload(dir.path(), &task_id))
            .await
            .unwrap_or_else(|f| panic!("inject {task_id}: {}", f.error));
        inject_time += started.elapsed();
        assert_eq!(released.task_id(), task_id);
        let started = Instant::now();
        // The guest sees this task's input only (the previous task's stray file is wiped), then
        // writes its result behind the appliance's back.
        let seen = writer.as_guest(&[
            "ls",
            "/",
            ":",
            "cat",
            "/task.json",
            ":",
            "cat",
            &format!("/package/{task_id}.tar.gz"),
            ":",
            "write",
            "/result.json",
            &result,
            ":",
            "mkdir",
            "/artifacts",
            ":",
            "write",
            "/artifacts/log.txt",
            &artifact,
            ":",
            "write",
            "/stray",
            "left by the guest",
            ":",
        ]);
        guest_time += started.elapsed();
        let listing: Vec<&str> = seen.lines().take(4).collect();
        assert_eq!(
            listing,
            ["lost+found", "package", "task.json", "wheelhouse"],
            "task {i}: {seen}"
        );
        assert!(
            seen.contains(&format!("\"task_id\": \"{task_id}\"")),
            "task {i}: {seen}"
        );
        assert!(
            seen.contains(&format!("package of {task_id}")),
            "task {i}: {seen}"
        );

        let started = Instant::now();
        let extraction = session.extract(released).await;
        extract_time += started.elapsed();
        let output = extraction
            .outcome
            .unwrap_or_else(|e| panic!("extract {task_id}: {e}"));
        assert_eq!(output.result.task_id, task_id);
        assert_eq!(
            output.result.steps[0].stdout.head,
            format!("passed {task_id}")
        );
        assert_eq!(output.result_bytes, result.len() as u64);
        assert_eq!(output.artifacts.len(), 1);
        assert_eq!(output.artifacts[0].path, "log.txt");
        assert_eq!(output.artifacts[0].content, artifact.as_bytes());
        held = extraction.disk;
    }
    eprintln!("20 tasks: inject {inject_time:?}, guest {guest_time:?}, extract {extract_time:?}");
    assert_eq!(
        session.launch_count(),
        1,
        "20 tasks must share one appliance launch"
    );
    drop(writer);
    session.shutdown().await;
    assert!(
        !io.nbd_socket.exists() && !io.image_path.exists(),
        "shutdown cleans up"
    );
}

fn expect_err(extraction: &pyti_diskhandler::Extraction, what: &str) -> String {
    match &extraction.outcome {
        Ok(_) => panic!("{what}: extract succeeded on a hostile disk"),
        Err(e) => {
            assert!(
                !e.is_infrastructure(),
                "{what}: {e} must blame the guest, not the machinery"
            );
            e.to_string()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_guestfs_hostile_disks_give_clear_statuses_and_the_session_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let (session, mut disks) = Session::start(config(dir.path()))
        .await
        .expect("session start");
    let writer = GuestWriter::start(&session.io_disks()[0].nbd_socket);
    let mut held = disks.pop().unwrap();
    let d = dir.path();

    // result.json larger than the 16 MiB limit (sparse: only its size matters): refused unread.
    let x = run_task(
        &session,
        &writer,
        held,
        d,
        "big",
        &[
            "touch",
            "/result.json",
            ":",
            "truncate-size",
            "/result.json",
            "17000000",
            ":",
        ],
    )
    .await;
    let message = expect_err(&x, "oversized");
    assert!(
        matches!(
            x.outcome,
            Err(ExtractError::ResultTooLarge {
                size: 17_000_000,
                ..
            })
        ),
        "{message}"
    );
    held = x.disk;

    // result.json as a symlink pointing out of the I/O root.
    let x = run_task(
        &session,
        &writer,
        held,
        d,
        "link",
        &["ln-s", "/etc/shadow", "/result.json", ":"],
    )
    .await;
    let message = expect_err(&x, "symlink");
    assert!(
        matches!(
            x.outcome,
            Err(ExtractError::NotARegularFile {
                kind: "symbolic link",
                ..
            })
        ),
        "{message}"
    );
    held = x.disk;

    // result.json as a device node.
    let x = run_task(
        &session,
        &writer,
        held,
        d,
        "dev",
        &["mknod-c", "0666", "1", "3", "/result.json", ":"],
    )
    .await;
    let message = expect_err(&x, "device");
    assert!(
        matches!(
            x.outcome,
            Err(ExtractError::NotARegularFile {
                kind: "character device",
                ..
            })
        ),
        "{message}"
    );
    held = x.disk;

    // Not JSON at all, JSON of the wrong shape, and a valid result for another task.
    let x = run_task(
        &session,
        &writer,
        held,
        d,
        "garbage",
        &["write", "/result.json", "not json {", ":"],
    )
    .await;
    let message = expect_err(&x, "not json");
    assert!(
        matches!(x.outcome, Err(ExtractError::NotJson { .. })),
        "{message}"
    );
    held = x.disk;
    let x = run_task(
        &session,
        &writer,
        held,
        d,
        "shape",
        &["write", "/result.json", "{\"hello\": 1}", ":"],
    )
    .await;
    let message = expect_err(&x, "wrong shape");
    assert!(
        matches!(x.outcome, Err(ExtractError::BadSchema { .. })),
        "{message}"
    );
    held = x.disk;
    let stale = result_json("some-other-task");
    let x = run_task(
        &session,
        &writer,
        held,
        d,
        "stale",
        &["write", "/result.json", &stale, ":"],
    )
    .await;
    let message = expect_err(&x, "stale");
    assert!(
        matches!(x.outcome, Err(ExtractError::Invalid(_))),
        "{message}"
    );
    held = x.disk;

    // A valid result with an artifact symlinked out of the root.
    let good = result_json("artlink");
    let x = run_task(
        &session,
        &writer,
        held,
        d,
        "artlink",
        &[
            "write",
            "/result.json",
            &good,
            ":",
            "mkdir",
            "/artifacts",
            ":",
            "ln-s",
            "/etc/passwd",
            "/artifacts/p",
            ":",
        ],
    )
    .await;
    let message = expect_err(&x, "artifact symlink");
    assert!(
        matches!(&x.outcome, Err(ExtractError::NotARegularFile { path, .. }) if path == "artifacts/p"),
        "{message}"
    );
    held = x.disk;

    // No result at all.
    let x = run_task(&session, &writer, held, d, "silent", &[]).await;
    let message = expect_err(&x, "missing");
    assert!(matches!(x.outcome, Err(ExtractError::Missing)), "{message}");
    held = x.disk;

    // The guest fills the filesystem and never writes its result.
    let released = session
        .inject(held, &payload(d, "full"))
        .await
        .map_err(|f| f.error)
        .unwrap();
    // `-`: guestfish ignores this command's error (ENOSPC is the point).
    writer.as_guest(&["-fill", "0x41", "100000000", "/filler", ":"]);
    let x = session.extract(released).await;
    let message = expect_err(&x, "full");
    assert!(
        matches!(x.outcome, Err(ExtractError::FilesystemFull { .. })),
        "{message}"
    );
    held = x.disk;

    // The guest destroys the filesystem: extract says so, the next inject reformats.
    let released = session
        .inject(held, &payload(d, "wreck"))
        .await
        .map_err(|f| f.error)
        .unwrap();
    writer
        .run(&["zero", "/dev/sda", ":", "sync"])
        .expect("zero the disk");
    let x = session.extract(released).await;
    let message = expect_err(&x, "wrecked");
    assert!(
        matches!(x.outcome, Err(ExtractError::Unmountable { .. })),
        "{message}"
    );
    held = x.disk;

    // The result region after the filesystem, as the agent writes it: read with no mount, even
    // with no result.json on the filesystem at all.
    let region = pyti_wire::result_region::region_offset(64 * MIB).unwrap();
    let good = result_json("region");
    let released = session
        .inject(held, &payload(d, "region"))
        .await
        .map_err(|f| f.error)
        .unwrap();
    writer.write_region(d, region, "region", good.as_bytes(), good.as_bytes(), false);
    let x = session.extract(released).await;
    let output = x.outcome.as_ref().expect("a valid result region");
    assert_eq!(output.result.task_id, "region");
    assert_eq!(output.source, ResultSource::Region);
    held = x.disk;

    // A region naming another task, one whose payload does not match its checksum (a torn
    // write), and one announcing more than the limit: each refused with its reason.
    for (task, named, payload_bytes, what) in [
        (
            "region-other",
            "someone-else",
            good.clone(),
            "names task `someone-else`",
        ),
        (
            "region-torn",
            "region-torn",
            "{\"torn\": true}".to_string(),
            "checksum",
        ),
    ] {
        let released = session
            .inject(held, &payload(d, task))
            .await
            .map_err(|f| f.error)
            .unwrap();
        writer.write_region(
            d,
            region,
            named,
            good.as_bytes(),
            payload_bytes.as_bytes(),
            false,
        );
        let x = session.extract(released).await;
        let message = expect_err(&x, task);
        assert!(
            matches!(x.outcome, Err(ExtractError::Region(_))) && message.contains(what),
            "{task}: {message}"
        );
        held = x.disk;
    }
    let released = session
        .inject(held, &payload(d, "region-big"))
        .await
        .map_err(|f| f.error)
        .unwrap();
    let mut header = pyti_wire::result_region::encode_header("region-big", b"{}", false).unwrap();
    header[8..16].copy_from_slice(&(17_000_000u64).to_le_bytes());
    writer.write_raw(d, &header, region);
    let x = session.extract(released).await;
    let message = expect_err(&x, "region-big");
    assert!(message.contains("17000000 bytes"), "{message}");
    held = x.disk;

    // A guest that left artifacts: the region says so and the filesystem is read for them.
    let good = result_json("region-artifacts");
    let released = session
        .inject(held, &payload(d, "region-artifacts"))
        .await
        .map_err(|f| f.error)
        .unwrap();
    writer.as_guest(&[
        "write",
        "/result.json",
        &good,
        ":",
        "mkdir",
        "/artifacts",
        ":",
        "write",
        "/artifacts/log.txt",
        "logged",
        ":",
    ]);
    writer.write_region(
        d,
        region,
        "region-artifacts",
        good.as_bytes(),
        good.as_bytes(),
        true,
    );
    let x = session.extract(released).await;
    let output = x.outcome.as_ref().expect("result and artifacts");
    assert_eq!(output.source, ResultSource::Filesystem);
    assert_eq!(output.artifacts.len(), 1, "{:?}", output.artifacts);
    held = x.disk;

    // After all that, a normal task works, on the same appliance.
    let good = result_json("after");
    let x = run_task(
        &session,
        &writer,
        held,
        d,
        "after",
        &["write", "/result.json", &good, ":"],
    )
    .await;
    assert_eq!(
        x.outcome
            .expect("normal task after hostile ones")
            .result
            .task_id,
        "after"
    );
    assert_eq!(session.launch_count(), 1);

    // A payload that cannot fit is refused before the VM would start, with the sizes to fix it.
    let huge = d.join("huge.whl");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(80 * MIB)
        .unwrap();
    let mut too_big = payload(d, "too-big");
    too_big
        .wheelhouse
        .push(PayloadFile::from_path(&huge).unwrap());
    let failure = session
        .inject(x.disk, &too_big)
        .await
        .expect_err("80 MiB on a 64 MiB disk");
    assert!(!failure.error.is_infrastructure());
    assert!(
        failure.error.to_string().contains("raise io_disk_bytes"),
        "{}",
        failure.error
    );
    drop(writer);
    session.shutdown().await;
}

fn signal(pid: i32, signal: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    assert_eq!(
        unsafe { libc::kill(pid, signal) },
        0,
        "signal {signal} to {pid}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_guestfs_killed_or_hung_appliance_is_relaunched_and_the_next_task_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.operation_timeout = Duration::from_secs(5);
    // Inject through the appliance here, so a relaunch on inject is exercised too.
    config.inject_method = InjectMethod::Appliance;
    let (session, mut disks) = Session::start(config).await.expect("session start");
    let writer = GuestWriter::start(&session.io_disks()[0].nbd_socket);
    let d = dir.path();
    let held = disks.pop().unwrap();

    // The appliance is killed while the guest runs: extract relaunches it and still reads the
    // guest's result (the disk lives in nbdkit, not in the appliance).
    let released = session
        .inject(held, &payload(d, "a"))
        .await
        .map_err(|f| f.error)
        .unwrap();
    let first = session.appliance_pid().expect("appliance pid");
    signal(first, libc::SIGKILL);
    writer.as_guest(&["write", "/result.json", &result_json("a"), ":"]);
    let x = session.extract(released).await;
    assert_eq!(
        x.outcome.expect("extract after relaunch").result.task_id,
        "a"
    );
    assert_eq!(session.launch_count(), 2);
    assert_ne!(session.appliance_pid(), Some(first));

    // The appliance hangs in the middle of an operation: the watchdog kills it and the task in
    // flight is an infrastructure failure (tmpfail), not a test failure.
    let released = session
        .inject(x.disk, &payload(d, "b"))
        .await
        .map_err(|f| f.error)
        .unwrap();
    writer.as_guest(&["write", "/result.json", &result_json("b"), ":"]);
    signal(session.appliance_pid().expect("pid"), libc::SIGSTOP);
    let x = session.extract(released).await;
    match &x.outcome {
        Err(e @ ExtractError::Infrastructure(InfrastructureError::Hung { .. })) => {
            assert!(e.is_infrastructure())
        }
        other => panic!("expected a hung-appliance tmpfail, got {other:?}"),
    }

    // The next task relaunches and succeeds.
    let x = run_task(
        &session,
        &writer,
        x.disk,
        d,
        "c",
        &["write", "/result.json", &result_json("c"), ":"],
    )
    .await;
    assert_eq!(x.outcome.expect("task after the hang").result.task_id, "c");
    assert_eq!(session.launch_count(), 3);
    drop(writer);
    session.shutdown().await;
}
