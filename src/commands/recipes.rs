//! `pyti recipes list|check|show`.

use crate::cli::{RecipeDirArg, RecipesCommand};
use anyhow::{bail, Context};
use pyti_wire::recipe::{Recipe, RecipeError};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub fn run(command: RecipesCommand) -> anyhow::Result<ExitCode> {
    match command {
        RecipesCommand::List { recipes } => list(&recipes),
        RecipesCommand::Check { files } => Ok(check(&files)),
        RecipesCommand::Show { recipe, recipes } => show(&load(&recipe, &recipes)?),
    }
}

/// Finds a recipe by name in the recipes directory, or by path.
pub fn resolve(name_or_path: &str, dir: &RecipeDirArg) -> anyhow::Result<PathBuf> {
    let as_path = Path::new(name_or_path);
    if name_or_path.ends_with(".toml") || name_or_path.contains('/') {
        if as_path.is_file() {
            return Ok(as_path.to_path_buf());
        }
        bail!("recipe file {name_or_path} does not exist");
    }
    let candidate = dir.recipes_dir.join(format!("{name_or_path}.toml"));
    if candidate.is_file() {
        return Ok(candidate);
    }
    let known = recipe_files(&dir.recipes_dir)
        .unwrap_or_default()
        .iter()
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect::<Vec<_>>();
    bail!(
        "no recipe `{name_or_path}` in {} (known: {}); pass --recipes-dir or a path to a .toml file",
        dir.recipes_dir.display(),
        if known.is_empty() { "none".to_string() } else { known.join(", ") }
    )
}

/// Loads and validates a recipe by name or path.
pub fn load(name_or_path: &str, dir: &RecipeDirArg) -> anyhow::Result<Recipe> {
    let path = resolve(name_or_path, dir)?;
    Recipe::load(&path).map_err(|e| match e {
        RecipeError::Invalid(diagnostics) => anyhow::anyhow!(
            "recipe {} is invalid:\n{}",
            path.display(),
            diagnostics
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        ),
        other => other.into(),
    })
}

pub fn recipe_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| {
            format!(
                "cannot read recipes directory {} (pass --recipes-dir)",
                dir.display()
            )
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

fn list(dir: &RecipeDirArg) -> anyhow::Result<ExitCode> {
    let mut table = super::new_table();
    table.set_header([
        "recipe",
        "distribution",
        "accel",
        "memory",
        "steps",
        "description",
    ]);
    let mut invalid = 0;
    for path in recipe_files(&dir.recipes_dir)? {
        match Recipe::load(&path) {
            Ok(r) => {
                table.add_row([
                    r.name.clone(),
                    r.guest.distribution.clone(),
                    format!("{:?}", r.vm.accel).to_lowercase(),
                    format!("{} MiB", r.vm.memory_mib),
                    r.steps
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    r.description.clone(),
                ]);
            }
            Err(_) => {
                invalid += 1;
                let name = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                table.add_row([
                    name,
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    format!("INVALID: run `pyti recipes check {}`", path.display()),
                ]);
            }
        }
    }
    println!("{table}");
    Ok(if invalid > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Prints every diagnostic of every file; 1 if any file is invalid.
fn check(files: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    for file in files {
        match Recipe::load(file) {
            Ok(recipe) => println!(
                "{}: ok (recipe `{}`, {} steps)",
                file.display(),
                recipe.name,
                recipe.steps.len()
            ),
            Err(RecipeError::Invalid(diagnostics)) => {
                failed = true;
                for d in diagnostics {
                    println!("{d}");
                }
            }
            Err(other) => {
                failed = true;
                println!("{}: {other}", file.display());
            }
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn show(recipe: &Recipe) -> anyhow::Result<ExitCode> {
    println!("recipe       {}", recipe.name);
    println!("description  {}", recipe.description);
    println!(
        "guest        {} + {}",
        recipe.guest.distribution,
        recipe.guest.packages.join(" ")
    );
    println!(
        "vm           {} MiB, {} vCPU, accel {:?}",
        recipe.vm.memory_mib, recipe.vm.vcpus, recipe.vm.accel
    );
    println!(
        "python       {} (venv {})",
        recipe.python.interpreter, recipe.python.venv
    );
    for (title, steps) in [
        ("prepare (once per guest)", &recipe.prepare),
        ("steps (per task)", &recipe.steps),
    ] {
        let mut table = super::new_table();
        table.set_header(["step", "timeout", "fails task", "command"]);
        for s in steps {
            table.add_row([
                s.name.clone(),
                format!("{} s", s.timeout_secs),
                if s.fails_task { "yes" } else { "no" }.to_string(),
                s.run.clone(),
            ]);
        }
        println!("\n{title}\n{table}");
    }
    Ok(ExitCode::SUCCESS)
}
