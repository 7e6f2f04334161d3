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
    /// Its superblock could not be read this many times: a freshly plugged SCSI disk can fail
    /// its first reads, so it is tried again at the next poll.
    Unreadable(u32),
}

/// Reads of a disk that fail before the agent gives up on it (at [`POLL_INTERVAL`], ~10 s).
const MAX_UNREADABLE_POLLS: u32 = 200;

/// Watches for I/O disks; remembers which disks it has handled so a disk left attached is not
/// run twice (cold mode keeps the disk attached after "done"). A disk is known by its name and
/// its `diskseq` (a number the kernel never reuses), so a disk unplugged and plugged in again
/// under the same name between two polls is still seen as new.
#[derive(Debug, Default)]
pub struct IoDiskWatcher {
    seen: HashMap<(String, Option<u64>), Seen>,
}

/// A block device present now: its name in `/sys/block` and its `diskseq`.
type Disk = (String, Option<u64>);

impl IoDiskWatcher {
    /// Blocks until an unhandled I/O disk is present; returns its device node. Disks that are
    /// not I/O disks are logged once each through `log`.
    pub fn wait(&mut self, log: &mut dyn FnMut(&str)) -> PathBuf {
        loop {
            if let Some(dev) = self.poll(block_devices(), &label_or_rescan, log) {
                return dev;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// One look at the `present` disks, reading labels with `label_of`: the first unhandled
    /// I/O disk, if any.
    fn poll(
        &mut self,
        present: Vec<Disk>,
        label_of: &dyn Fn(&Path) -> std::io::Result<Option<String>>,
        log: &mut dyn FnMut(&str),
    ) -> Option<PathBuf> {
        self.seen.retain(|disk, _| present.contains(disk));
        for disk in present {
            let failures = match self.seen.get(&disk) {
                None => 0,
                Some(Seen::Unreadable(failures)) => *failures,
                Some(Seen::Other | Seen::Handled) => continue,
            };
            let dev = PathBuf::from("/dev").join(&disk.0);
            let seen = match label_of(&dev) {
                Ok(Some(label)) if label == IO_DISK_LABEL => {
                    self.seen.insert(disk, Seen::Handled);
                    return Some(dev);
                }
                Ok(label) => {
                    log(&format!(
                        "ignoring {}: not an I/O disk (label {:?})",
                        dev.display(),
                        label.unwrap_or_default()
                    ));
                    Seen::Other
                }
                // Right after a hot-plug the node may not exist yet: look again next time.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) if failures + 1 >= MAX_UNREADABLE_POLLS => {
                    log(&format!("ignoring {}: unreadable ({e})", dev.display()));
                    Seen::Other
                }
                Err(e) => {
                    if failures == 0 {
                        log(&format!(
                            "{} not readable yet ({e}; {} sectors); retrying",
                            dev.display(),
                            sectors(&disk.0).map_or("unknown".into(), |n| n.to_string())
                        ));
                    }
                    Seen::Unreadable(failures + 1)
                }
            };
            self.seen.insert(disk, seen);
        }
        None
    }
}

/// Whole disks in `/sys/block` with their `diskseq` (partitions are not used for I/O disks).
fn block_devices() -> Vec<Disk> {
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    let mut disks: Vec<Disk> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("loop") && !n.starts_with("ram"))
        .map(|name| {
            let seq = std::fs::read_to_string(format!("/sys/block/{name}/diskseq"))
                .ok()
                .and_then(|s| s.trim().parse().ok());
            (name, seq)
        })
        .collect();
    disks.sort();
    disks
}

/// The ext2/3/4 superblock of `dev`: `None` if the disk holds no ext filesystem (magic 0xEF53
/// at 0x38), an error if the disk cannot be read.
fn superblock(dev: &Path) -> std::io::Result<Option<[u8; 1024]>> {
    let mut file = std::fs::File::open(dev)?;
    let mut superblock = [0u8; 1024];
    file.seek(SeekFrom::Start(1024))?;
    match file.read_exact(&mut superblock) {
        Ok(()) => Ok((superblock[0x38..0x3a] == [0x53, 0xef]).then_some(superblock)),
        // A short read is "not readable yet", not "no filesystem": a freshly plugged LUN can
        // read short until the kernel has its capacity (a real disk is never this small).
        Err(e) => Err(e),
    }
}

/// [`read_label`], asking the kernel to look at a SCSI disk again (`device/rescan` re-reads its
/// capacity) when the read fails. Under load, the first superblock read of a freshly plugged
/// LUN has failed or come back short; the disk was passed over and the task hung.
fn label_or_rescan(dev: &Path) -> std::io::Result<Option<String>> {
    read_label(dev).inspect_err(|e| {
        // A node not created yet is not a read failure: nothing to rescan.
        if e.kind() == std::io::ErrorKind::NotFound {
            return;
        }
        if let Some(name) = dev.file_name() {
            let rescan = Path::new("/sys/block").join(name).join("device/rescan");
            let _ = std::fs::write(rescan, "1");
        }
    })
}

/// The disk's size in 512-byte sectors, as the kernel sees it.
fn sectors(name: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/sys/block/{name}/size"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The ext2/3/4 volume label of `dev` (`None` without an ext filesystem), or why the disk
/// cannot be read.
fn read_label(dev: &Path) -> std::io::Result<Option<String>> {
    Ok(superblock(dev)?.map(|superblock| {
        // The 16-byte volume name at 0x78.
        let raw = &superblock[0x78..0x88];
        let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
        String::from_utf8_lossy(&raw[..end]).into_owned()
    }))
}

/// Bytes the ext filesystem on `dev` spans from the device's start, if it holds one.
pub fn filesystem_bytes(dev: &Path) -> Option<u64> {
    let sb = superblock(dev).ok()??;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::io::{Error, ErrorKind};

    fn disk(name: &str, seq: u64) -> Disk {
        (name.to_string(), Some(seq))
    }

    fn io_label(_: &Path) -> std::io::Result<Option<String>> {
        Ok(Some(IO_DISK_LABEL.to_string()))
    }

    #[test]
    fn a_disk_that_fails_its_first_reads_is_taken_once_readable() {
        let mut watcher = IoDiskWatcher::default();
        let mut lines = Vec::new();
        let eio = |_: &Path| Err(Error::other("Input/output error"));
        for _ in 0..3 {
            let found = watcher.poll(vec![disk("sda", 7)], &eio, &mut |l| {
                lines.push(l.to_string())
            });
            assert_eq!(found, None);
        }
        assert_eq!(lines.len(), 1, "one line per unreadable disk: {lines:?}");
        let found = watcher.poll(vec![disk("sda", 7)], &io_label, &mut |_| {});
        assert_eq!(found, Some(PathBuf::from("/dev/sda")));
    }

    #[test]
    fn a_disk_that_stays_unreadable_is_given_up_on_and_logged() {
        let mut watcher = IoDiskWatcher::default();
        let mut lines = Vec::new();
        let eio = |_: &Path| Err(Error::other("Input/output error"));
        for _ in 0..MAX_UNREADABLE_POLLS {
            watcher.poll(vec![disk("sdb", 1)], &eio, &mut |l| {
                lines.push(l.to_string())
            });
        }
        assert!(lines.last().unwrap().contains("unreadable"), "{lines:?}");
        let reads = Cell::new(0);
        let counting = |_: &Path| {
            reads.set(reads.get() + 1);
            Ok(Some(IO_DISK_LABEL.to_string()))
        };
        assert_eq!(
            watcher.poll(vec![disk("sdb", 1)], &counting, &mut |_| {}),
            None
        );
        assert_eq!(reads.get(), 0, "a disk given up on is not read again");
    }

    #[test]
    fn a_missing_node_is_looked_at_again_without_a_log_line() {
        let mut watcher = IoDiskWatcher::default();
        let mut lines = Vec::new();
        let missing = |_: &Path| Err(Error::from(ErrorKind::NotFound));
        for _ in 0..(MAX_UNREADABLE_POLLS + 5) {
            watcher.poll(vec![disk("sda", 3)], &missing, &mut |l| {
                lines.push(l.to_string())
            });
        }
        assert!(lines.is_empty(), "{lines:?}");
        assert!(watcher
            .poll(vec![disk("sda", 3)], &io_label, &mut |_| {})
            .is_some());
    }

    #[test]
    fn a_disk_plugged_in_again_under_the_same_name_is_new() {
        let mut watcher = IoDiskWatcher::default();
        let other = |_: &Path| Ok(Some("NOT-PYTI".to_string()));
        let mut lines = Vec::new();
        assert_eq!(
            watcher.poll(vec![disk("sda", 4)], &other, &mut |l| lines
                .push(l.to_string())),
            None
        );
        assert_eq!(
            watcher.poll(vec![disk("sda", 4)], &io_label, &mut |_| {}),
            None,
            "sda 4 was passed over"
        );
        assert_eq!(
            lines,
            ["ignoring /dev/sda: not an I/O disk (label \"NOT-PYTI\")"]
        );
        // Unplugged and plugged in again between two polls: same name, a new diskseq.
        let found = watcher.poll(vec![disk("sda", 5)], &io_label, &mut |_| {});
        assert_eq!(found, Some(PathBuf::from("/dev/sda")));
        // Handled, and left attached (cold mode): not run twice.
        assert_eq!(
            watcher.poll(vec![disk("sda", 5)], &io_label, &mut |_| {}),
            None
        );
    }
}
