//! Finding, mounting and releasing the I/O disk (ext4 labelled [`IO_DISK_LABEL`]).
//!
//! The disk is present at boot (cold mode) or hot-plugged after a revert (warm mode); the agent
//! polls `/sys/block` and reads each new disk's ext superblock itself (no udev, no blkid).

use pyti_wire::io_layout::{GUEST_IO_MOUNT, IO_DISK_LABEL};
use std::collections::HashMap;
use std::ffi::CString;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How often `/sys/block` is checked for a new disk: a hot-plugged disk is seen within this.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Attempts to unmount before falling back to a lazy unmount (something still holds a file).
const UNMOUNT_ATTEMPTS: u32 = 20;

/// What the agent knows about a block device it has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Not an I/O disk (the system disk, or a disk with another label).
    Other,
    /// An I/O disk whose task was handled; it is skipped until it goes away.
    Handled,
}

/// Watches for I/O disks; remembers which disks it has handled so a disk left attached is not
/// run twice (cold mode keeps the disk attached after "done").
#[derive(Debug, Default)]
pub struct IoDiskWatcher {
    seen: HashMap<String, Seen>,
}

impl IoDiskWatcher {
    /// Blocks until an unhandled I/O disk is present; returns its device node.
    pub fn wait(&mut self) -> PathBuf {
        loop {
            let present = block_devices();
            self.seen.retain(|name, _| present.contains(name));
            for name in present {
                if self.seen.contains_key(&name) {
                    continue;
                }
                let dev = PathBuf::from("/dev").join(&name);
                match read_label(&dev) {
                    Some(label) if label == IO_DISK_LABEL => {
                        self.seen.insert(name, Seen::Handled);
                        return dev;
                    }
                    // The node may not exist yet right after a hot-plug: look again next time.
                    None if !dev.exists() => {}
                    _ => {
                        self.seen.insert(name, Seen::Other);
                    }
                }
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

/// Whole disks in `/sys/block` (partitions are not used for I/O disks).
fn block_devices() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("loop") && !n.starts_with("ram"))
        .collect();
    names.sort();
    names
}

/// The ext2/3/4 superblock of `dev`, if it holds an ext filesystem (magic 0xEF53 at 0x38).
fn superblock(dev: &Path) -> Option<[u8; 1024]> {
    let mut file = std::fs::File::open(dev).ok()?;
    let mut superblock = [0u8; 1024];
    file.seek(SeekFrom::Start(1024)).ok()?;
    file.read_exact(&mut superblock).ok()?;
    (superblock[0x38..0x3a] == [0x53, 0xef]).then_some(superblock)
}

/// The ext2/3/4 volume label of `dev`, if it holds an ext filesystem.
fn read_label(dev: &Path) -> Option<String> {
    let superblock = superblock(dev)?;
    // The 16-byte volume name at 0x78.
    let raw = &superblock[0x78..0x88];
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    Some(String::from_utf8_lossy(&raw[..end]).into_owned())
}

/// Bytes the ext filesystem on `dev` spans from the device's start, if it holds one.
pub fn filesystem_bytes(dev: &Path) -> Option<u64> {
    let sb = superblock(dev)?;
    let u32_at = |at: usize| u32::from_le_bytes([sb[at], sb[at + 1], sb[at + 2], sb[at + 3]]);
    // Blocks: s_blocks_count_lo at 0x04, s_blocks_count_hi at 0x150 with the 64bit feature
    // (0x80 in s_feature_incompat at 0x60); block size 1024 << s_log_block_size (0x18).
    let high = if u32_at(0x60) & 0x80 != 0 {
        u32_at(0x150)
    } else {
        0
    };
    let blocks = (u64::from(high) << 32) | u64::from(u32_at(0x04));
    let log = u32_at(0x18);
    (log <= 6).then(|| blocks.saturating_mul(1024 << log))
}

/// Mounts `dev` (ext4) at [`GUEST_IO_MOUNT`].
pub fn mount(dev: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(GUEST_IO_MOUNT)?;
    let source = cstring(dev.as_os_str().as_encoded_bytes())?;
    let target = cstring(GUEST_IO_MOUNT.as_bytes())?;
    let fstype = cstring(b"ext4")?;
    // SAFETY: all pointers are valid NUL-terminated strings; data is null.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            libc::MS_NOATIME | libc::MS_NODEV | libc::MS_NOSUID,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Flushes and unmounts [`GUEST_IO_MOUNT`], then syncs every filesystem.
pub fn unmount() -> std::io::Result<()> {
    let target = cstring(GUEST_IO_MOUNT.as_bytes())?;
    if let Ok(dir) = std::fs::File::open(GUEST_IO_MOUNT) {
        use std::os::fd::AsRawFd;
        // SAFETY: valid open fd.
        unsafe { libc::syncfs(dir.as_raw_fd()) };
    }
    let mut result = Err(std::io::Error::other("not attempted"));
    for _ in 0..UNMOUNT_ATTEMPTS {
        // SAFETY: valid NUL-terminated path.
        if unsafe { libc::umount2(target.as_ptr(), 0) } == 0 {
            result = Ok(());
            break;
        }
        result = Err(std::io::Error::last_os_error());
        std::thread::sleep(Duration::from_millis(100));
    }
    if result.is_err() {
        // Everything was synced above; detach so the next disk can mount.
        // SAFETY: valid NUL-terminated path.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
    // SAFETY: plain syscall.
    unsafe { libc::sync() };
    result
}

fn cstring(bytes: &[u8]) -> std::io::Result<CString> {
    CString::new(bytes).map_err(|_| std::io::Error::other("path contains a NUL byte"))
}
