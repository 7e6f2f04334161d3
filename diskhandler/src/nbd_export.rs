//! One nbdkit process exporting one I/O disk image on a unix socket.
//!
//! Both the appliance and the VM reach the disk through this export: neither opens the image file,
//! so QEMU's image write lock (which would keep the VM out while the appliance runs) never applies.
//! nbdkit serves both clients from one process through the host page cache, so what one writes the
//! other reads once its own caches are dropped.

use crate::infrastructure::InfrastructureError;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long nbdkit may take to create its socket: it starts in milliseconds; seconds mean a
/// problem (missing plugin, bad path).
const SOCKET_WAIT: Duration = Duration::from_secs(10);

/// A running nbdkit, killed (and its socket removed) on drop.
#[derive(Debug)]
pub(crate) struct NbdExport {
    child: Child,
    socket: PathBuf,
}

impl NbdExport {
    /// Starts nbdkit's file plugin on `image`, listening on `socket`, and waits until it accepts.
    pub(crate) fn start(image: &Path, socket: &Path) -> Result<NbdExport, InfrastructureError> {
        let fail = |detail: String| InfrastructureError::Nbdkit {
            image: image.to_path_buf(),
            detail,
        };
        let _ = std::fs::remove_file(socket);
        // nbdkit writes its pid file once it accepts connections: the readiness signal.
        let pid_file = socket.with_extension("pid");
        let _ = std::fs::remove_file(&pid_file);
        let child = Command::new("nbdkit")
            .arg("--unix")
            .arg(socket)
            .arg("--pidfile")
            .arg(&pid_file)
            .arg("--foreground")
            // If the slave dies without running destructors, nbdkit must not outlive it.
            .arg("--exit-with-parent")
            // Flush requests become no-ops: writes still land in the host page cache at once,
            // which is all coherence between the appliance and the VM needs; durability against
            // a host crash does not matter for a scratch disk, and host fsyncs cost seconds on
            // a busy machine.
            .arg("--filter=fua")
            .arg("file")
            .arg(format!("file={}", image.display()))
            .arg("fuamode=discard")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| fail(format!("spawn failed: {e}")))?;
        let mut export = NbdExport {
            child,
            socket: socket.to_path_buf(),
        };
        let started = Instant::now();
        loop {
            let ready = std::fs::read_to_string(&pid_file).is_ok_and(|pid| pid.ends_with('\n'));
            if ready && socket.exists() {
                let _ = std::fs::remove_file(&pid_file);
                return Ok(export);
            }
            if let Ok(Some(status)) = export.child.try_wait() {
                return Err(fail(format!("nbdkit exited with {status}")));
            }
            if started.elapsed() > SOCKET_WAIT {
                return Err(fail(format!(
                    "socket {} not ready after {} s",
                    socket.display(),
                    SOCKET_WAIT.as_secs()
                )));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether nbdkit is still running.
    pub(crate) fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for NbdExport {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}
