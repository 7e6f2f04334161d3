//! The host files images bake in (the agent and uv), for tests and benches that boot real guests.

use pyti_vmanager::image::HostFiles;
use pyti_wire::recipe::UV_VERSION;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The agent (built) and the pinned uv (installed), for recipes with `tools = ["uv"]`.
pub fn host_files() -> HostFiles {
    HostFiles {
        agent: ensure_agent_built(),
        uv: Some(ensure_uv_installed()),
    }
}

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
    target_dir().join("debug").join("pyti-agent")
}

/// Installs uv [`UV_VERSION`] from PyPI under the target directory once (the slave installs the
/// same release the same way; the vmanager does not depend on the slave) and returns its path.
pub fn ensure_uv_installed() -> PathBuf {
    let tools = target_dir().join("pyti-test-tools");
    let home = tools.join(format!("uv-{UV_VERSION}"));
    let uv = home.join("bin").join("uv");
    if uv.is_file() {
        return uv;
    }
    std::fs::create_dir_all(&tools).expect("create the test tools directory");
    let partial = tempfile::Builder::new()
        .prefix(".uv-install-")
        .tempdir_in(&tools)
        .expect("create a directory for uv");
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(["--only-binary=:all:", "--no-deps", "--target"])
        .arg(partial.path())
        .arg(format!("uv=={UV_VERSION}"))
        .env("PIP_CONFIG_FILE", "/dev/null")
        .status()
        .expect("python3 -m pip runs");
    assert!(status.success(), "pip install uv=={UV_VERSION} failed");
    // Another test process may have installed it meanwhile: theirs is as good.
    if std::fs::rename(partial.keep(), &home).is_err() {
        assert!(uv.is_file(), "uv was not installed at {}", uv.display());
    }
    uv
}

fn target_dir() -> PathBuf {
    std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}
