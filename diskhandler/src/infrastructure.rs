//! Failures of the machinery rather than of the task: they make a task `tmpfail` (retried
//! elsewhere or later), never a test failure.

use std::path::PathBuf;

/// Something in the host-side machinery failed: image creation, nbdkit, the appliance.
#[derive(Debug, thiserror::Error)]
pub enum InfrastructureError {
    #[error("invalid diskhandler settings: {0}")]
    Config(String),
    #[error("cannot create I/O disk image {path}: {source}; check free space and permissions of the work directory")]
    CreateImage {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "mkfs.ext4 failed on {path}: {detail}; is e2fsprogs installed (`scripts/setup-host.sh`)?"
    )]
    Mkfs { path: PathBuf, detail: String },
    #[error(
        "cannot start nbdkit for {image}: {detail}; is nbdkit installed (`scripts/setup-host.sh`)?"
    )]
    Nbdkit { image: PathBuf, detail: String },
    #[error(
        "libguestfs appliance failed to launch: {detail}; run `libguestfs-test-tool` to diagnose"
    )]
    Launch { detail: String },
    #[error("the libguestfs appliance died during {during}: {detail}; it is relaunched on the next operation")]
    ApplianceDied {
        during: &'static str,
        detail: String,
    },
    #[error("the libguestfs appliance did not answer within {secs} s during {during}; it was killed and is relaunched on the next operation")]
    Hung { during: &'static str, secs: u64 },
    #[error("libguestfs call failed during {during}: {detail}")]
    Guestfs {
        during: &'static str,
        detail: String,
    },
    #[error("cannot read the I/O disk image {path}: {source}")]
    ImageRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read payload file {path}: {source}")]
    PayloadRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the diskhandler session is shut down")]
    SessionClosed,
}

/// Text of a libguestfs error (the crate's error type has no `Display`).
pub(crate) fn describe(error: &guestfs::Error) -> String {
    match error {
        guestfs::Error::API(api) => format!("{api:?}"),
        guestfs::Error::IllegalString(nul) => format!("string with a NUL byte: {nul}"),
        guestfs::Error::Utf8Error(utf8) => format!("non-UTF-8 text from the appliance: {utf8}"),
        guestfs::Error::Create => "guestfs_create failed".to_string(),
    }
}
