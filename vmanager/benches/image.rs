//! Image build and boot figures: cold and cached build, first boot (with the recipe's prepare
//! steps), and boot-to-agent-ready of a prepared disk (median of several boots) for the
//! extracted vmlinux against the distribution's compressed bzImage as the baseline.
//!
//! `cargo bench -p pyti-vmanager --bench image` (real QEMU under TCG; takes a few minutes).

#[path = "../tests/support/agent.rs"]
mod agent;
#[path = "../tests/real_qemu_image/direct_boot.rs"]
#[allow(dead_code)] // The bench boots without hot-plugging.
mod direct_boot;

use agent::host_files;
use direct_boot::DirectBoot;
use pyti_vmanager::image::{self, GuestImage, ImageCache};
use pyti_wire::agent_protocol::AgentMessage;
use pyti_wire::recipe::Recipe;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Boots per kernel variant for the median.
const BOOTS: usize = 3;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Boots `image` on `disk` and returns the time until the agent's "ready".
fn boot_to_ready(image: &GuestImage, disk: &Path, dir: &Path) -> (Duration, bool) {
    let mut vm = DirectBoot::start(image, disk, false, None, dir);
    let message = vm.next_message(Duration::from_secs(300));
    let elapsed = vm.started.elapsed();
    let prepared = matches!(message, AgentMessage::Ready { prepared: true, .. });
    // Let the agent's "prepared" line reach the console before reading it.
    std::thread::sleep(Duration::from_millis(200));
    for line in vm
        .console()
        .lines()
        .filter(|l| l.starts_with("pyti-agent: "))
    {
        eprintln!("  {line}");
    }
    vm.stop();
    (elapsed, prepared)
}

fn main() {
    let files = host_files();
    let recipe =
        Recipe::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes/debian-12.toml"))
            .unwrap_or_else(|e| panic!("{e}"));
    let temp = tempfile::tempdir().unwrap();
    let cache = ImageCache::new(temp.path().join("images"));

    let started = Instant::now();
    let guest =
        image::build(&recipe, &files, &cache, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    let cold = started.elapsed();
    let started = Instant::now();
    image::build(&recipe, &files, &cache, &mut |_| {}).unwrap();
    let cached = started.elapsed();

    // A writable overlay, prepared once: later boots find the marker and skip the prepare steps.
    let overlay = temp.path().join("overlay.qcow2");
    let status = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(&guest.system_disk)
        .arg(&overlay)
        .status()
        .unwrap();
    assert!(status.success());
    let (first_boot, prepared) = boot_to_ready(&guest, &overlay, temp.path());
    assert!(prepared, "prepare failed on first boot");

    let mut baseline_image = guest.clone();
    baseline_image.kernel = Path::new("/boot").join(format!("vmlinuz-{}", guest.kernel_release));
    let mut vmlinux = Vec::new();
    let mut bzimage = Vec::new();
    for _ in 0..BOOTS {
        vmlinux.push(boot_to_ready(&guest, &overlay, temp.path()).0);
        bzimage.push(boot_to_ready(&baseline_image, &overlay, temp.path()).0);
    }
    let (vmlinux, bzimage) = (median(vmlinux), median(bzimage));

    let secs = |d: Duration| format!("{:.2} s", d.as_secs_f64());
    println!("{:<52} {:>10} {:>8}", "measurement (TCG)", "time", "ratio");
    println!(
        "{:<52} {:>10} {:>8}",
        "image build, cold",
        secs(cold),
        "1.00"
    );
    println!(
        "{:<52} {:>10} {:>8.4}",
        "image build, cached",
        secs(cached),
        cached.as_secs_f64() / cold.as_secs_f64()
    );
    println!(
        "{:<52} {:>10} {:>8}",
        "first boot to ready (incl. prepare: venv)",
        secs(first_boot),
        ""
    );
    println!(
        "{:<52} {:>10} {:>8}",
        format!("boot to ready, bzImage baseline (median of {BOOTS})"),
        secs(bzimage),
        "1.00"
    );
    println!(
        "{:<52} {:>10} {:>8.2}",
        format!("boot to ready, vmlinux (median of {BOOTS})"),
        secs(vmlinux),
        vmlinux.as_secs_f64() / bzimage.as_secs_f64()
    );
}
