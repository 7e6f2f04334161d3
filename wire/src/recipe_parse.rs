//! Recipe validation with positions. (First cut: serde, first error only; to be replaced by a
//! walk over the spanned TOML tree that reports every mistake.)

use crate::recipe::{
    Accel, GuestSpec, PythonSpec, Recipe, RecipeDiagnostic, RecipeError, StepSpec, VmResources,
};
use serde::Deserialize;
use std::path::Path;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecipe {
    format: u64,
    description: String,
    guest: GuestSpec,
    vm: VmResources,
    python: PythonSpec,
    #[serde(default)]
    prepare: Vec<RawStep>,
    steps: Vec<RawStep>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    name: String,
    run: String,
    timeout: u64,
    #[serde(default = "yes")]
    fails_task: bool,
}

fn yes() -> bool {
    true
}

pub(crate) fn load(path: &Path) -> Result<Recipe, RecipeError> {
    let text = std::fs::read_to_string(path).map_err(|source| RecipeError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text).map_err(RecipeError::Invalid)
}

pub(crate) fn parse(file: &Path, text: &str) -> Result<Recipe, Vec<RecipeDiagnostic>> {
    let raw: RawRecipe = toml::from_str(text).map_err(|e| {
        let (line, column) = e
            .span()
            .map(|s| line_col(text, s.start))
            .unwrap_or((1, 1));
        vec![RecipeDiagnostic {
            file: file.to_path_buf(),
            line,
            column,
            message: e.message().to_string(),
        }]
    })?;
    let _ = raw.format;
    let step = |s: RawStep| StepSpec {
        name: s.name,
        run: s.run,
        timeout_secs: s.timeout,
        fails_task: s.fails_task,
    };
    let _ = Accel::Auto;
    Ok(Recipe {
        name: file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        description: raw.description,
        guest: raw.guest,
        vm: raw.vm,
        python: raw.python,
        prepare: raw.prepare.into_iter().map(step).collect(),
        steps: raw.steps.into_iter().map(step).collect(),
    })
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}
