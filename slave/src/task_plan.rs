//! Turning a recipe's step templates into the concrete `task.json` the agent runs.
//!
//! Templates are expanded on the host, with shell-quoted values, so the guest receives finished
//! commands and never interprets a placeholder itself.

use pyti_wire::guest_task::{GuestStep, GuestTask, GUEST_TASK_SCHEMA};
use pyti_wire::io_layout::{GUEST_IO_MOUNT, PACKAGE_DIR, WHEELHOUSE_DIR};
use pyti_wire::limits;
use pyti_wire::recipe::Recipe;
use pyti_wire::template::Placeholder;
use std::collections::BTreeMap;

/// Scratch directory of a task inside the guest (`{workdir}`): on the guest's own disk, which the
/// rollback throws away, writable by the unprivileged step user.
pub const GUEST_WORKDIR: &str = "/var/tmp/pyti-work";

/// What `{package}` stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackageArgument {
    /// A file copied into the I/O disk's `package/` directory (sdist or wheel), by file name.
    File(String),
    /// A requirement pip resolves from the wheelhouse (`name==version`).
    Requirement(String),
}

/// The per-task facts the templates need.
#[derive(Debug, Clone)]
pub struct TaskFacts {
    pub task_id: String,
    pub package: PackageArgument,
    /// The normalised distribution name (`{dist}`).
    pub dist: String,
    /// Per-stream output cap for each step.
    pub output_limit_bytes: u64,
    /// Host wall-clock time, Unix seconds, for the guest's clock.
    pub host_time_unix: i64,
}

/// A recipe that cannot produce a valid task (a bug in validation, or limits exceeded).
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(
        "step `{step}` of recipe `{recipe}` uses {{{placeholder}}}, which has no value for a task"
    )]
    MissingValue {
        recipe: String,
        step: String,
        placeholder: &'static str,
    },
    #[error("step `{step}` expands to {bytes} bytes, more than the {max} allowed; shorten the recipe's command")]
    CommandTooLong {
        step: String,
        bytes: usize,
        max: usize,
    },
}

/// The values of every placeholder for one task of `recipe`.
pub fn placeholder_values(recipe: &Recipe, facts: &TaskFacts) -> BTreeMap<Placeholder, String> {
    let io = GUEST_IO_MOUNT.to_string();
    let package = match &facts.package {
        PackageArgument::File(name) => format!("{io}/{PACKAGE_DIR}/{name}"),
        PackageArgument::Requirement(requirement) => requirement.clone(),
    };
    BTreeMap::from([
        (Placeholder::Interpreter, recipe.python.interpreter.clone()),
        (Placeholder::Venv, recipe.python.venv.clone()),
        (
            Placeholder::Python,
            format!("{}/bin/python", recipe.python.venv.trim_end_matches('/')),
        ),
        (Placeholder::Package, package),
        (Placeholder::Dist, facts.dist.clone()),
        (Placeholder::Wheelhouse, format!("{io}/{WHEELHOUSE_DIR}")),
        (Placeholder::Io, io),
        (Placeholder::Workdir, GUEST_WORKDIR.to_string()),
    ])
}

/// Builds `task.json` for one task of `recipe`.
pub fn guest_task(recipe: &Recipe, facts: &TaskFacts) -> Result<GuestTask, PlanError> {
    let values = placeholder_values(recipe, facts);
    let steps = recipe
        .steps
        .iter()
        .map(|step| {
            let command = step
                .template()
                .expand(&values)
                .map_err(|p| PlanError::MissingValue {
                    recipe: recipe.name.clone(),
                    step: step.name.clone(),
                    placeholder: p.name(),
                })?;
            if command.len() > limits::MAX_COMMAND_BYTES {
                return Err(PlanError::CommandTooLong {
                    step: step.name.clone(),
                    bytes: command.len(),
                    max: limits::MAX_COMMAND_BYTES,
                });
            }
            Ok(GuestStep {
                name: step.name.clone(),
                command,
                timeout_secs: step.timeout_secs,
                fails_task: step.fails_task,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(GuestTask {
        schema: GUEST_TASK_SCHEMA,
        task_id: facts.task_id.clone(),
        host_time_unix: facts.host_time_unix,
        output_limit_bytes: facts.output_limit_bytes.min(limits::MAX_STEP_OUTPUT_BYTES),
        steps,
    })
}

/// The longest a task's guest may run: every step's timeout, plus room for the agent to mount,
/// write the result and report (a step that hangs is killed at its own timeout first).
pub fn guest_deadline(task: &GuestTask) -> std::time::Duration {
    const AGENT_ALLOWANCE_SECS: u64 = 60;
    std::time::Duration::from_secs(
        task.steps.iter().map(|s| s.timeout_secs).sum::<u64>() + AGENT_ALLOWANCE_SECS,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn recipe() -> Recipe {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes/debian-12.toml");
        Recipe::load(&path).expect("shipped recipe is valid")
    }

    fn facts(package: PackageArgument) -> TaskFacts {
        TaskFacts {
            task_id: "t-1".into(),
            package,
            dist: "six".into(),
            output_limit_bytes: 65536,
            host_time_unix: 1_800_000_000,
        }
    }

    #[test]
    fn a_requirement_is_installed_from_the_wheelhouse() {
        let task = guest_task(
            &recipe(),
            &facts(PackageArgument::Requirement("six==1.16.0".into())),
        )
        .unwrap();
        assert_eq!(task.task_id, "t-1");
        let install = &task.steps[0];
        assert_eq!(install.name, "install");
        assert_eq!(
            install.command,
            "/usr/local/bin/uv pip install --offline --no-index --no-cache --link-mode=copy --find-links /mnt/pyti-io/wheelhouse --python /opt/pyti/venv/bin/python six==1.16.0"
        );
        assert!(task
            .steps
            .iter()
            .all(|s| !s.command.contains('{') || s.name == "import"));
    }

    #[test]
    fn a_file_is_named_by_its_path_on_the_io_disk_and_quoted() {
        let task = guest_task(
            &recipe(),
            &facts(PackageArgument::File("odd name-1.0.tar.gz".into())),
        )
        .unwrap();
        assert!(
            task.steps[0]
                .command
                .ends_with("'/mnt/pyti-io/package/odd name-1.0.tar.gz'"),
            "{}",
            task.steps[0].command
        );
    }

    #[test]
    fn the_deadline_covers_every_step() {
        let task = guest_task(
            &recipe(),
            &facts(PackageArgument::Requirement("six==1.16.0".into())),
        )
        .unwrap();
        let steps: u64 = recipe().steps.iter().map(|s| s.timeout_secs).sum();
        assert_eq!(guest_deadline(&task).as_secs(), steps + 60);
    }

    #[test]
    fn output_limit_is_capped() {
        let mut f = facts(PackageArgument::Requirement("six==1.16.0".into()));
        f.output_limit_bytes = u64::MAX;
        let task = guest_task(&recipe(), &f).unwrap();
        assert_eq!(task.output_limit_bytes, limits::MAX_STEP_OUTPUT_BYTES);
    }
}
