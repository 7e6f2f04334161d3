//! Host checks for `pyti doctor`: can this machine run pyti's guests?
//!
//! Each check is blocking (libvirt calls, child processes) and returns what it found or a
//! [`HostProblem`] whose message says what to do; the doctor command runs them off the executor.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Free space below which image builds and per-slot overlays are likely to fail.
pub const MIN_FREE_DISK_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// Something on the host that stops pyti from running guests, with the fix.
#[derive(Debug, thiserror::Error)]
pub enum HostProblem {
    #[error("cannot connect to libvirt at {uri}: {detail}. Start it with `scripts/setup-host.sh` (or `libvirtd -d`), or pass another --libvirt-uri")]
    LibvirtUnreachable { uri: String, detail: String },
    #[error("virtlogd is not listening on {socket}: no domain can start without it. Start it with `virtlogd -d` (scripts/setup-host.sh does)")]
    VirtlogdDown { socket: PathBuf },
    #[error("`{program}` not found or not working ({detail}): install Debian package `{package}` (scripts/setup-host.sh does)")]
    MissingProgram {
        program: String,
        package: String,
        detail: String,
    },
    #[error("only {free_mib} MiB free under {path}: image builds and per-slot overlays need at least {need_mib} MiB; free some space or point the cache elsewhere (XDG_CACHE_HOME)")]
    LowDiskSpace {
        path: PathBuf,
        free_mib: u64,
        need_mib: u64,
    },
}

/// What `libvirt` found: the URI actually connected to and the versions behind it.
#[derive(Debug, Clone)]
pub struct LibvirtInfo {
    pub uri: String,
    pub libvirt_version: String,
    pub hypervisor_version: String,
}

fn dotted(version: u32) -> String {
    format!(
        "{}.{}.{}",
        version / 1_000_000,
        (version / 1000) % 1000,
        version % 1000
    )
}

/// Connects to libvirt at `uri` and reports the library and hypervisor versions.
pub fn libvirt(uri: &str) -> Result<LibvirtInfo, HostProblem> {
    let unreachable = |e: virt::error::Error| HostProblem::LibvirtUnreachable {
        uri: uri.to_string(),
        detail: e.message().to_string(),
    };
    let conn = virt::connect::Connect::open(Some(uri)).map_err(unreachable)?;
    (|| {
        Ok(LibvirtInfo {
            uri: conn.uri()?,
            libvirt_version: dotted(conn.lib_version()?),
            hypervisor_version: dotted(conn.hyp_version()?),
        })
    })()
    .map_err(unreachable)
}

/// The virtlogd socket libvirt's QEMU driver logs through, for root or for a session user.
pub fn virtlogd_socket() -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        PathBuf::from("/run/libvirt/virtlogd-sock")
    } else {
        let runtime = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from("/run/user").join(unsafe { libc::geteuid() }.to_string())
            });
        runtime.join("libvirt/virtlogd-sock")
    }
}

/// Checks that virtlogd accepts connections (without it no domain starts).
pub fn virtlogd() -> Result<PathBuf, HostProblem> {
    let socket = virtlogd_socket();
    match UnixStream::connect(&socket) {
        Ok(_) => Ok(socket),
        Err(_) => Err(HostProblem::VirtlogdDown { socket }),
    }
}

/// Runs `program --version` and returns its first line.
pub fn program_version(program: &str, package: &str) -> Result<String, HostProblem> {
    let missing = |detail: String| HostProblem::MissingProgram {
        program: program.to_string(),
        package: package.to_string(),
        detail,
    };
    let out = Command::new(program)
        .arg("--version")
        .output()
        .map_err(|e| missing(e.to_string()))?;
    if !out.status.success() {
        return Err(missing(format!("exited with {}", out.status)));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.lines().next().unwrap_or("").trim().to_string())
}

/// QEMU for x86-64 guests.
pub fn qemu() -> Result<String, HostProblem> {
    program_version("qemu-system-x86_64", "qemu-system-x86")
}

/// supermin, which builds guest images from the host's installed packages.
pub fn supermin() -> Result<String, HostProblem> {
    program_version("supermin", "supermin")
}

/// Free bytes on the filesystem holding `path` (or its nearest existing parent).
pub fn free_disk_bytes(path: &Path) -> std::io::Result<u64> {
    let existing = path
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    let c_path = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c_path is a valid NUL-terminated string and stat a writable statvfs.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// Checks there is room for images and overlays under `path`.
pub fn disk_space(path: &Path) -> Result<u64, HostProblem> {
    let free = free_disk_bytes(path).unwrap_or(0);
    if free < MIN_FREE_DISK_BYTES {
        return Err(HostProblem::LowDiskSpace {
            path: path.to_path_buf(),
            free_mib: free / (1024 * 1024),
            need_mib: MIN_FREE_DISK_BYTES / (1024 * 1024),
        });
    }
    Ok(free)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_dotted() {
        assert_eq!(dotted(9_000_000), "9.0.0");
        assert_eq!(dotted(7_002_013), "7.2.13");
    }

    #[test]
    fn test_driver_is_reachable() {
        let info = libvirt("test:///default").expect("libvirt's test driver is built in");
        assert_eq!(info.uri, "test:///default");
    }

    #[test]
    fn unknown_uri_says_what_to_do() {
        let err = libvirt("bogus:///nowhere").unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("bogus:///nowhere") && text.contains("setup-host"),
            "{text}"
        );
    }

    #[test]
    fn missing_program_names_its_package() {
        let err = program_version("pyti-no-such-program", "pyti-pkg").unwrap_err();
        assert!(
            err.to_string()
                .contains("install Debian package `pyti-pkg`"),
            "{err}"
        );
    }

    #[test]
    fn free_space_of_a_missing_path_uses_its_parent() {
        assert!(free_disk_bytes(Path::new("/tmp/pyti-does-not-exist/x")).unwrap() > 0);
    }
}
