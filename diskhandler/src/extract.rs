//! Extract: read what the guest wrote — `result.json` and `artifacts/` — as untrusted data.
//!
//! First from the result region after the filesystem (see [`pyti_wire::result_region`]): raw
//! bytes of the image file, no mount, no appliance. When the agent wrote no region, or left
//! artifacts, the appliance mounts the filesystem read-only: every file is `lstat`ed before it
//! is read, only regular files inside the I/O root are read, and only when their size is within
//! the limits. Paths are resolved by the appliance inside its own root, never on the host.

use crate::appliance::Appliance;
use crate::config::ExtractLimits;
use crate::infrastructure::InfrastructureError;
use pyti_wire::io_layout::{ARTIFACTS_DIR, RESULT_FILE};
use pyti_wire::raw_data::{RawDataError, RawResult};
use pyti_wire::result_region::{self, RegionError, HEADER_BYTES};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Bytes per `pread` call: libguestfs messages are capped at 4 MiB, and one round trip per
/// 2 MiB keeps reads fast (whole-file reads stream and cost ~100 ms).
const READ_CHUNK_BYTES: u64 = 2 * 1024 * 1024;
/// Directory depth walked under `artifacts/`.
const MAX_ARTIFACT_DEPTH: usize = 8;
/// Below this much free space a missing result is blamed on a full filesystem.
const FULL_FILESYSTEM_BYTES: u64 = 1024 * 1024;

const S_IFMT: i64 = 0o170_000;
const S_IFREG: i64 = 0o100_000;
const S_IFDIR: i64 = 0o040_000;

/// What the guest wrote back, checked.
#[derive(Debug, Clone)]
pub struct GuestOutput {
    /// The parsed and validated `result.json`.
    pub result: RawResult,
    /// Size of `result.json` in bytes.
    pub result_bytes: u64,
    /// Regular files found under `artifacts/` (paths relative to it), within the limits.
    pub artifacts: Vec<Artifact>,
    /// Where the result was read from.
    pub source: ResultSource,
}

/// Where [`GuestOutput::result`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultSource {
    /// The result region, read from the image file on the host (no mount, no appliance).
    Region,
    /// `result.json` on the mounted filesystem.
    Filesystem,
}

/// One file from `artifacts/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// Path relative to `artifacts/` (`/`-separated).
    pub path: String,
    pub content: Vec<u8>,
}

/// Why the guest's output could not be taken. Except for [`ExtractError::Infrastructure`], these
/// describe what the guest left on the disk: the task's result is unusable, the session is fine.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error(transparent)]
    Infrastructure(#[from] InfrastructureError),
    #[error("the I/O disk's filesystem cannot be mounted (the guest damaged it): {detail}; it is reformatted on the next inject")]
    Unmountable { detail: String },
    #[error("the guest wrote no {RESULT_FILE} (the agent crashed, timed out or never ran); see the console log")]
    Missing,
    #[error("the guest left the I/O disk full ({available} bytes free) and wrote no {RESULT_FILE}; the task's output exceeded the disk")]
    FilesystemFull { available: u64 },
    #[error("`{path}` on the I/O disk is a {kind}, not a regular file; refused")]
    NotARegularFile { path: String, kind: &'static str },
    #[error("{RESULT_FILE} is {size} bytes, more than the {limit} allowed; refused unread")]
    ResultTooLarge { size: u64, limit: u64 },
    #[error("{RESULT_FILE} is not JSON: {detail}")]
    NotJson { detail: String },
    #[error("{RESULT_FILE} does not match the result schema: {detail}")]
    BadSchema { detail: String },
    #[error("{RESULT_FILE} was refused: {0}")]
    Invalid(#[from] RawDataError),
    #[error("artifacts total {total} bytes, more than the {limit} allowed; refused unread")]
    ArtifactsTooLarge { total: u64, limit: u64 },
    #[error("artifacts/ holds more than {limit} files or is nested deeper than {MAX_ARTIFACT_DEPTH}; refused")]
    TooManyArtifacts { limit: usize },
    #[error("reading `{path}` from the I/O disk failed: {detail}")]
    ReadFailed { path: String, detail: String },
    #[error("the result region was refused: {0}")]
    Region(#[from] RegionError),
}

impl ExtractError {
    /// True when the machinery failed (report the task `tmpfail`); false when the guest's output
    /// is at fault.
    pub fn is_infrastructure(&self) -> bool {
        matches!(self, ExtractError::Infrastructure(_))
    }
}

fn kind_of(mode: i64) -> &'static str {
    match mode & S_IFMT {
        S_IFREG => "regular file",
        S_IFDIR => "directory",
        0o120_000 => "symbolic link",
        0o020_000 => "character device",
        0o060_000 => "block device",
        0o010_000 => "FIFO",
        0o140_000 => "socket",
        _ => "file of unknown type",
    }
}

/// Mounts the slot fresh and read-only (the appliance never writes to a disk the guest wrote),
/// reads and checks the output, unmounts. On return the filesystem is not
/// mounted unless unmounting itself failed (then the caller discards the appliance).
pub(crate) fn from_filesystem(
    appliance: &Appliance,
    slot: usize,
    task_id: &str,
    output_limit: u64,
    limits: ExtractLimits,
) -> Result<GuestOutput, ExtractError> {
    if let Err(e) = appliance.mount_fresh(slot, true) {
        let detail = appliance.diagnose("extract mount", &e)?;
        return Err(ExtractError::Unmountable { detail });
    }
    let read = read_output(appliance, task_id, output_limit, limits);
    let unmounted =
        appliance
            .unmount()
            .map_err(|e| match appliance.diagnose("extract unmount", &e) {
                Ok(detail) => InfrastructureError::Guestfs {
                    during: "extract unmount",
                    detail,
                },
                Err(dead) => dead,
            });
    let output = read?;
    unmounted?;
    Ok(output)
}

/// `lstat` of `names` in `dir`; `None` for a name that does not exist.
fn lstat_many(
    appliance: &Appliance,
    dir: &str,
    names: &[&str],
) -> Result<Vec<Option<guestfs::StatNS>>, ExtractError> {
    let stats = appliance
        .handle()
        .lstatnslist(dir, names)
        .map_err(|e| read_failed(appliance, dir, &e))?;
    Ok(stats
        .into_iter()
        .map(|s| if s.st_ino == -1 { None } else { Some(s) })
        .collect())
}

fn read_failed(appliance: &Appliance, path: &str, error: &guestfs::Error) -> ExtractError {
    match appliance.diagnose("extract read", error) {
        Ok(detail) => ExtractError::ReadFailed {
            path: path.to_string(),
            detail,
        },
        Err(dead) => dead.into(),
    }
}

/// Reads exactly `size` bytes of a regular file whose size was checked already.
fn read_bounded(appliance: &Appliance, path: &str, size: u64) -> Result<Vec<u8>, ExtractError> {
    let mut content = Vec::with_capacity(size as usize);
    while (content.len() as u64) < size {
        let want = (size - content.len() as u64).min(READ_CHUNK_BYTES) as i32;
        let chunk = appliance
            .handle()
            .pread(path, want, content.len() as i64)
            .map_err(|e| read_failed(appliance, path, &e))?;
        if chunk.is_empty() {
            return Err(ExtractError::ReadFailed {
                path: path.to_string(),
                detail: format!("file ended at {} of {size} bytes", content.len()),
            });
        }
        content.extend_from_slice(&chunk);
    }
    content.truncate(size as usize);
    Ok(content)
}

fn read_output(
    appliance: &Appliance,
    task_id: &str,
    output_limit: u64,
    limits: ExtractLimits,
) -> Result<GuestOutput, ExtractError> {
    let [result_stat, artifacts_stat] =
        <[_; 2]>::try_from(lstat_many(appliance, "/", &[RESULT_FILE, ARTIFACTS_DIR])?).map_err(
            |_| ExtractError::ReadFailed {
                path: "/".into(),
                detail: "lstat returned the wrong number of entries".into(),
            },
        )?;
    let Some(result_stat) = result_stat else {
        let vfs = appliance
            .handle()
            .statvfs("/")
            .map_err(|e| read_failed(appliance, "/", &e))?;
        let available = u64::try_from(vfs.bavail.saturating_mul(vfs.frsize)).unwrap_or(0);
        if available < FULL_FILESYSTEM_BYTES {
            return Err(ExtractError::FilesystemFull { available });
        }
        return Err(ExtractError::Missing);
    };
    if result_stat.st_mode & S_IFMT != S_IFREG {
        return Err(ExtractError::NotARegularFile {
            path: RESULT_FILE.into(),
            kind: kind_of(result_stat.st_mode),
        });
    }
    let size = u64::try_from(result_stat.st_size).unwrap_or(u64::MAX);
    if size > limits.max_result_bytes {
        return Err(ExtractError::ResultTooLarge {
            size,
            limit: limits.max_result_bytes,
        });
    }
    let bytes = read_bounded(appliance, &format!("/{RESULT_FILE}"), size)?;
    let result = parse_result(&bytes, task_id, output_limit)?;
    let artifacts = match artifacts_stat {
        None => Vec::new(),
        Some(stat) if stat.st_mode & S_IFMT == S_IFDIR => read_artifacts(appliance, limits)?,
        Some(stat) => {
            return Err(ExtractError::NotARegularFile {
                path: ARTIFACTS_DIR.into(),
                kind: kind_of(stat.st_mode),
            })
        }
    };
    Ok(GuestOutput {
        result,
        result_bytes: size,
        artifacts,
        source: ResultSource::Filesystem,
    })
}

/// Parses and validates the guest's result bytes.
fn parse_result(bytes: &[u8], task_id: &str, output_limit: u64) -> Result<RawResult, ExtractError> {
    let result: RawResult = serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ExtractError::BadSchema {
            detail: e.to_string(),
        },
        _ => ExtractError::NotJson {
            detail: e.to_string(),
        },
    })?;
    result.validate(task_id, output_limit)?;
    Ok(result)
}

/// The result from the result region, read from the disk's image file on the host; `None` when
/// the filesystem must be read instead (the agent wrote no region, or left artifacts on the
/// filesystem).
///
/// No filesystem is involved: the bytes at a fixed offset of a file the host owns, checked by a
/// bounded decoder, are as safe to read here as inside the appliance, and far cheaper (under TCG
/// each call into the appliance that opens the device costs ~0.1 s, a mount ~0.5 s). The image
/// is the file nbdkit serves, so the host sees the guest's writes through the same page cache:
/// nothing can be stale.
pub(crate) fn from_region(
    image: &Path,
    disk_bytes: u64,
    task_id: &str,
    output_limit: u64,
    limits: ExtractLimits,
) -> Result<Option<GuestOutput>, ExtractError> {
    let Some(region) = result_region::region_offset(disk_bytes) else {
        return Ok(None);
    };
    let failed = |source| InfrastructureError::ImageRead {
        path: image.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(image).map_err(failed)?;
    let mut block = vec![0u8; HEADER_BYTES as usize];
    file.read_exact_at(&mut block, region).map_err(failed)?;
    let header = match result_region::decode_header(&block, limits.max_result_bytes) {
        Err(RegionError::Empty) => return Ok(None),
        Err(e) => return Err(e.into()),
        Ok(header) => header,
    };
    if header.task_id != task_id {
        return Err(RegionError::Malformed(format!(
            "it names task `{}`, not `{task_id}`",
            header.task_id
        ))
        .into());
    }
    if header.has_artifacts {
        return Ok(None);
    }
    let mut payload = vec![0u8; header.length as usize];
    file.read_exact_at(&mut payload, region + HEADER_BYTES)
        .map_err(failed)?;
    result_region::verify_payload(&header, &payload)?;
    let result = parse_result(&payload, task_id, output_limit)?;
    Ok(Some(GuestOutput {
        result,
        result_bytes: header.length,
        artifacts: Vec::new(),
        source: ResultSource::Region,
    }))
}

/// Walks `artifacts/` (directories and regular files only), checks count and total size, then
/// reads the files.
fn read_artifacts(
    appliance: &Appliance,
    limits: ExtractLimits,
) -> Result<Vec<Artifact>, ExtractError> {
    let mut files: Vec<(String, u64)> = Vec::new();
    let mut total: u64 = 0;
    let mut pending = vec![(String::new(), 0usize)];
    while let Some((relative, depth)) = pending.pop() {
        let dir = if relative.is_empty() {
            format!("/{ARTIFACTS_DIR}")
        } else {
            format!("/{ARTIFACTS_DIR}/{relative}")
        };
        let names = appliance
            .handle()
            .ls(&dir)
            .map_err(|e| read_failed(appliance, &dir, &e))?;
        if files.len() + pending.len() + names.len() > limits.max_artifact_files {
            return Err(ExtractError::TooManyArtifacts {
                limit: limits.max_artifact_files,
            });
        }
        if names.is_empty() {
            continue;
        }
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        for (name, stat) in names.iter().zip(lstat_many(appliance, &dir, &refs)?) {
            let path = if relative.is_empty() {
                name.clone()
            } else {
                format!("{relative}/{name}")
            };
            let Some(stat) = stat else { continue };
            match stat.st_mode & S_IFMT {
                S_IFDIR if depth < MAX_ARTIFACT_DEPTH => pending.push((path, depth + 1)),
                S_IFDIR => {
                    return Err(ExtractError::TooManyArtifacts {
                        limit: limits.max_artifact_files,
                    })
                }
                S_IFREG => {
                    total = total.saturating_add(u64::try_from(stat.st_size).unwrap_or(u64::MAX));
                    if total > limits.max_artifact_bytes {
                        return Err(ExtractError::ArtifactsTooLarge {
                            total,
                            limit: limits.max_artifact_bytes,
                        });
                    }
                    files.push((path, stat.st_size as u64));
                }
                other => {
                    return Err(ExtractError::NotARegularFile {
                        path: format!("{ARTIFACTS_DIR}/{path}"),
                        kind: kind_of(other),
                    })
                }
            }
        }
    }
    files
        .into_iter()
        .map(|(path, size)| {
            let content = read_bounded(appliance, &format!("/{ARTIFACTS_DIR}/{path}"), size)?;
            Ok(Artifact { path, content })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_kinds_are_named() {
        assert_eq!(kind_of(0o100_644), "regular file");
        assert_eq!(kind_of(0o120_777), "symbolic link");
        assert_eq!(kind_of(0o020_666), "character device");
        assert_eq!(kind_of(0o040_755), "directory");
    }

    #[test]
    fn only_machinery_failures_are_infrastructure() {
        assert!(
            ExtractError::Infrastructure(InfrastructureError::SessionClosed).is_infrastructure()
        );
        assert!(!ExtractError::Missing.is_infrastructure());
        assert!(!ExtractError::ResultTooLarge { size: 2, limit: 1 }.is_infrastructure());
    }
}
