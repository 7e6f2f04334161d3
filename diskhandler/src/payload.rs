//! What one task puts on its I/O disk: `task.json`, the package under test and its wheelhouse.

use pyti_wire::guest_task::GuestTask;
use pyti_wire::limits;
use std::collections::HashSet;
use std::path::PathBuf;

/// Longest file name accepted (ext4's limit).
pub const MAX_FILE_NAME_BYTES: usize = 255;
/// Most files in one payload: a wheelhouse of a few hundred wheels is large already.
pub const MAX_PAYLOAD_FILES: usize = 4096;

/// One host file copied onto the I/O disk under `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadFile {
    /// File name on the I/O disk (a single path component).
    pub name: String,
    /// The file on the host.
    pub source: PathBuf,
}

impl PayloadFile {
    /// A payload file named like its host file.
    pub fn from_path(source: impl Into<PathBuf>) -> Option<PayloadFile> {
        let source = source.into();
        let name = source.file_name()?.to_str()?.to_string();
        Some(PayloadFile { name, source })
    }
}

/// Everything injected for one task.
#[derive(Debug, Clone)]
pub struct TaskPayload {
    /// Written as `task.json`.
    pub task: GuestTask,
    /// Copied into `package/`.
    pub package: Vec<PayloadFile>,
    /// Copied into `wheelhouse/`.
    pub wheelhouse: Vec<PayloadFile>,
}

/// Why a payload was refused before anything touched the disk.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("payload file name `{name}` is not a plain file name ({reason}); rename the file")]
    BadName { name: String, reason: &'static str },
    #[error("payload file name `{name}` appears twice in {dir}/")]
    Duplicate { name: String, dir: &'static str },
    #[error("payload has {count} files, at most {MAX_PAYLOAD_FILES} are accepted")]
    TooManyFiles { count: usize },
    #[error("payload file {path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error("cannot read payload file {path}: {source}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "task.json would be {bytes} bytes, at most {} are accepted",
        limits::MAX_TASK_FILE_BYTES
    )]
    TaskTooLarge { bytes: usize },
    #[error("cannot serialise task.json: {0}")]
    TaskJson(String),
}

/// A checked payload: names validated, sizes known, `task.json` serialised.
#[derive(Debug, Clone)]
pub(crate) struct CheckedPayload {
    pub(crate) task_json: Vec<u8>,
    /// (directory on the disk, file) pairs with each file's host size.
    pub(crate) files: Vec<(&'static str, PayloadFile, u64)>,
}

impl CheckedPayload {
    /// Bytes of file content, `task.json` included.
    pub(crate) fn content_bytes(&self) -> u64 {
        self.task_json.len() as u64 + self.files.iter().map(|(_, _, size)| size).sum::<u64>()
    }

    /// Number of files, `task.json` included.
    pub(crate) fn file_count(&self) -> u64 {
        self.files.len() as u64 + 1
    }
}

fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if name == "." || name == ".." {
        return Err("`.` and `..` are not file names");
    }
    if name.len() > MAX_FILE_NAME_BYTES {
        return Err("longer than 255 bytes");
    }
    if name.contains('/') || name.contains('\0') {
        return Err("contains `/` or a NUL byte");
    }
    Ok(())
}

impl TaskPayload {
    /// Validates names, reads host sizes and serialises `task.json`.
    pub(crate) fn check(&self) -> Result<CheckedPayload, PayloadError> {
        let count = self.package.len() + self.wheelhouse.len();
        if count > MAX_PAYLOAD_FILES {
            return Err(PayloadError::TooManyFiles { count });
        }
        let task_json = serde_json::to_vec_pretty(&self.task)
            .map_err(|e| PayloadError::TaskJson(e.to_string()))?;
        if task_json.len() as u64 > limits::MAX_TASK_FILE_BYTES {
            return Err(PayloadError::TaskTooLarge {
                bytes: task_json.len(),
            });
        }
        let mut files = Vec::with_capacity(count);
        for (dir, list) in [
            (pyti_wire::io_layout::PACKAGE_DIR, &self.package),
            (pyti_wire::io_layout::WHEELHOUSE_DIR, &self.wheelhouse),
        ] {
            let mut seen = HashSet::new();
            for file in list {
                check_name(&file.name).map_err(|reason| PayloadError::BadName {
                    name: file.name.chars().take(300).collect(),
                    reason,
                })?;
                if !seen.insert(file.name.as_str()) {
                    return Err(PayloadError::Duplicate {
                        name: file.name.clone(),
                        dir,
                    });
                }
                let meta =
                    std::fs::metadata(&file.source).map_err(|source| PayloadError::Unreadable {
                        path: file.source.clone(),
                        source,
                    })?;
                if !meta.is_file() {
                    return Err(PayloadError::NotAFile {
                        path: file.source.clone(),
                    });
                }
                files.push((dir, file.clone(), meta.len()));
            }
        }
        Ok(CheckedPayload { task_json, files })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyti_wire::guest_task::GUEST_TASK_SCHEMA;

    fn task() -> GuestTask {
        GuestTask {
            schema: GUEST_TASK_SCHEMA,
            task_id: "t1".into(),
            host_time_unix: 0,
            output_limit_bytes: 1024,
            steps: vec![],
        }
    }

    #[test]
    fn names_that_escape_the_directory_are_refused() {
        for bad in ["", ".", "..", "a/b", "../x"] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_name(&"x".repeat(256)).is_err());
        assert!(check_name("pkg-1.0.tar.gz").is_ok());
    }

    #[test]
    fn check_counts_sizes_and_refuses_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.whl");
        std::fs::write(&a, vec![0u8; 1000]).unwrap();
        let payload = TaskPayload {
            task: task(),
            package: vec![PayloadFile::from_path(&a).unwrap()],
            wheelhouse: vec![PayloadFile::from_path(&a).unwrap()],
        };
        let checked = payload.check().unwrap();
        assert_eq!(checked.file_count(), 3);
        assert_eq!(
            checked.content_bytes(),
            2000 + checked.task_json.len() as u64
        );

        let dup = TaskPayload {
            wheelhouse: vec![PayloadFile::from_path(&a).unwrap(); 2],
            ..payload.clone()
        };
        assert!(matches!(dup.check(), Err(PayloadError::Duplicate { .. })));

        let missing = TaskPayload {
            package: vec![PayloadFile::from_path(dir.path().join("nope")).unwrap()],
            ..payload
        };
        assert!(matches!(
            missing.check(),
            Err(PayloadError::Unreadable { .. })
        ));
    }
}
