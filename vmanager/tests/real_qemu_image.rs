//! End to end, on real QEMU under TCG: build the debian-12 image from the host's packages, boot
//! it with an I/O disk made on the host, and get back a valid `result.json` covering an offline
//! wheel install, an import, a timeout, a 50 MB writer and a blocked network access.

#[path = "support/agent.rs"]
mod agent;
#[path = "real_qemu_image/direct_boot.rs"]
mod direct_boot;

use agent::host_files;
use direct_boot::DirectBoot;
use pyti_vmanager::image::{self, BuildPhase, ImageCache};
use pyti_wire::agent_protocol::AgentMessage;
use pyti_wire::guest_task::{GuestStep, GuestTask, GUEST_TASK_SCHEMA};
use pyti_wire::io_layout::{GUEST_IO_MOUNT, IO_DISK_LABEL, TASK_FILE, WHEELHOUSE_DIR};
use pyti_wire::raw_data::{RawResult, StepOutcome};
use pyti_wire::recipe::Recipe;
use pyti_wire::template::Placeholder;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Per-stream cap the task asks for (small, so the 50 MB step shows the bound clearly).
const OUTPUT_LIMIT: u64 = 16 * 1024;

fn recipe() -> Recipe {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes/debian-12.toml");
    Recipe::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// A minimal pure-Python wheel, `pytiprobe-1.0-py3-none-any.whl`, written with the host's python.
fn make_wheel(dir: &Path) {
    let script = r#"
import sys, zipfile, hashlib, base64
files = {
    "pytiprobe/__init__.py": "VALUE = 42\n",
    "pytiprobe-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: pytiprobe\nVersion: 1.0\n",
    "pytiprobe-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: pyti-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    "pytiprobe-1.0.dist-info/top_level.txt": "pytiprobe\n",
}
record = []
for name, text in files.items():
    digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
    record.append(f"{name},sha256={digest},{len(text.encode())}")
record.append("pytiprobe-1.0.dist-info/RECORD,,")
with zipfile.ZipFile(sys.argv[1], "w") as z:
    for name, text in files.items():
        z.writestr(name, text)
    z.writestr("pytiprobe-1.0.dist-info/RECORD", "\n".join(record) + "\n")
"#;
    let status = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(dir.join("pytiprobe-1.0-py3-none-any.whl"))
        .status()
        .expect("host python3 runs");
    assert!(status.success());
}

fn step(name: &str, command: String, timeout_secs: u64, fails_task: bool) -> GuestStep {
    GuestStep {
        name: name.into(),
        command,
        timeout_secs,
        fails_task,
    }
}

/// The task: the recipe's own install and import steps, then the hostile ones.
fn task(recipe: &Recipe) -> GuestTask {
    let venv = recipe.python.venv.clone();
    let values = BTreeMap::from([
        (Placeholder::Interpreter, recipe.python.interpreter.clone()),
        (Placeholder::Venv, venv.clone()),
        (Placeholder::Python, format!("{venv}/bin/python")),
        (Placeholder::Package, "pytiprobe".to_string()),
        (Placeholder::Dist, "pytiprobe".to_string()),
        (
            Placeholder::Wheelhouse,
            format!("{GUEST_IO_MOUNT}/{WHEELHOUSE_DIR}"),
        ),
        (Placeholder::Io, GUEST_IO_MOUNT.to_string()),
        (Placeholder::Workdir, "/home/pyti/work".to_string()),
    ]);
    let expand = |name: &str| {
        let spec = recipe
            .steps
            .iter()
            .find(|s| s.name == name)
            .expect("recipe step");
        spec.template()
            .expand(&values)
            .expect("all placeholders known")
    };
    let python = format!("{venv}/bin/python");
    GuestTask {
        schema: GUEST_TASK_SCHEMA,
        task_id: "real-qemu-image-1".into(),
        host_time_unix: 2_000_000_000,
        output_limit_bytes: OUTPUT_LIMIT,
        steps: vec![
            step("install", expand("install"), 600, true),
            step("import", expand("import"), 300, true),
            step(
                "whoami",
                format!("id -u; pwd; date +%s; {python} -c 'import pytiprobe; print(pytiprobe.VALUE)'"),
                120,
                true,
            ),
            step(
                "bytecode",
                format!("{} -v -c 'import json' 2>&1 | grep -E 'code object from|bytecode is stale'", recipe.python.interpreter),
                120,
                true,
            ),
            step("sleep", "echo sleeping; sleep 60".into(), 2, false),
            step("flood", "head -c 50000000 /dev/zero | tr '\\0' x; echo tail-marker".into(), 300, false),
            step(
                "network",
                format!("{python} -c \"import socket; socket.create_connection(('1.1.1.1', 53), timeout=10); print('CONNECTED')\""),
                60,
                false,
            ),
            step("fail", "exit 7".into(), 30, true),
            step("after", "echo never".into(), 30, true),
        ],
    }
}

/// `mkfs.ext4 -d`: the I/O disk made on the host without mounting anything.
fn make_io_disk(content: &Path, image: &Path) {
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", IO_DISK_LABEL, "-d"])
        .arg(content)
        .arg(image)
        .arg("64M")
        .output()
        .expect("mkfs.ext4 runs (install e2fsprogs)");
    assert!(
        out.status.success(),
        "mkfs.ext4: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Reads a file back from the guest-written ext4 image with debugfs (test only: the real
/// extraction goes through the diskhandler's guestfs appliance).
fn debugfs_cat(image: &Path, file: &str) -> Vec<u8> {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(format!("cat /{file}"))
        .arg(image)
        .output()
        .expect("debugfs runs");
    assert!(out.status.success());
    out.stdout
}

#[test]
fn real_qemu_image_builds_boots_and_runs_a_task_offline() {
    let mut files = host_files();
    std::env::set_var("PYTI_AGENT", &files.agent);
    files.agent = image::agent_binary_path().expect("agent found via $PYTI_AGENT");
    let recipe = recipe();
    let temp = tempfile::tempdir().unwrap();
    let cache = ImageCache::new(temp.path().join("images"));

    let mut phases = Vec::new();
    let started = Instant::now();
    let guest = image::build(&recipe, &files, &cache, &mut |p| {
        eprintln!("build: {p:?}");
        phases.push(p);
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let cold = started.elapsed();
    eprintln!("cold build: {cold:?}");
    assert!(phases.iter().any(|p| matches!(
        p,
        BuildPhase::Finished {
            phase: image::Phase::RootFilesystem,
            ..
        }
    )));
    assert!(
        guest.system_disk.starts_with(cache.root()),
        "image is in the cache"
    );

    // Nothing changed: a cache hit, well under a second, which records the image as used.
    let manifest = guest.dir.join("image.json");
    let week = std::time::Duration::from_secs(7 * 24 * 60 * 60);
    std::fs::File::options()
        .write(true)
        .open(&manifest)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - 2 * week)
        .unwrap();
    let started = Instant::now();
    let mut hit = false;
    let again = image::build(&recipe, &files, &cache, &mut |p| {
        hit |= matches!(p, BuildPhase::CacheHit { .. })
    })
    .unwrap();
    let cached = started.elapsed();
    eprintln!("cached build: {cached:?}");
    assert!(hit, "second build is a cache hit");
    assert_eq!(again, guest);
    let used = std::fs::metadata(&manifest).unwrap().modified().unwrap();
    assert!(
        used.elapsed().unwrap() < week,
        "the cache hit marked the image used"
    );
    assert_eq!(
        cache.prune(&[], week).unwrap(),
        image::PrunedImages::default(),
        "an image just used is not pruned"
    );
    assert!(cached < Duration::from_secs(1), "cache hit took {cached:?}");
    // No half-built images left behind.
    let entries: Vec<_> = std::fs::read_dir(cache.root())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, vec![std::ffi::OsString::from(&guest.key)]);

    // The I/O disk, made on the host.
    let content = temp.path().join("io");
    std::fs::create_dir_all(content.join(WHEELHOUSE_DIR)).unwrap();
    make_wheel(&content.join(WHEELHOUSE_DIR));
    let task = task(&recipe);
    std::fs::write(content.join(TASK_FILE), serde_json::to_vec(&task).unwrap()).unwrap();
    let io_image = temp.path().join("io.img");
    make_io_disk(&content, &io_image);

    let mut vm = DirectBoot::start(
        &guest,
        &guest.system_disk,
        true,
        Some(&io_image),
        temp.path(),
    );
    let ready = vm.next_message(Duration::from_secs(420));
    let ready_at = vm.started.elapsed();
    eprintln!("boot + prepare to ready: {ready_at:?}");
    match &ready {
        AgentMessage::Ready {
            prepared, detail, ..
        } => assert!(*prepared, "prepare failed: {detail}\n{}", vm.console()),
        other => panic!("expected ready, got {other:?}"),
    }
    let started = vm.next_message(Duration::from_secs(60));
    assert_eq!(
        started,
        AgentMessage::Started {
            task_id: task.task_id.clone()
        }
    );
    let done = vm.next_message(Duration::from_secs(600));
    let done_at = vm.started.elapsed();
    eprintln!("task done at {done_at:?}");
    assert_eq!(
        done,
        AgentMessage::Done {
            task_id: task.task_id.clone()
        },
        "{}",
        vm.console()
    );

    // The agent waits for the next disk: a hot-plugged one (warm mode's path) is found and run.
    let second = GuestTask {
        schema: GUEST_TASK_SCHEMA,
        task_id: "real-qemu-image-2".into(),
        host_time_unix: 0,
        output_limit_bytes: OUTPUT_LIMIT,
        steps: vec![step("hello", "echo second task".into(), 30, true)],
    };
    let content2 = temp.path().join("io2");
    std::fs::create_dir_all(&content2).unwrap();
    std::fs::write(
        content2.join(TASK_FILE),
        serde_json::to_vec(&second).unwrap(),
    )
    .unwrap();
    let io_image2 = temp.path().join("io2.img");
    make_io_disk(&content2, &io_image2);
    let plugged = Instant::now();
    vm.hotplug_disk(&io_image2);
    assert_eq!(
        vm.next_message(Duration::from_secs(60)),
        AgentMessage::Started {
            task_id: second.task_id.clone()
        }
    );
    let seen_after = plugged.elapsed();
    assert_eq!(
        vm.next_message(Duration::from_secs(120)),
        AgentMessage::Done {
            task_id: second.task_id.clone()
        }
    );
    eprintln!(
        "hot-plugged disk: started after {seen_after:?}, done after {:?}",
        plugged.elapsed()
    );

    let console = vm.console();
    vm.stop();
    let result2: RawResult =
        serde_json::from_slice(&debugfs_cat(&io_image2, "result.json")).unwrap();
    result2.validate(&second.task_id, OUTPUT_LIMIT).unwrap();
    assert_eq!(result2.steps[0].stdout.head, "second task\n");
    for line in console.lines().filter(|l| l.starts_with("pyti-agent: ")) {
        eprintln!("console: {line}");
    }
    assert!(
        console.contains("PYTI-AGENT: {\"event\":\"done\""),
        "console echo:\n{console}"
    );

    let bytes = debugfs_cat(&io_image, "result.json");
    assert!(
        (bytes.len() as u64) < 4 * OUTPUT_LIMIT * task.steps.len() as u64,
        "result is bounded: {} bytes",
        bytes.len()
    );
    let result: RawResult = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)));
    result
        .validate(&task.task_id, OUTPUT_LIMIT)
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "agent {} kernel {} python {} uptime {:.1}..{:.1}",
        result.agent_version,
        result.guest_kernel,
        result.interpreter_version,
        result.uptime_start_secs,
        result.uptime_end_secs
    );
    assert_eq!(result.agent_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(result.guest_kernel, guest.kernel_release);
    assert!(
        result.interpreter_version.starts_with("Python 3."),
        "{}",
        result.interpreter_version
    );
    assert!(result.uptime_end_secs > result.uptime_start_secs && result.uptime_start_secs > 0.0);

    let by_name = |name: &str| {
        result
            .steps
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("step {name}"))
    };
    let show = |name: &str| format!("{:#?}", by_name(name));
    for name in ["install", "import", "whoami"] {
        assert_eq!(
            by_name(name).outcome,
            StepOutcome::Exited { code: 0 },
            "{}",
            show(name)
        );
    }
    assert!(
        by_name("install").stderr.head.contains("+ pytiprobe==1.0"),
        "{}",
        show("install")
    );
    assert!(
        by_name("import").stdout.head.contains("imported pytiprobe"),
        "{}",
        show("import")
    );
    assert!(
        by_name("install").max_rss_kib > 10_000,
        "{}",
        show("install")
    );
    assert!(
        by_name("install").user_cpu_secs > 0.0,
        "{}",
        show("install")
    );
    let whoami: Vec<&str> = by_name("whoami").stdout.head.lines().collect();
    assert_eq!(whoami[0], "1000", "steps run as the pyti user");
    assert_eq!(whoami[1], "/home/pyti/work");
    assert!(
        whoami[2].parse::<i64>().unwrap() >= task.host_time_unix,
        "clock stepped to the host time"
    );
    assert_eq!(whoami[3], "42");

    // The stdlib's bytecode was baked into the image: loaded, never recompiled.
    let bytecode = &by_name("bytecode").stdout.head;
    assert!(
        bytecode.contains("code object from '/usr/lib/python3.11/json/__pycache__/"),
        "{}",
        show("bytecode")
    );
    assert!(!bytecode.contains("stale"), "{}", show("bytecode"));

    let sleep = by_name("sleep");
    assert_eq!(sleep.outcome, StepOutcome::TimedOut, "{}", show("sleep"));
    assert!(
        sleep.wall_secs >= 2.0 && sleep.wall_secs < 10.0,
        "{}",
        show("sleep")
    );
    assert_eq!(sleep.stdout.head, "sleeping\n");

    let flood = by_name("flood");
    assert_eq!(flood.outcome, StepOutcome::Exited { code: 0 });
    assert_eq!(
        flood.stdout.total_bytes,
        50_000_000 + "tail-marker\n".len() as u64
    );
    assert_eq!(
        flood.stdout.dropped_bytes,
        flood.stdout.total_bytes - OUTPUT_LIMIT
    );
    assert!(flood.stdout.tail.ends_with("tail-marker\n"));

    let network = by_name("network");
    assert!(
        !network.outcome.succeeded(),
        "the guest must be offline: {}",
        show("network")
    );
    assert!(!network.stdout.head.contains("CONNECTED"));
    assert!(
        network.stderr.head.contains("unreachable") || network.stderr.tail.contains("unreachable"),
        "{}",
        show("network")
    );

    assert_eq!(by_name("fail").outcome, StepOutcome::Exited { code: 7 });
    assert_eq!(by_name("after").outcome, StepOutcome::Skipped);
}
