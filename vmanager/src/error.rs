//! Why a VM slot operation failed, each message saying what to do about it.

use std::path::PathBuf;
use std::time::Duration;

/// A slot, probe or libvirt failure. Guest misbehaviour during a task (overrun, crash) is not an
/// error: it is a [`crate::TaskOutcome`], and the slot stays usable.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("cannot connect to libvirt at {uri}: {detail}. Is libvirtd running? Start it with `scripts/setup-host.sh` (or `libvirtd -d`), or use another libvirt URI")]
    LibvirtUnreachable { uri: String, detail: String },
    #[error("domain {domain} cannot start: virtlogd is not running ({detail}). Start it with `virtlogd -d` (scripts/setup-host.sh does)")]
    VirtlogdDown { domain: String, detail: String },
    #[error("guest image file {path} is missing: build the image with `pyti image build` (a cleaned cache removes it)")]
    ImageMissing { path: PathBuf },
    #[error("libvirt refused the warm snapshot of {domain}: {detail}. {hint}")]
    SnapshotRefused {
        domain: String,
        detail: String,
        hint: &'static str,
    },
    #[error("the recipe asks for KVM but it does not work here: {reason}. Use accel = \"auto\" or \"tcg\" in the recipe's [vm] section")]
    KvmUnavailable { reason: String },
    #[error("libvirt failed to {action} {domain}: {detail}")]
    Libvirt {
        action: &'static str,
        domain: String,
        detail: String,
    },
    #[error("guest {domain} did not report ready within {waited:?}: {detail}. Look at the console log {console}")]
    NotReady {
        domain: String,
        waited: Duration,
        detail: String,
        console: PathBuf,
    },
    #[error("the guest agent in {domain} reports its prepare steps failed: {detail}. Fix the recipe's [[prepare]] steps and rebuild the image (`pyti image build`)")]
    PrepareFailed { domain: String, detail: String },
    #[error("cannot open the agent channel {path} of {domain}: {detail}")]
    Channel {
        domain: String,
        path: PathBuf,
        detail: String,
    },
    #[error("`qemu-img` could not create overlay {path}: {detail}. Install qemu-utils (scripts/setup-host.sh does) and check free disk space")]
    Overlay { path: PathBuf, detail: String },
    #[error("slot {domain} has no clean state yet: call `prepare` before running tasks")]
    NotPrepared { domain: String },
    #[error("invalid slot name `{name}`: {detail}")]
    BadName { name: String, detail: String },
    #[error("{path} is not usable in a domain definition: {detail}")]
    BadPath { path: PathBuf, detail: String },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("a blocking libvirt worker died: {0}")]
    Worker(String),
}

impl VmError {
    /// Maps a libvirt error from `action` on `domain`, recognising the causes a user can fix.
    pub(crate) fn libvirt(action: &'static str, domain: &str, err: virt::error::Error) -> VmError {
        VmError::from_libvirt_message(action, domain, err.message().to_string())
    }

    fn from_libvirt_message(action: &'static str, domain: &str, detail: String) -> VmError {
        if detail.contains("virtlogd") {
            VmError::VirtlogdDown {
                domain: domain.to_string(),
                detail,
            }
        } else {
            VmError::Libvirt {
                action,
                domain: domain.to_string(),
                detail,
            }
        }
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> VmError {
        let path = path.into();
        move |source| VmError::Io {
            action,
            path,
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_failing_on_virtlogd_says_to_start_it() {
        // What libvirt 9.0 reports when virtlogd is not running.
        let detail =
            "Failed to connect socket to '/run/libvirt/virtlogd-sock': No such file or directory";
        let err = VmError::from_libvirt_message("start", "pyti-x-0", detail.into());
        assert!(matches!(err, VmError::VirtlogdDown { .. }));
        assert!(err.to_string().contains("virtlogd -d"), "{err}");
        let other = VmError::from_libvirt_message("start", "pyti-x-0", "something else".into());
        assert!(matches!(other, VmError::Libvirt { .. }));
    }
}
