//! The in-guest agent for tests and benches that boot real guests.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds the agent binary (a no-op when fresh) and returns its path, for tests and benches
/// that cargo does not build it for (it is another package).
pub fn ensure_agent_built() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "-p", "pyti-agent"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "cargo build -p pyti-agent failed");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("debug").join("pyti-agent")
}
