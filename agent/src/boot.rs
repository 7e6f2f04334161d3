//! What PID 1 must do before anything runs: the kernel's pseudo-filesystems, a hostname, the
//! loopback-less offline state, and reaping orphans.

use std::ffi::CString;

/// Mounts proc, sys, devtmpfs, and tmpfs on /tmp and /run (already mounted ones are kept).
pub fn mount_pseudo_filesystems() {
    for (fstype, target, mode) in [
        ("proc", "/proc", None),
        ("sysfs", "/sys", None),
        ("devtmpfs", "/dev", None),
        ("devpts", "/dev/pts", None),
        ("tmpfs", "/run", Some("mode=0755")),
        ("tmpfs", "/tmp", Some("mode=1777")),
        ("tmpfs", "/dev/shm", Some("mode=1777")),
    ] {
        let _ = std::fs::create_dir_all(target);
        let (Ok(source), Ok(target_c), Ok(fstype_c)) = (
            CString::new(fstype),
            CString::new(target),
            CString::new(fstype),
        ) else {
            continue;
        };
        let data = mode.and_then(|m| CString::new(m).ok());
        let data_ptr = data
            .as_ref()
            .map_or(std::ptr::null(), |d| d.as_ptr().cast());
        // SAFETY: valid NUL-terminated strings; EBUSY for an existing mount is ignored.
        unsafe {
            libc::mount(
                source.as_ptr(),
                target_c.as_ptr(),
                fstype_c.as_ptr(),
                libc::MS_NOSUID,
                data_ptr,
            )
        };
    }
    let _ = std::os::unix::fs::symlink("/proc/self/fd", "/dev/fd");
    let name = b"pyti-guest";
    // SAFETY: valid buffer and length.
    unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
}

/// Reaps every exited child that nobody waits for (orphans re-parented to PID 1). Call only
/// between steps: while a step runs, its own wait4 must get its status.
pub fn reap_orphans() {
    loop {
        let mut status = 0;
        // SAFETY: plain syscall with a valid status pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            break;
        }
    }
}

/// Makes `path` (created if missing) owned by `uid`:`uid`.
pub fn give_to(path: impl AsRef<std::path::Path>, uid: u32) -> std::io::Result<()> {
    std::fs::create_dir_all(path.as_ref())?;
    std::os::unix::fs::chown(path.as_ref(), Some(uid), Some(uid))
}
