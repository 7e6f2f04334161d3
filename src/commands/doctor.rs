//! `pyti doctor`: checks the host and prints what to do about each failure.

use crate::cli::DoctorArgs;
use comfy_table::{Cell, Color};
use indicatif::{ProgressBar, ProgressStyle};
use pyti_diskhandler::host_check as disk;
use pyti_vmanager::accel::ResolvedAccel;
use pyti_vmanager::host_check as host;
use std::process::ExitCode;
use std::time::Duration;

/// The verdict of one check.
enum Status {
    Ok,
    /// Works, with a caveat (e.g. TCG instead of KVM).
    Warn,
    Fail,
}

struct Row {
    check: &'static str,
    status: Status,
    detail: String,
}

impl Row {
    fn ok(check: &'static str, detail: impl Into<String>) -> Row {
        Row {
            check,
            status: Status::Ok,
            detail: detail.into(),
        }
    }
    /// A failed check: the problem's message says what was found and what to do.
    fn fail(check: &'static str, problem: impl std::fmt::Display) -> Row {
        Row {
            check,
            status: Status::Fail,
            detail: problem.to_string(),
        }
    }
}

pub fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let spinner = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("static template"),
    );
    spinner.enable_steady_tick(Duration::from_millis(120));
    let mut rows = Vec::new();
    let uri = args.libvirt.libvirt_uri.as_str();

    spinner.set_message(format!("connecting to libvirt at {uri}"));
    rows.push(match host::libvirt(uri) {
        Ok(info) => Row::ok(
            "libvirt",
            format!(
                "{} (libvirt {}, QEMU driver {})",
                info.uri, info.libvirt_version, info.hypervisor_version
            ),
        ),
        Err(e) => Row::fail("libvirt", e),
    });
    spinner.set_message("checking virtlogd");
    rows.push(if uri.contains("embed") {
        Row::ok("virtlogd", "not needed by the embedded QEMU driver")
    } else {
        match host::virtlogd() {
            Ok(socket) => Row::ok("virtlogd", format!("listening on {}", socket.display())),
            Err(e) => Row::fail("virtlogd", e),
        }
    });
    spinner.set_message("checking QEMU");
    rows.push(match host::qemu() {
        Ok(v) => Row::ok("qemu", v),
        Err(e) => Row::fail("qemu", e),
    });
    spinner.set_message("probing KVM (falls back to TCG)");
    let (accel_row, force_tcg) = accel(uri);
    rows.push(accel_row);
    spinner.set_message("checking the image builder (supermin, kernel)");
    rows.push(match host::supermin() {
        Ok(v) => Row::ok("supermin", v),
        Err(e) => Row::fail("supermin", e),
    });
    // The same lookup the image builder uses, so doctor names the kernel images will boot.
    rows.push(match pyti_vmanager::image::find_host_kernel() {
        Ok(k) => Row::ok(
            "guest kernel",
            format!("{} ({})", k.release, k.bzimage.display()),
        ),
        Err(e) => Row::fail("guest kernel", e),
    });
    if args.skip_appliance {
        rows.push(Row {
            check: "libguestfs",
            status: Status::Warn,
            detail: "appliance launch skipped (--skip-appliance)".into(),
        });
    } else {
        spinner.set_message("launching a libguestfs appliance");
        rows.push(match disk::appliance(force_tcg) {
            Ok(info) => Row::ok(
                "libguestfs",
                format!(
                    "{} appliance launched in {:.1} s (backend {})",
                    info.libguestfs_version,
                    info.launch_time.as_secs_f64(),
                    info.backend
                ),
            ),
            Err(e) => Row::fail("libguestfs", e),
        });
    }
    rows.push(match disk::nbdkit() {
        Ok(v) => Row::ok("nbdkit", v),
        Err(e) => Row::fail("nbdkit", e),
    });
    let cache = dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("pyti");
    rows.push(match host::disk_space(&cache) {
        Ok(free) => Row::ok(
            "disk space",
            format!(
                "{:.1} GiB free for {}",
                free as f64 / (1u64 << 30) as f64,
                cache.display()
            ),
        ),
        Err(e) => Row::fail("disk space", e),
    });
    spinner.finish_and_clear();

    let mut table = super::new_table();
    table.set_header(["check", "status", "found / what to do"]);
    let mut failed = 0;
    for row in rows {
        let status = match row.status {
            Status::Ok => Cell::new("ok").fg(Color::Green),
            Status::Warn => Cell::new("warn").fg(Color::Yellow),
            Status::Fail => {
                failed += 1;
                Cell::new("FAIL").fg(Color::Red)
            }
        };
        table.add_row(vec![Cell::new(row.check), status, Cell::new(row.detail)]);
    }
    println!("{table}");
    if failed > 0 {
        println!(
            "{failed} check(s) failed: pyti cannot run tasks on this host until they are fixed."
        );
        Ok(ExitCode::from(1))
    } else {
        println!("This host can run pyti.");
        Ok(ExitCode::SUCCESS)
    }
}

/// Probes the accelerator; returns the row and whether libguestfs must use TCG too.
fn accel(uri: &str) -> (Row, bool) {
    match pyti_vmanager::accel::probe_accel(uri) {
        Ok(decision) => match decision.accel {
            ResolvedAccel::Kvm => (Row::ok("accelerator", format!("KVM: {}", decision.reason)), false),
            ResolvedAccel::Tcg => (
                Row {
                    check: "accelerator",
                    status: Status::Warn,
                    detail: format!(
                        "TCG fallback (guests ~10x slower): {}. Works as is; for speed run on a host where KVM guests start",
                        decision.reason
                    ),
                },
                true,
            ),
        },
        Err(e) => (Row::fail("accelerator", e), true),
    }
}
