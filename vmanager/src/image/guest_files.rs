//! The files pyti adds to the distribution packages: the agent as `/init`, the step user, the
//! baked prepare plan, and the host's precompiled Python bytecode.
//!
//! They reach the image through supermin's own mechanisms (a tarball and a `hostfiles` list in
//! the prepared appliance directory), so the root filesystem is written once.

use super::host_tool::TAR;
use super::ImageError;
use pyti_wire::guest_task::{
    GuestStep, PreparePlan, GUEST_STEP_UID, PREPARE_PLAN_PATH, PREPARE_PLAN_SCHEMA,
};
use pyti_wire::io_layout::GUEST_IO_MOUNT;
use pyti_wire::recipe::Recipe;
use pyti_wire::template::Placeholder;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Where the agent binary lives in the guest; `/init` points at it (supermin's initrd execs
/// `/init` after mounting the root).
pub const GUEST_AGENT_PATH: &str = "/usr/sbin/pyti-agent";
/// The step user's home.
const GUEST_HOME: &str = "/home/pyti";
/// Host directories whose `__pycache__` the image reuses: the host's bytecode was compiled from
/// the very files `--use-installed` copies (same mtimes), so CPython accepts it and a TCG guest
/// never recompiles the stdlib.
const PYTHON_LIB_DIRS: &str = "/usr/lib";

/// Expands the recipe's `prepare` steps with the image-time placeholders.
pub(crate) fn prepare_plan(recipe: &Recipe, image_key: &str) -> Result<PreparePlan, ImageError> {
    let venv = recipe.python.venv.trim_end_matches('/');
    let values = BTreeMap::from([
        (Placeholder::Interpreter, recipe.python.interpreter.clone()),
        (Placeholder::Venv, venv.to_string()),
        (Placeholder::Python, format!("{venv}/bin/python")),
    ]);
    let mut steps = Vec::new();
    for step in &recipe.prepare {
        let command =
            step.template()
                .expand(&values)
                .map_err(|missing| ImageError::BadPrepareStep {
                    step: step.name.clone(),
                    detail: format!(
                        "placeholder `{{{}}}` has no value before a task exists",
                        missing.name()
                    ),
                })?;
        steps.push(GuestStep {
            name: step.name.clone(),
            command,
            timeout_secs: step.timeout_secs,
            fails_task: step.fails_task,
        });
    }
    // The step user must be able to create the venv; its parent is given to it unless that is `/`.
    let venv_parent = Path::new(venv).parent().filter(|p| p != &Path::new("/"));
    let mut writable_dirs = vec![GUEST_HOME.to_string()];
    writable_dirs.push(venv_parent.map_or(venv.to_string(), |p| p.to_string_lossy().into_owned()));
    Ok(PreparePlan {
        schema: PREPARE_PLAN_SCHEMA,
        image_key: image_key.to_string(),
        interpreter: recipe.python.interpreter.clone(),
        writable_dirs,
        steps,
    })
}

/// Writes `pyti.tar` and `hostfiles` into supermin's prepared appliance directory `appliance`.
pub(crate) fn add_to_appliance(
    appliance: &Path,
    work: &Path,
    agent: &Path,
    tools: &[(&str, &Path)],
    plan: &PreparePlan,
) -> Result<(), ImageError> {
    let stage = work.join("stage");
    let mkdir = |rel: &str, mode: u32| -> Result<PathBuf, ImageError> {
        let path = stage.join(rel.trim_start_matches('/'));
        fs::create_dir_all(&path).map_err(ImageError::io("create", &path))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .map_err(ImageError::io("chmod", &path))?;
        Ok(path)
    };
    let write = |rel: &str, content: &[u8], mode: u32| -> Result<(), ImageError> {
        let path = stage.join(rel.trim_start_matches('/'));
        fs::write(&path, content).map_err(ImageError::io("write", &path))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .map_err(ImageError::io("chmod", &path))
    };
    for dir in [
        "/etc/pyti",
        "/usr/sbin",
        "/var/lib/pyti",
        GUEST_IO_MOUNT,
        GUEST_HOME,
        "/root",
    ] {
        mkdir(dir, 0o755)?;
    }
    mkdir("/tmp", 0o1777)?;
    let agent_bytes = fs::read(agent).map_err(ImageError::io("read agent binary", agent))?;
    write(GUEST_AGENT_PATH, &agent_bytes, 0o755)?;
    std::os::unix::fs::symlink(GUEST_AGENT_PATH.trim_start_matches('/'), stage.join("init"))
        .map_err(ImageError::io("symlink", stage.join("init")))?;
    let uid = GUEST_STEP_UID;
    write(
        "/etc/passwd",
        format!(
            "root:x:0:0:root:/root:/bin/sh\npyti:x:{uid}:{uid}:pyti steps:{GUEST_HOME}:/bin/sh\n"
        )
        .as_bytes(),
        0o644,
    )?;
    write(
        "/etc/group",
        format!("root:x:0:\npyti:x:{uid}:\n").as_bytes(),
        0o644,
    )?;
    write("/etc/hostname", b"pyti-guest\n", 0o644)?;
    write("/etc/hosts", b"127.0.0.1 localhost pyti-guest\n", 0o644)?;
    let plan_json = serde_json::to_vec_pretty(plan).map_err(|e| ImageError::BadPrepareStep {
        step: "(all)".into(),
        detail: e.to_string(),
    })?;
    write(PREPARE_PLAN_PATH, &plan_json, 0o644)?;

    for &(guest_path, host_path) in tools {
        if let Some(dir) = Path::new(guest_path).parent() {
            mkdir(&dir.to_string_lossy(), 0o755)?;
        }
        let bytes = fs::read(host_path).map_err(ImageError::io("read", host_path))?;
        write(guest_path, &bytes, 0o755)?;
    }
    let tarball = appliance.join("pyti.tar");
    TAR.run(
        TAR.command()
            .arg("-C")
            .arg(&stage)
            .args(["--owner=0", "--group=0", "--numeric-owner", "-cf"])
            .arg(&tarball)
            .arg("."),
    )?;

    let mut hostfiles = String::new();
    for dir in pycache_dirs(Path::new(PYTHON_LIB_DIRS))? {
        hostfiles.push_str(&dir.to_string_lossy());
        hostfiles.push_str("/*\n");
    }
    let path = appliance.join("hostfiles");
    fs::write(&path, hostfiles).map_err(ImageError::io("write", &path))
}

/// Every `__pycache__` directory under the host's `/usr/lib/python3*`.
fn pycache_dirs(lib: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let mut found = Vec::new();
    let entries = fs::read_dir(lib).map_err(ImageError::io("list", lib))?;
    let mut stack: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .map(|e| e.path())
        .collect();
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            // symlink_metadata: never follow links out of the library tree.
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if !meta.is_dir() {
                continue;
            }
            if entry.file_name() == "__pycache__" {
                found.push(entry.path());
            } else {
                stack.push(entry.path());
            }
        }
    }
    found.sort();
    Ok(found)
}
