//! Finding the `pyti-agent` binary that [`build`](super::build()) bakes into images.

use super::ImageError;
use std::path::{Path, PathBuf};

/// Environment variable naming the agent binary explicitly.
pub const AGENT_ENV: &str = "PYTI_AGENT";
/// The agent's file name, as cargo builds it.
pub const AGENT_FILE_NAME: &str = "pyti-agent";

/// The agent binary: `$PYTI_AGENT`, else `pyti-agent` next to the running executable or in its
/// parent directory (test binaries run from `target/<profile>/deps`).
pub fn agent_binary_path() -> Result<PathBuf, ImageError> {
    if let Some(path) = std::env::var_os(AGENT_ENV) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(ImageError::AgentNotFound {
                detail: format!("${AGENT_ENV} is {} but that is not a file", path.display()),
            })
        };
    }
    let exe = std::env::current_exe().map_err(|e| ImageError::AgentNotFound {
        detail: format!("cannot locate the running executable: {e}"),
    })?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let candidates = [
        dir.join(AGENT_FILE_NAME),
        dir.parent().unwrap_or(dir).join(AGENT_FILE_NAME),
    ];
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| ImageError::AgentNotFound {
            detail: format!(
                "looked for {} and {}",
                candidates[0].display(),
                candidates[1].display()
            ),
        })
}
