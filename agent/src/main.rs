//! pyti-agent: the program inside every pyti guest.
//!
//! It is the guest's `/init` (PID 1 after supermin's initrd mounts the root). At boot it mounts
//! the pseudo-filesystems, runs the image's `prepare` steps once, and sends "ready" over its
//! virtio-serial channel (echoed on the console) — the moment a warm snapshot is taken. Then,
//! forever: wait for an I/O disk labelled `PYTI-IO` (present at boot or hot-plugged), step the
//! clock, run the task's steps as the unprivileged `pyti` user, write `result.json`
//! atomically, unmount, and send "done". The guest has no network device.
//!
//! # Layout
//! - [`boot`]: PID 1 duties (mounts, orphans).
//! - [`prepare`]: the baked prepare plan and its marker.
//! - [`io_disk`]: finding the I/O disk by label, mounting and releasing it.
//! - [`task`]: one task from `task.json` to `result.json`.
//! - [`step_runner`] and [`capture`]: one step with timeout, rusage and bounded output.
//! - [`clock`], [`guest_info`]: wall clock and the facts recorded with each result.
//! - [`reporter`]: messages to the host.

mod boot;
mod capture;
mod clock;
mod guest_info;
mod io_disk;
mod prepare;
mod reporter;
mod step_runner;
mod task;

use pyti_wire::agent_protocol::AgentMessage;
use reporter::Reporter;

fn main() {
    let is_init = std::process::id() == 1;
    if is_init {
        boot::mount_pseudo_filesystems();
    }
    // SAFETY: plain syscall.
    let drop_privileges = unsafe { libc::geteuid() } == 0;
    let mut reporter = Reporter::new();
    reporter.log(&format!(
        "pyti-agent {} starting (pid {}, uptime {:.2} s)",
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        guest_info::uptime_secs()
    ));

    let prepared = prepare::prepare(drop_privileges);
    let info = guest_info::GuestInfo::collect(&prepared.interpreter);
    reporter.log(&format!(
        "prepared, uptime {:.2} s",
        guest_info::uptime_secs()
    ));
    reporter.send(&AgentMessage::Ready {
        agent_version: info.agent_version.clone(),
        prepared: prepared.ok,
        detail: prepared.detail,
    });

    let mut watcher = io_disk::IoDiskWatcher::default();
    loop {
        let dev = watcher.wait(&mut |line| reporter.log(line));
        reporter.log(&format!("I/O disk found at {}", dev.display()));
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            task::handle_disk(&dev, &mut reporter, &info, drop_privileges);
        }));
        if outcome.is_err() {
            // PID 1 must never exit (the kernel would panic); report and wait for the next disk.
            let _ = io_disk::unmount();
            reporter.send(&AgentMessage::Failed {
                task_id: None,
                detail: "the agent hit an internal error handling this disk; see the console log"
                    .into(),
            });
        }
        boot::reap_orphans();
    }
}
