//! Benchmark: one long-lived session against an appliance launched per operation.
//!
//! Prints the session launch time; per task, inject (1 MiB package + 10 MiB wheelhouse) and
//! extract (64 KiB result, read from the result region as the agent writes it) medians over
//! `PYTI_BENCH_TASKS` tasks (default 20), and extract through the filesystem for comparison;
//! and, in the same run, the baseline of launching an appliance for each inject and each extract
//! (median of `PYTI_BENCH_BASELINE_RUNS`, default 3).
//! Run: `cargo bench -p pyti-diskhandler --bench session`.

#[path = "../tests/support/guest_writer.rs"]
mod guest_writer;

use guest_writer::GuestWriter;
use pyti_diskhandler::{
    Accelerator, PayloadFile, ResultSource, Session, SessionConfig, TaskPayload,
};
use pyti_wire::guest_task::{GuestStep, GuestTask, GUEST_TASK_SCHEMA};
use pyti_wire::raw_data::{CapturedOutput, RawResult, StepOutcome, StepRawData, RAW_RESULT_SCHEMA};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MIB: usize = 1024 * 1024;
const RESULT_BYTES: usize = 64 * 1024;

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn write_file(path: &Path, bytes: usize, seed: u8) -> PathBuf {
    // Varying bytes so nothing along the way can shortcut zero pages.
    let content: Vec<u8> = (0..bytes)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    std::fs::write(path, content).unwrap();
    path.to_path_buf()
}

fn task(task_id: &str) -> GuestTask {
    GuestTask {
        schema: GUEST_TASK_SCHEMA,
        task_id: task_id.to_string(),
        host_time_unix: 0,
        output_limit_bytes: RESULT_BYTES as u64,
        steps: vec![GuestStep {
            name: "test".into(),
            command: "python -m pytest".into(),
            timeout_secs: 600,
            fails_task: true,
        }],
    }
}

/// A valid result.json of about 64 KiB for `task_id`.
fn result_file(dir: &Path, task_id: &str) -> PathBuf {
    let result = RawResult {
        schema: RAW_RESULT_SCHEMA,
        task_id: task_id.to_string(),
        agent_version: "bench".into(),
        guest_kernel: "6.1".into(),
        interpreter_version: "Python 3.11".into(),
        uptime_start_secs: 1.0,
        uptime_end_secs: 2.0,
        steps: vec![StepRawData {
            name: "test".into(),
            command: "python -m pytest".into(),
            outcome: StepOutcome::Exited { code: 0 },
            wall_secs: 1.0,
            user_cpu_secs: 1.0,
            system_cpu_secs: 0.1,
            max_rss_kib: 1,
            stdout: CapturedOutput {
                head: "x".repeat(RESULT_BYTES - 600),
                ..Default::default()
            },
            stderr: CapturedOutput::default(),
        }],
    };
    let path = dir.join(format!("result-{task_id}.json"));
    std::fs::write(&path, serde_json::to_vec(&result).unwrap()).unwrap();
    path
}

/// The naive cycle: a fresh appliance for the inject and another for the extract.
fn baseline_cycle(image: &Path, package: &Path, wheels: &[PathBuf], result: &Path) -> Duration {
    let started = Instant::now();
    let launch = || {
        let g = guestfs::Handle::create().unwrap();
        g.set_backend("direct").unwrap();
        g.set_backend_settings(&["force_tcg"]).unwrap();
        g.add_drive(
            image.to_str().unwrap(),
            guestfs::AddDriveOptArgs {
                format: Some("raw"),
                ..Default::default()
            },
        )
        .unwrap();
        g.launch().unwrap();
        g.mount("/dev/sda", "/").unwrap();
        g
    };
    let g = launch();
    for name in g.ls("/").unwrap() {
        if name != "lost+found" {
            g.rm_rf(&format!("/{name}")).unwrap();
        }
    }
    g.mkdir("/package").unwrap();
    g.mkdir("/wheelhouse").unwrap();
    g.upload(package.to_str().unwrap(), "/package/pkg.tar.gz")
        .unwrap();
    for (i, wheel) in wheels.iter().enumerate() {
        g.upload(wheel.to_str().unwrap(), &format!("/wheelhouse/w{i}.whl"))
            .unwrap();
    }
    g.write("/task.json", b"{}").unwrap();
    // The guest's result, written here so the second appliance has something to read.
    g.upload(result.to_str().unwrap(), "/result.json").unwrap();
    g.shutdown().unwrap();
    drop(g);
    let g = launch();
    let size = g.lstatns("/result.json").unwrap().st_size;
    let bytes = g.pread("/result.json", size as i32, 0).unwrap();
    assert_eq!(bytes.len() as i64, size);
    g.shutdown().unwrap();
    started.elapsed()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let tasks = env_count("PYTI_BENCH_TASKS", 20).max(1);
    let baseline_runs = env_count("PYTI_BENCH_BASELINE_RUNS", 3).max(1);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let package = write_file(&d.join("pkg-1.0.tar.gz"), MIB, 1);
    let wheels: Vec<PathBuf> = (0..5)
        .map(|i| {
            write_file(
                &d.join(format!("dep{i}-1.0-py3-none-any.whl")),
                2 * MIB,
                i as u8,
            )
        })
        .collect();

    let mut config = SessionConfig::new(d.join("s"), 1);
    config.io_disk_bytes = 256 * MIB as u64;
    config.accelerator = Accelerator::Tcg;
    let started = Instant::now();
    let (session, mut disks) = Session::start(config).await.expect("session start");
    let launch_time = started.elapsed();
    let writer = GuestWriter::start(&session.io_disks()[0].nbd_socket);

    let mut held = disks.pop().unwrap();
    let region = pyti_wire::result_region::region_offset(256 * MIB as u64).unwrap();
    let (mut injects, mut extracts, mut cycles) = (Vec::new(), Vec::new(), Vec::new());
    let mut fs_extracts = Vec::new();
    // The last few tasks' guests write no result region (an older agent, or artifacts): the
    // filesystem path, for comparison.
    let fs_tasks = (tasks / 4).max(1);
    for i in 0..tasks + fs_tasks {
        let task_id = format!("bench-{i}");
        let payload = TaskPayload {
            task: task(&task_id),
            package: vec![PayloadFile::from_path(&package).unwrap()],
            wheelhouse: wheels
                .iter()
                .map(|w| PayloadFile::from_path(w).unwrap())
                .collect(),
        };
        let result = result_file(d, &task_id);
        let t = Instant::now();
        let released = session
            .inject(held, &payload)
            .await
            .map_err(|f| f.error)
            .unwrap();
        let inject = t.elapsed();
        writer.as_guest(&["upload", result.to_str().unwrap(), "/result.json", ":"]);
        let with_region = i < tasks;
        if with_region {
            let bytes = std::fs::read(&result).unwrap();
            writer.write_region(d, region, &task_id, &bytes, &bytes, false);
        }
        let t = Instant::now();
        let extraction = session.extract(released).await;
        let extract = t.elapsed();
        let output = extraction.outcome.expect("extract");
        assert!(output.result_bytes as usize > RESULT_BYTES - 1024);
        let expected = if with_region {
            ResultSource::Region
        } else {
            ResultSource::Filesystem
        };
        assert_eq!(output.source, expected);
        held = extraction.disk;
        if with_region {
            injects.push(inject);
            extracts.push(extract);
            cycles.push(inject + extract);
        } else {
            fs_extracts.push(extract);
        }
    }
    assert_eq!(session.launch_count(), 1);
    drop(writer);
    session.shutdown().await;

    let image = d.join("baseline.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(256 * MIB as u64)
        .unwrap();
    let status = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "PYTI-IO"])
        .arg(&image)
        .status()
        .unwrap();
    assert!(status.success());
    let result = result_file(d, "baseline");
    let mut baseline: Vec<Duration> = (0..baseline_runs)
        .map(|_| baseline_cycle(&image, &package, &wheels, &result))
        .collect();

    let session_cycle = median(&mut cycles);
    let baseline_cycle = median(&mut baseline);
    println!("pyti-diskhandler session benchmark (TCG, {tasks} tasks, payload 1 MiB + 5 x 2 MiB, result 64 KiB)");
    println!("{:<44} {:>12}", "measure", "ms");
    println!(
        "{:<44} {:>12.0}",
        "session start (mkfs + nbdkit + launch)",
        ms(launch_time)
    );
    println!(
        "{:<44} {:>12.1}",
        "inject, median",
        ms(median(&mut injects))
    );
    println!(
        "{:<44} {:>12.1}",
        "extract, median",
        ms(median(&mut extracts))
    );
    println!(
        "{:<44} {:>12.1}",
        "inject + extract, median",
        ms(session_cycle)
    );
    println!(
        "{:<44} {:>12.1}",
        format!("extract from the filesystem, median of {fs_tasks}"),
        ms(median(&mut fs_extracts))
    );
    println!(
        "{:<44} {:>12.1}",
        "inject + extract, max",
        ms(*cycles.iter().max().unwrap())
    );
    println!(
        "{:<44} {:>12.0}",
        format!("baseline: appliance per operation, median of {baseline_runs}"),
        ms(baseline_cycle)
    );
    println!(
        "ratio baseline / session: {:.0}x",
        baseline_cycle.as_secs_f64() / session_cycle.as_secs_f64()
    );
    println!(
        "target inject + extract <= 150 ms: {}",
        if session_cycle <= Duration::from_millis(150) {
            "met"
        } else {
            "NOT met"
        }
    );
}
