//! Host checks for `pyti doctor`: can this machine launch the libguestfs appliance and export
//! I/O disks over NBD?
//!
//! Both checks block (an appliance launch takes ~9 s under TCG); the doctor runs them off the
//! async executor.

use std::process::Command;
use std::time::{Duration, Instant};

/// Something that stops the diskhandler from working, with the fix.
#[derive(Debug, thiserror::Error)]
pub enum HostProblem {
    #[error("the libguestfs appliance did not launch: {detail}. Run `libguestfs-test-tool` for details; install `libguestfs-tools` and a kernel (`linux-image-amd64`) with scripts/setup-host.sh")]
    ApplianceFailed { detail: String },
    #[error("`nbdkit` not found or not working ({detail}): install Debian package `nbdkit` (scripts/setup-host.sh does)")]
    NbdkitMissing { detail: String },
}

/// What a successful appliance launch reports.
#[derive(Debug, Clone)]
pub struct ApplianceInfo {
    pub libguestfs_version: String,
    pub backend: String,
    pub launch_time: Duration,
}

/// Launches a throw-away appliance on a scratch disk and shuts it down.
///
/// `force_tcg` selects software emulation, needed where KVM is absent or broken (as the
/// accelerator probe decides); the direct backend avoids needing libvirt for the appliance.
pub fn appliance(force_tcg: bool) -> Result<ApplianceInfo, HostProblem> {
    let failed = |e: guestfs::Error| HostProblem::ApplianceFailed {
        detail: format!("{e:?}"),
    };
    let handle = guestfs::Handle::create().map_err(failed)?;
    handle.set_backend("direct").map_err(failed)?;
    if force_tcg {
        handle
            .set_backend_settings(&["force_tcg"])
            .map_err(failed)?;
    }
    handle
        .add_drive_scratch(
            16 * 1024 * 1024,
            guestfs::AddDriveScratchOptArgs {
                name: None,
                label: None,
            },
        )
        .map_err(failed)?;
    let started = Instant::now();
    handle.launch().map_err(failed)?;
    let launch_time = started.elapsed();
    let version = handle.version().map_err(failed)?;
    let backend = handle.get_backend().map_err(failed)?;
    handle.shutdown().map_err(failed)?;
    Ok(ApplianceInfo {
        libguestfs_version: format!("{}.{}.{}", version.major, version.minor, version.release),
        backend: if force_tcg {
            format!("{backend} (TCG)")
        } else {
            backend
        },
        launch_time,
    })
}

/// Checks nbdkit and its `file` plugin, which export I/O disks to the appliance and the VM.
pub fn nbdkit() -> Result<String, HostProblem> {
    let missing = |detail: String| HostProblem::NbdkitMissing { detail };
    let out = Command::new("nbdkit")
        .args(["--version", "file"])
        .output()
        .map_err(|e| missing(e.to_string()))?;
    if !out.status.success() {
        return Err(missing(format!(
            "`nbdkit --version file` exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().next().unwrap_or("").trim().to_string())
}
