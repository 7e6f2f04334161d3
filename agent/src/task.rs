//! One task from an I/O disk: mount, read `task.json`, run the steps, write `result.json`
//! atomically, unmount, report.

use crate::guest_info::GuestInfo;
use crate::reporter::Reporter;
use crate::step_runner::{run_step, StepContext};
use crate::{boot, clock, io_disk};
use pyti_wire::agent_protocol::AgentMessage;
use pyti_wire::guest_task::{GuestTask, GUEST_STEP_UID, GUEST_TASK_SCHEMA};
use pyti_wire::io_layout::{
    ARTIFACTS_DIR, GUEST_IO_MOUNT, GUEST_WORKDIR, RESULT_FILE, RESULT_TEMP_FILE, TASK_FILE,
};
use pyti_wire::limits;
use pyti_wire::raw_data::{RawResult, StepOutcome, StepRawData, RAW_RESULT_SCHEMA};
use pyti_wire::result_region;
use std::io::{Read, Write};
use std::path::Path;

/// Longest task id the agent echoes back (ids are uuids; anything longer is refused).
const MAX_TASK_ID_BYTES: usize = 128;

/// Handles the I/O disk at `dev` from mount to the final message.
pub fn handle_disk(dev: &Path, reporter: &mut Reporter, info: &GuestInfo, drop_privileges: bool) {
    if let Err(e) = io_disk::mount(dev) {
        reporter.send(&AgentMessage::Failed {
            task_id: None,
            detail: format!("cannot mount I/O disk {}: {e}", dev.display()),
        });
        return;
    }
    let uptime_start_secs = crate::guest_info::uptime_secs();
    let io = Path::new(GUEST_IO_MOUNT);
    // Steps run unprivileged: the disk's root must be traversable whatever mode it was made with.
    if let Ok(meta) = std::fs::metadata(io) {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        let _ = std::fs::set_permissions(io, std::fs::Permissions::from_mode(mode | 0o755));
    }
    let task = match read_task(&io.join(TASK_FILE)) {
        Ok(task) => task,
        Err(detail) => {
            let _ = io_disk::unmount();
            reporter.send(&AgentMessage::Failed {
                task_id: None,
                detail,
            });
            return;
        }
    };
    if let Some(now) = clock::step_clock(task.host_time_unix) {
        reporter.log(&format!("clock stepped to {now}"));
    }
    reporter.send(&AgentMessage::Started {
        task_id: task.task_id.clone(),
    });

    let steps = run_steps(&task, io, Path::new(GUEST_WORKDIR), drop_privileges);
    let result = RawResult {
        schema: RAW_RESULT_SCHEMA,
        task_id: task.task_id.clone(),
        agent_version: info.agent_version.clone(),
        guest_kernel: info.guest_kernel.clone(),
        interpreter_version: info.interpreter_version.clone(),
        uptime_start_secs,
        uptime_end_secs: crate::guest_info::uptime_secs(),
        steps,
    };
    let written = write_result(io, &result);
    let has_artifacts =
        std::fs::read_dir(io.join(ARTIFACTS_DIR)).is_ok_and(|mut entries| entries.next().is_some());
    boot::reap_orphans();
    let unmounted = io_disk::unmount();
    match (written, unmounted) {
        (Ok(json), Ok(())) => {
            // Optional: without it the host reads result.json from the filesystem.
            if let Err(e) = write_result_region(dev, &task.task_id, &json, has_artifacts) {
                reporter.log(&format!("result region not written: {e}"));
            }
            reporter.send(&AgentMessage::Done {
                task_id: task.task_id,
            })
        }
        (Err(e), _) => reporter.send(&AgentMessage::Failed {
            task_id: Some(task.task_id),
            detail: format!("cannot write {RESULT_FILE}: {e}"),
        }),
        (Ok(_), Err(e)) => reporter.send(&AgentMessage::Failed {
            task_id: Some(task.task_id),
            detail: format!("{RESULT_FILE} written but the I/O disk did not unmount cleanly: {e}"),
        }),
    }
}

/// Runs the task's steps in order; after a failed `fails_task` step the rest are skipped.
fn run_steps(
    task: &GuestTask,
    io: &Path,
    workdir: &Path,
    drop_privileges: bool,
) -> Vec<StepRawData> {
    // A fresh, empty `{workdir}` per task.
    let _ = std::fs::remove_dir_all(workdir);
    if drop_privileges {
        let _ = boot::give_to(workdir, GUEST_STEP_UID);
        let artifacts = io.join(ARTIFACTS_DIR);
        if artifacts.is_dir() {
            let _ =
                std::os::unix::fs::chown(&artifacts, Some(GUEST_STEP_UID), Some(GUEST_STEP_UID));
        }
    } else {
        let _ = std::fs::create_dir_all(workdir);
    }
    let ctx = StepContext {
        workdir,
        home: "/home/pyti",
        output_limit: task.output_limit_bytes.min(limits::MAX_STEP_OUTPUT_BYTES),
        drop_privileges,
    };
    let mut failed = false;
    let mut results = Vec::new();
    for step in &task.steps {
        if failed {
            results.push(StepRawData {
                name: step.name.clone(),
                command: step.command.clone(),
                outcome: StepOutcome::Skipped,
                wall_secs: 0.0,
                user_cpu_secs: 0.0,
                system_cpu_secs: 0.0,
                max_rss_kib: 0,
                stdout: Default::default(),
                stderr: Default::default(),
            });
            continue;
        }
        let raw = run_step(step, &ctx);
        boot::reap_orphans();
        if step.fails_task && !raw.outcome.succeeded() {
            failed = true;
        }
        results.push(raw);
    }
    results
}

/// Reads and checks `task.json` (bounded size, schema, every limit).
pub fn read_task(path: &Path) -> Result<GuestTask, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open {TASK_FILE}: {e}"))?;
    let mut text = Vec::new();
    file.take(limits::MAX_TASK_FILE_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(|e| format!("cannot read {TASK_FILE}: {e}"))?;
    if text.len() as u64 > limits::MAX_TASK_FILE_BYTES {
        return Err(format!(
            "{TASK_FILE} exceeds {} bytes",
            limits::MAX_TASK_FILE_BYTES
        ));
    }
    let mut task: GuestTask =
        serde_json::from_slice(&text).map_err(|e| format!("bad {TASK_FILE}: {e}"))?;
    if task.schema != GUEST_TASK_SCHEMA {
        return Err(format!("{TASK_FILE} schema {} is not supported (agent speaks {GUEST_TASK_SCHEMA}); rebuild the image", task.schema));
    }
    if task.task_id.is_empty() || task.task_id.len() > MAX_TASK_ID_BYTES {
        return Err(format!("task id must be 1..={MAX_TASK_ID_BYTES} bytes"));
    }
    if task.steps.len() > limits::MAX_STEPS {
        return Err(format!(
            "{} steps, at most {}",
            task.steps.len(),
            limits::MAX_STEPS
        ));
    }
    for step in &mut task.steps {
        if step.name.chars().count() > limits::MAX_STEP_NAME_CHARS
            || step.command.len() > limits::MAX_COMMAND_BYTES
        {
            return Err(format!(
                "step `{}` has an over-long name or command",
                step.name.chars().take(64).collect::<String>()
            ));
        }
        step.timeout_secs = step
            .timeout_secs
            .clamp(limits::MIN_STEP_TIMEOUT_SECS, limits::MAX_STEP_TIMEOUT_SECS);
    }
    Ok(task)
}

/// Writes `result.json` atomically: temp file, fsync, rename, fsync of the directory.
pub fn write_result(io: &Path, result: &RawResult) -> std::io::Result<Vec<u8>> {
    let temp = io.join(RESULT_TEMP_FILE);
    let json = serde_json::to_vec(result).map_err(std::io::Error::other)?;
    {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(&json)?;
        file.sync_all()?;
    }
    std::fs::rename(&temp, io.join(RESULT_FILE))?;
    std::fs::File::open(io)?.sync_all()?;
    Ok(json)
}

/// Copies the result into the disk's result region (after the filesystem is unmounted): the
/// payload first, the header last, each synced, so the host never sees half a result.
pub fn write_result_region(
    dev: &Path,
    task_id: &str,
    json: &[u8],
    has_artifacts: bool,
) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom};
    use std::os::unix::fs::FileExt;
    let header = result_region::encode_header(task_id, json, has_artifacts)
        .map_err(std::io::Error::other)?;
    let mut disk = std::fs::OpenOptions::new().write(true).open(dev)?;
    let size = disk.seek(SeekFrom::End(0))?;
    let offset = result_region::region_offset(size).ok_or_else(|| {
        std::io::Error::other(format!("the disk ({size} bytes) has no result region"))
    })?;
    // A disk formatted by something else may have its filesystem over the region: never write
    // into a filesystem.
    match io_disk::filesystem_bytes(dev) {
        Some(fs_end) if fs_end <= offset => {}
        found => {
            return Err(std::io::Error::other(format!(
                "the filesystem ({found:?} bytes) reaches into the result region at {offset}"
            )))
        }
    }
    disk.write_all_at(json, offset + result_region::HEADER_BYTES)?;
    disk.sync_data()?;
    disk.write_all_at(&header, offset)?;
    disk.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_file_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(TASK_FILE);
        std::fs::write(&path, r#"{"schema":1,"task_id":"t1","host_time_unix":0,"output_limit_bytes":100,"steps":[{"name":"a","command":"true","timeout_secs":0,"fails_task":true}]}"#).unwrap();
        let task = read_task(&path).unwrap();
        assert_eq!(task.steps[0].timeout_secs, limits::MIN_STEP_TIMEOUT_SECS);
        std::fs::write(
            &path,
            r#"{"schema":9,"task_id":"t1","host_time_unix":0,"output_limit_bytes":100,"steps":[]}"#,
        )
        .unwrap();
        assert!(read_task(&path).unwrap_err().contains("schema 9"));
        std::fs::write(&path, vec![b' '; limits::MAX_TASK_FILE_BYTES as usize + 10]).unwrap();
        assert!(read_task(&path).unwrap_err().contains("exceeds"));
    }

    /// Formats `image` ext4 as the diskhandler does, over `fs_bytes` of it (all if `None`).
    fn mkfs(image: &Path, fs_bytes: Option<u64>) {
        let mut command = std::process::Command::new("mkfs.ext4");
        command.args(["-q", "-F", "-L", "PYTI-IO"]).arg(image);
        if let Some(bytes) = fs_bytes {
            command.arg(format!("{}k", bytes / 1024));
        }
        let out = command
            .output()
            .expect("mkfs.ext4 runs (install e2fsprogs)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn the_result_region_holds_the_result_after_the_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("io.img");
        let size = 64 * 1024 * 1024;
        let offset = result_region::region_offset(size).unwrap() as usize;
        std::fs::File::create(&disk).unwrap().set_len(size).unwrap();
        let json = br#"{"task_id":"t9"}"#;
        // A filesystem over the whole disk (not the diskhandler's layout) is never written into.
        mkfs(&disk, None);
        let before = std::fs::read(&disk).unwrap();
        let refused = write_result_region(&disk, "t9", json, false).unwrap_err();
        assert!(refused.to_string().contains("reaches into"), "{refused}");
        assert!(std::fs::read(&disk).unwrap() == before);
        // The diskhandler's layout: the filesystem ends where the region begins.
        mkfs(&disk, Some(offset as u64));
        let before = std::fs::read(&disk).unwrap();
        write_result_region(&disk, "t9", json, false).unwrap();
        let bytes = std::fs::read(&disk).unwrap();
        assert!(
            bytes[..offset] == before[..offset],
            "the filesystem part is untouched"
        );
        let header = result_region::decode_header(&bytes[offset..], 1 << 20).unwrap();
        assert_eq!(header.task_id, "t9");
        assert!(!header.has_artifacts);
        let start = offset + result_region::HEADER_BYTES as usize;
        result_region::verify_payload(&header, &bytes[start..start + json.len()]).unwrap();

        let tiny = dir.path().join("tiny.img");
        std::fs::File::create(&tiny).unwrap().set_len(4096).unwrap();
        assert!(write_result_region(&tiny, "t9", json, false).is_err());
    }

    #[test]
    fn result_is_written_atomically_and_valid() {
        let dir = tempfile::tempdir().unwrap();
        let task = GuestTask {
            schema: GUEST_TASK_SCHEMA,
            task_id: "t".into(),
            host_time_unix: 0,
            output_limit_bytes: 64,
            steps: vec![
                pyti_wire::guest_task::GuestStep {
                    name: "fail".into(),
                    command: "exit 1".into(),
                    timeout_secs: 5,
                    fails_task: true,
                },
                pyti_wire::guest_task::GuestStep {
                    name: "never".into(),
                    command: "true".into(),
                    timeout_secs: 5,
                    fails_task: true,
                },
            ],
        };
        let steps = run_steps(&task, dir.path(), &dir.path().join("work"), false);
        assert_eq!(steps[0].outcome, StepOutcome::Exited { code: 1 });
        assert_eq!(steps[1].outcome, StepOutcome::Skipped);
        let result = RawResult {
            schema: RAW_RESULT_SCHEMA,
            task_id: "t".into(),
            agent_version: "0".into(),
            guest_kernel: "k".into(),
            interpreter_version: "p".into(),
            uptime_start_secs: 1.0,
            uptime_end_secs: 2.0,
            steps,
        };
        write_result(dir.path(), &result).unwrap();
        let back: RawResult =
            serde_json::from_slice(&std::fs::read(dir.path().join(RESULT_FILE)).unwrap()).unwrap();
        back.validate("t", 64).unwrap();
        assert!(!dir.path().join(RESULT_TEMP_FILE).exists());
    }
}
