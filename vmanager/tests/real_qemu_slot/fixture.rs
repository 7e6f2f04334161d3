//! What the real-QEMU slot tests and the slot benchmark share: one cached guest image, I/O disks
//! made on the host, and results read back from them.

// Shared by the tests and the benchmark; each uses a part.
#![allow(dead_code)]

use pyti_vmanager::image::{self, GuestImage, ImageCache};
use pyti_vmanager::{BootFiles, Hypervisor, SlotConfig, SlotMode};
use pyti_wire::guest_task::{GuestStep, GuestTask, GUEST_TASK_SCHEMA};
use pyti_wire::raw_data::RawResult;
use pyti_wire::recipe::{Recipe, StepSpec};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// The libvirt URI the real tests use (QEMU as this user, through libvirtd).
pub const URI: &str = "qemu:///system";

/// Left in the guest's root filesystem by the test recipe's prepare step.
pub const PREPARED_FILE: &str = "/var/tmp/prepared";

/// The shipped debian-12 recipe with one quick prepare step instead of its venv creation
/// (~40 s under TCG): slot tests are about clean states, and the step's file shows that every
/// task starts from the post-prepare state.
pub fn recipe() -> Recipe {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes/debian-12.toml");
    let mut recipe = Recipe::load(&path).unwrap_or_else(|e| panic!("{e}"));
    recipe.prepare = vec![StepSpec {
        name: "leave-evidence".into(),
        // No `sync`: the agent must sync what prepare steps wrote before its marker.
        run: format!("echo prepared > {PREPARED_FILE}"),
        timeout_secs: 60,
        fails_task: true,
    }];
    recipe
}

/// A stable directory under cargo's target dir: repeated runs reuse the cached image.
pub fn target_tmp() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// Builds the debian-12 image once (cache hit on later runs). Tests run as separate processes,
/// so a file lock keeps two of them from building the same image at once.
pub fn guest_image(recipe: &Recipe) -> GuestImage {
    let cache = ImageCache::new(target_tmp().join("pyti-vmtest-images"));
    std::fs::create_dir_all(cache.root()).unwrap();
    let lock = std::fs::File::create(cache.root().join(".build-lock")).unwrap();
    // SAFETY: flock on a file descriptor we own; released when `lock` is dropped.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    let files = crate::agent::host_files();
    let started = std::time::Instant::now();
    let image = image::build(recipe, &files, &cache, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "guest image ready in {:?}: {}",
        started.elapsed(),
        image.dir.display()
    );
    prune_stale_images(cache.root(), &image.dir);
    image
}

/// Images older than this, other than the current one, are removed from the test cache: every
/// agent rebuild changes the key, and a busy working tree would otherwise pile up gigabytes.
/// (Old enough that no concurrently running test still boots from it.)
const STALE_IMAGE_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

fn prune_stale_images(root: &Path, current: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_IMAGE_AGE);
        if path.is_dir() && path != current && stale {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

pub fn boot_files(image: &GuestImage) -> BootFiles {
    BootFiles {
        kernel: image.kernel.clone(),
        initrd: Some(image.initrd.clone()),
        system_disk: image.system_disk.clone(),
        kernel_cmdline: image.kernel_cmdline.clone(),
    }
}

/// A slot configuration for `recipe`'s guest, named `pyti-vmtest-<slave>-0`.
pub fn slot_config(
    slave: &str,
    mode: SlotMode,
    recipe: &Recipe,
    image: &GuestImage,
    state: &Path,
) -> SlotConfig {
    let mut config = SlotConfig::new(
        &format!("vmtest-{slave}"),
        0,
        recipe,
        boot_files(image),
        state.to_path_buf(),
    );
    config.mode = mode;
    config
}

pub fn hypervisor() -> Arc<Hypervisor> {
    Hypervisor::open(URI).unwrap_or_else(|e| panic!("{e}"))
}

/// A task of one shell step run as the guest's unprivileged user.
pub fn shell_task(task_id: &str, command: &str, timeout_secs: u64) -> GuestTask {
    GuestTask {
        schema: GUEST_TASK_SCHEMA,
        task_id: task_id.into(),
        host_time_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
        output_limit_bytes: 4096,
        steps: vec![GuestStep {
            name: "check".into(),
            command: command.into(),
            timeout_secs,
            fails_task: true,
        }],
    }
}

/// The I/O disk for `task`: ext4 labelled PYTI-IO holding `task.json`, made on the host.
pub fn io_disk(dir: &Path, task: &GuestTask) -> PathBuf {
    let content = dir.join(format!("{}-content", task.task_id));
    std::fs::create_dir_all(&content).unwrap();
    std::fs::write(content.join("task.json"), serde_json::to_vec(task).unwrap()).unwrap();
    let image = dir.join(format!("{}.img", task.task_id));
    // The diskhandler's layout: the filesystem, then the result region.
    let fs_bytes = 16 * 1024 * 1024;
    std::fs::File::create(&image)
        .unwrap()
        .set_len(fs_bytes + pyti_wire::result_region::RESULT_REGION_BYTES)
        .unwrap();
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "PYTI-IO", "-d"])
        .arg(&content)
        .arg(&image)
        .arg(format!("{}k", fs_bytes / 1024))
        .output()
        .expect("mkfs.ext4 runs (install e2fsprogs)");
    assert!(
        out.status.success(),
        "mkfs.ext4: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    image
}

/// Gives the I/O disk image's filesystem another label (the agent only takes `PYTI-IO` disks).
pub fn relabel(image: &Path, label: &str) {
    let out = Command::new("e2label")
        .arg(image)
        .arg(label)
        .output()
        .expect("e2label runs (install e2fsprogs)");
    assert!(
        out.status.success(),
        "e2label: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `result.json` from an I/O disk, read with debugfs (tests only: production reads through
/// libguestfs, never the host kernel).
pub fn read_result(image: &Path) -> RawResult {
    let out = Command::new("debugfs")
        .args(["-R", "cat /result.json"])
        .arg(image)
        .output()
        .expect("debugfs runs");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no valid result.json on {} ({e}): {}{}",
            image.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The result the agent copied into the disk's result region, checked against its header.
pub fn read_region(image: &Path) -> RawResult {
    use pyti_wire::result_region::{self, HEADER_BYTES};
    let bytes = std::fs::read(image).unwrap();
    let offset = result_region::region_offset(bytes.len() as u64).unwrap() as usize;
    let header = result_region::decode_header(&bytes[offset..], u64::MAX)
        .unwrap_or_else(|e| panic!("no result region on {}: {e}", image.display()));
    let start = offset + HEADER_BYTES as usize;
    let payload = &bytes[start..start + header.length as usize];
    result_region::verify_payload(&header, payload).unwrap();
    serde_json::from_slice(payload).unwrap()
}

/// An I/O disk image exported by nbdkit on a unix socket, as the diskhandler does in production.
pub struct NbdExport {
    pub socket: PathBuf,
    nbdkit: std::process::Child,
}

impl NbdExport {
    /// Exports `image` on `socket`; returns once nbdkit listens.
    pub fn start(image: &Path, socket: &Path) -> NbdExport {
        // nbdkit writes its pid file once it accepts connections.
        let pidfile = socket.with_extension("pid");
        let nbdkit = Command::new("nbdkit")
            .args(["--foreground", "--exit-with-parent", "--unix"])
            .arg(socket)
            .arg("--pidfile")
            .arg(&pidfile)
            .arg("file")
            .arg(image)
            .spawn()
            .expect("nbdkit starts (install nbdkit)");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !pidfile.exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "nbdkit did not get ready on {}",
                socket.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        NbdExport {
            socket: socket.to_path_buf(),
            nbdkit,
        }
    }
}

impl Drop for NbdExport {
    fn drop(&mut self) {
        let _ = self.nbdkit.kill();
        let _ = self.nbdkit.wait();
    }
}
