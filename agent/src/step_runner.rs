//! Running one step: `/bin/sh -c` as the step user in its own process group, with a timeout
//! that kills the whole group, bounded output capture, and rusage of the step's process tree.

use crate::capture::Capture;
use pyti_wire::guest_task::{GuestStep, GUEST_STEP_UID};
use pyti_wire::raw_data::{StepOutcome, StepRawData};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the output readers may keep going after the step's process group is gone: a
/// daemon that escaped the group (setsid) may hold the pipe open forever.
const READER_GRACE: Duration = Duration::from_secs(2);
/// Read size for output pipes.
const READ_CHUNK: usize = 64 * 1024;
/// `PATH` for steps: the distribution's standard directories.
const STEP_PATH: &str = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin";

/// Where and as whom steps run.
#[derive(Debug, Clone)]
pub struct StepContext<'a> {
    /// Working directory (the task's `{workdir}`).
    pub workdir: &'a Path,
    /// Home of the step user.
    pub home: &'a str,
    /// Bytes kept per stream.
    pub output_limit: u64,
    /// Run as the unprivileged step user (false only when the agent itself is unprivileged).
    pub drop_privileges: bool,
}

/// Runs `step` to completion or timeout and returns its raw data.
pub fn run_step(step: &GuestStep, ctx: &StepContext<'_>) -> StepRawData {
    let started = Instant::now();
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(&step.command)
        .current_dir(ctx.workdir)
        .env_clear()
        .env("PATH", STEP_PATH)
        .env("HOME", ctx.home)
        .env("USER", "pyti")
        .env("LOGNAME", "pyti")
        .env("LANG", "C.UTF-8")
        .env("TMPDIR", "/tmp")
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .env("PIP_NO_INPUT", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if ctx.drop_privileges {
        // std drops supplementary groups (setgroups(0)) before setuid when running as root.
        command.uid(GUEST_STEP_UID).gid(GUEST_STEP_UID);
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            return StepRawData {
                name: step.name.clone(),
                command: step.command.clone(),
                outcome: StepOutcome::NotStarted {
                    reason: e.to_string(),
                },
                wall_secs: started.elapsed().as_secs_f64(),
                user_cpu_secs: 0.0,
                system_cpu_secs: 0.0,
                max_rss_kib: 0,
                stdout: Default::default(),
                stderr: Default::default(),
            }
        }
    };
    let pid = child.id() as libc::pid_t;
    let stdout = Arc::new(Mutex::new(Capture::new(ctx.output_limit)));
    let stderr = Arc::new(Mutex::new(Capture::new(ctx.output_limit)));
    let (readers_done_tx, readers_done) = mpsc::channel::<()>();
    let mut readers = 0;
    if let Some(pipe) = child.stdout.take() {
        spawn_reader(pipe, stdout.clone(), readers_done_tx.clone());
        readers += 1;
    }
    if let Some(pipe) = child.stderr.take() {
        spawn_reader(pipe, stderr.clone(), readers_done_tx.clone());
        readers += 1;
    }
    drop(readers_done_tx);

    // wait4 on a thread so the main thread can enforce the timeout.
    let (exit_tx, exit) = mpsc::channel();
    std::thread::spawn(move || {
        let mut status = 0;
        // SAFETY: rusage is plain old data; zeroed is a valid value for wait4 to fill.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let rc = loop {
            // SAFETY: pid is our child; status and usage are valid for writes.
            let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
            if rc == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            break rc;
        };
        let _ = exit_tx.send((rc, status, usage));
    });
    let timeout = Duration::from_secs(step.timeout_secs.max(1));
    let mut timed_out = false;
    let (rc, status, usage) = match exit.recv_timeout(timeout) {
        Ok(v) => v,
        Err(_) => {
            timed_out = true;
            kill_group(pid);
            exit.recv().unwrap_or((-1, 0, zeroed_rusage()))
        }
    };
    let wall_secs = started.elapsed().as_secs_f64();
    // Whatever the step left running in its group dies with it.
    kill_group(pid);
    let deadline = Instant::now() + READER_GRACE;
    for _ in 0..readers {
        let left = deadline.saturating_duration_since(Instant::now());
        if readers_done.recv_timeout(left).is_err() {
            break;
        }
    }

    let outcome = if timed_out {
        StepOutcome::TimedOut
    } else if rc == -1 {
        StepOutcome::NotStarted {
            reason: format!("wait4 failed: {}", std::io::Error::last_os_error()),
        }
    } else if libc::WIFEXITED(status) {
        StepOutcome::Exited {
            code: libc::WEXITSTATUS(status),
        }
    } else if libc::WIFSIGNALED(status) {
        StepOutcome::Signaled {
            signal: libc::WTERMSIG(status),
        }
    } else {
        StepOutcome::Exited { code: -1 }
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let finish = |c: &Arc<Mutex<Capture>>| c.lock().map(|c| c.finish()).unwrap_or_default();
    StepRawData {
        name: step.name.clone(),
        command: step.command.clone(),
        outcome,
        wall_secs,
        user_cpu_secs: secs(usage.ru_utime),
        system_cpu_secs: secs(usage.ru_stime),
        // Linux reports ru_maxrss in KiB.
        max_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
        stdout: finish(&stdout),
        stderr: finish(&stderr),
    }
}

fn zeroed_rusage() -> libc::rusage {
    // SAFETY: rusage is plain old data.
    unsafe { std::mem::zeroed() }
}

/// SIGKILL to the step's whole process group (its pgid is its pid).
fn kill_group(pgid: libc::pid_t) {
    // SAFETY: plain syscall; ESRCH when the group is already gone is fine.
    unsafe {
        libc::killpg(pgid, libc::SIGKILL);
    }
}

/// Reads `pipe` to its end into `capture` on its own thread.
fn spawn_reader(
    mut pipe: impl Read + Send + 'static,
    capture: Arc<Mutex<Capture>>,
    done: mpsc::Sender<()>,
) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if let Ok(mut c) = capture.lock() {
                        c.push(&buf[..n]);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let _ = done.send(());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(dir: &Path) -> StepContext<'_> {
        StepContext {
            workdir: dir,
            home: "/tmp",
            output_limit: 1000,
            drop_privileges: false,
        }
    }

    fn step(command: &str, timeout_secs: u64) -> GuestStep {
        GuestStep {
            name: "t".into(),
            command: command.into(),
            timeout_secs,
            fails_task: true,
        }
    }

    #[test]
    fn exit_code_and_output() {
        let dir = tempfile::tempdir().unwrap();
        let r = run_step(
            &step("echo out; echo err >&2; exit 3", 10),
            &ctx(dir.path()),
        );
        assert_eq!(r.outcome, StepOutcome::Exited { code: 3 });
        assert_eq!(r.stdout.head, "out\n");
        assert_eq!(r.stderr.head, "err\n");
    }

    #[test]
    fn timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        // The background sleep holds stdout open; killing the group must end it too.
        let r = run_step(&step("sleep 30 & sleep 30", 1), &ctx(dir.path()));
        assert_eq!(r.outcome, StepOutcome::TimedOut);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn big_output_is_bounded_and_never_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let r = run_step(
            &step(
                "head -c 5000000 /dev/zero; head -c 3000000 /dev/zero >&2",
                30,
            ),
            &ctx(dir.path()),
        );
        assert_eq!(r.outcome, StepOutcome::Exited { code: 0 });
        assert_eq!(r.stdout.total_bytes, 5_000_000);
        assert_eq!(r.stdout.dropped_bytes, 5_000_000 - 1000);
        assert_eq!(r.stderr.dropped_bytes, 3_000_000 - 1000);
    }

    #[test]
    fn signal_and_rusage() {
        let dir = tempfile::tempdir().unwrap();
        let r = run_step(
            &step("python3 -c 'x = bytearray(50_000_000)'; kill -9 $$", 30),
            &ctx(dir.path()),
        );
        assert_eq!(r.outcome, StepOutcome::Signaled { signal: 9 });
        assert!(r.max_rss_kib > 40_000, "{}", r.max_rss_kib);
    }
}
