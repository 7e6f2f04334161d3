//! What can go wrong while building a wheelhouse, and whose fault it is.

use crate::package::PackageError;
use std::path::PathBuf;

/// A failed wheelhouse preparation. [`WheelhouseError::is_package_fault`] splits them into the
/// task's `error` (the package or its dependencies cannot be resolved offline) and `tmpfail`
/// (the host or the network failed; retrying may work).
#[derive(Debug, thiserror::Error)]
pub enum WheelhouseError {
    #[error(transparent)]
    Package(#[from] PackageError),
    #[error("cannot resolve {spec} for the guest: {message}")]
    Resolution { spec: String, message: String },
    #[error("{spec} needs an sdist built to learn its dependencies, and pyti never runs package code on the host: {message}; publish a wheel, or build the sdist with a backend that writes static metadata (Metadata-Version 2.2+ without `Dynamic: Requires-Dist`, e.g. setuptools >= 68 with `[project] dependencies` in pyproject.toml)")]
    DynamicMetadata { spec: String, message: String },
    #[error("the wheelhouse for {spec} would be {bytes} bytes in {files} files, over the limit of {max_bytes} bytes / {max_files} files; raise the slave's wheelhouse limits if this package really needs that much")]
    TooLarge {
        spec: String,
        bytes: u64,
        files: usize,
        max_bytes: u64,
        max_files: usize,
    },
    #[error("downloading {url} failed: {message}")]
    Download {
        url: String,
        message: String,
        /// The server answered but refused (HTTP 4xx) or the file breaks a limit: retrying the
        /// same URL cannot help.
        permanent: bool,
    },
    #[error("{url} sent a file whose sha256 is {actual}, but {expected} was expected; the index or the download is corrupt, retry later")]
    HashMismatch {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("the package index could not be reached while resolving {spec}: {message}; check the slave's network, the task will be retried")]
    Network { spec: String, message: String },
    #[error("{spec} is not in the wheelhouse cache and the slave is offline; run it once with network access")]
    NotCached { spec: String },
    #[error("the resolver did not finish within {secs} s for {spec}; the index may be slow, the task will be retried")]
    Timeout { spec: String, secs: u64 },
    #[error("cannot install the resolver (uv) with {python}: {message}; the host needs python3 with pip (scripts/setup-host.sh installs python3-pip)")]
    ToolInstall { python: String, message: String },
    #[error("the wheelhouse helper failed: {0}")]
    Helper(String),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl WheelhouseError {
    /// `true` when the package (or a dependency) is at fault and retrying cannot help: the task's
    /// status is `error`. `false` for host and network trouble: `tmpfail`, retried by the master.
    pub fn is_package_fault(&self) -> bool {
        match self {
            WheelhouseError::Package(_)
            | WheelhouseError::Resolution { .. }
            | WheelhouseError::DynamicMetadata { .. }
            | WheelhouseError::TooLarge { .. } => true,
            WheelhouseError::Download { permanent, .. } => *permanent,
            WheelhouseError::HashMismatch { .. }
            | WheelhouseError::Network { .. }
            | WheelhouseError::NotCached { .. }
            | WheelhouseError::Timeout { .. }
            | WheelhouseError::ToolInstall { .. }
            | WheelhouseError::Helper(_)
            | WheelhouseError::Io { .. } => false,
        }
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| WheelhouseError::Io {
            action,
            path,
            source,
        }
    }
}
