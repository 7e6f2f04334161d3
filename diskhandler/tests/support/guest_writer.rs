//! Stands in for the guest in tests and benchmarks: a second libguestfs appliance, in another
//! process (`guestfish --listen`), attached read-write to the same NBD export as the session.
//! It mounts the I/O disk only while the session has released it, exactly like the agent.

// Shared by the tests and the benchmark; each uses a part of it.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};

/// A `guestfish --listen` server with the I/O disk at `/dev/sda`; stopped on drop.
pub struct GuestWriter {
    pid: u32,
}

fn guestfish() -> Command {
    let mut command = Command::new("guestfish");
    if std::env::var_os("LIBGUESTFS_BACKEND").is_none() {
        command.env("LIBGUESTFS_BACKEND", "direct");
    }
    if std::env::var_os("LIBGUESTFS_BACKEND_SETTINGS").is_none() {
        // The test hosts have no working KVM; CI sets the variable where it differs.
        command.env("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg");
    }
    command
}

impl GuestWriter {
    /// Starts and launches the writer's appliance on the export behind `socket` (~9 s).
    pub fn start(socket: &Path) -> GuestWriter {
        let out = guestfish()
            .args(["--listen", "--format=raw", "-a"])
            .arg(format!("nbd://?socket={}", socket.display()))
            // The forked server keeps stderr open: capturing it would wait for the server to exit.
            .stderr(Stdio::inherit())
            .output()
            .expect("run guestfish --listen");
        let text = String::from_utf8_lossy(&out.stdout);
        let pid = text
            .split(['=', ';'])
            .nth(1)
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no GUESTFISH_PID in {text:?}"));
        let writer = GuestWriter { pid };
        writer.run(&["run"]).expect("launch the writer appliance");
        writer
    }

    /// Runs guestfish commands (`:`-separated words); returns stdout or stderr on failure.
    pub fn run(&self, words: &[&str]) -> Result<String, String> {
        let out = guestfish()
            .arg(format!("--remote={}", self.pid))
            .arg("--")
            .args(words)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Acts as the guest: mounts the disk with no stale cache, runs `words` (each command
    /// followed by `:`), unmounts and flushes. Returns the commands' output. A failing command
    /// stops the guestfish server, so commands expected to fail take guestfish's `-` prefix.
    pub fn as_guest(&self, words: &[&str]) -> String {
        let mut all = vec![
            "blockdev-flushbufs",
            "/dev/sda",
            ":",
            "mount",
            "/dev/sda",
            "/",
            ":",
        ];
        all.extend_from_slice(words);
        all.extend_from_slice(&["umount", "/", ":", "sync"]);
        self.run(&all)
            .unwrap_or_else(|e| panic!("guest writer failed: {e}"))
    }
}

impl GuestWriter {
    /// Acts as the agent writing the result region at `offset`: `payload` after a header for
    /// `task_id` that checksums `checksummed` (pass the same bytes for a valid region).
    pub fn write_region(
        &self,
        scratch: &Path,
        offset: u64,
        task_id: &str,
        checksummed: &[u8],
        payload: &[u8],
        has_artifacts: bool,
    ) {
        let header =
            pyti_wire::result_region::encode_header(task_id, checksummed, has_artifacts).unwrap();
        self.write_raw(
            scratch,
            payload,
            offset + pyti_wire::result_region::HEADER_BYTES,
        );
        self.write_raw(scratch, &header, offset);
    }

    /// Writes `bytes` to the disk's device at `offset`, bypassing the filesystem.
    pub fn write_raw(&self, scratch: &Path, bytes: &[u8], offset: u64) {
        let file = scratch.join("raw-write.bin");
        std::fs::write(&file, bytes).unwrap();
        self.run(&[
            "upload-offset",
            file.to_str().unwrap(),
            "/dev/sda",
            &offset.to_string(),
            ":",
            "sync",
        ])
        .unwrap_or_else(|e| panic!("raw write failed: {e}"));
    }
}

impl Drop for GuestWriter {
    fn drop(&mut self) {
        let _ = self.run(&["exit"]);
    }
}
