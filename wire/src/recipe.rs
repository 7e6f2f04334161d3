//! Recipes: one TOML file per distribution saying which guest to build and what a task runs.
//!
//! ```toml
//! format = 1
//! description = "Debian 12 (bookworm), CPython 3.11"
//!
//! [guest]
//! distribution = "debian-12"
//! packages = ["python3", "python3-venv"]
//! tools = ["uv"]            # host programs baked in: uv at /usr/local/bin/uv
//!
//! [vm]
//! memory_mib = 1024
//! vcpus = 1
//! accel = "auto"            # auto | kvm | tcg
//!
//! [python]
//! interpreter = "/usr/bin/python3"
//! venv = "/opt/pyti/venv"
//!
//! [[prepare]]               # once per guest, before the warm snapshot
//! name = "venv"
//! run = "{interpreter} -m venv {venv}"
//! timeout = 300             # seconds
//!
//! [[steps]]                 # per task, in order
//! name = "install"
//! run = "{python} -m pip install --no-index --find-links {wheelhouse} {package}"
//! timeout = 900
//! fails_task = true         # default
//! ```
//!
//! Optional: `guest.packages` and `guest.tools` (default none), `vm.accel` (default `auto`), `[[prepare]]` (default
//! none) and `fails_task` (default `true`); every other key above is required, and no other key is
//! allowed. Commands write literal braces (shell `${x}`, Python sets) as `{{` and `}}`.
//!
//! [`Recipe::parse`] validates everything and reports each mistake as a [`RecipeDiagnostic`]
//! (`file:line:col: message`), several per file when several things are wrong. Bounds come from
//! [`crate::limits`].

use crate::template::Template;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// The recipe file format this build understands.
pub const RECIPE_FORMAT: u64 = 1;

/// A validated recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    /// The recipe's name: its file stem (`debian-12` for `recipes/debian-12.toml`).
    pub name: String,
    /// One line for `pyti recipes list`.
    pub description: String,
    pub guest: GuestSpec,
    pub vm: VmResources,
    pub python: PythonSpec,
    /// Run once per guest before the warm snapshot; may use only image-time placeholders.
    pub prepare: Vec<StepSpec>,
    /// Run for every task, in order.
    pub steps: Vec<StepSpec>,
}

/// How the guest image is built: from distribution packages only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestSpec {
    /// Which distribution's packages (for now the host's own: `debian-12`).
    pub distribution: String,
    /// Distribution packages to include in the image (beyond the base the builder always adds).
    pub packages: Vec<String>,
    /// Programs the host supplies, baked into the image (none by default).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<GuestTool>,
}

/// The uv release slaves resolve with and bake into images (`tools = ["uv"]`): pinned, so an
/// upgrade is a reviewed change.
pub const UV_VERSION: &str = "0.13.9";

/// A program the host supplies for the image: the slave's own pinned build of it, so the guest
/// runs exactly what the host resolver ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestTool {
    /// uv, the slave's pinned resolver, as an offline installer at [`GuestTool::guest_path`]:
    /// a native program, where pip spends seconds importing itself under TCG.
    Uv,
}

impl GuestTool {
    /// Every tool, for messages.
    pub const ALL: &'static [GuestTool] = &[GuestTool::Uv];

    /// The name recipes use.
    pub fn name(self) -> &'static str {
        match self {
            GuestTool::Uv => "uv",
        }
    }

    /// Where the image has it.
    pub fn guest_path(self) -> &'static str {
        match self {
            GuestTool::Uv => "/usr/local/bin/uv",
        }
    }
}

/// Virtual hardware for each guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmResources {
    pub memory_mib: u64,
    pub vcpus: u64,
    pub accel: Accel,
}

/// Which accelerator a guest runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// KVM when a probe shows it works, TCG otherwise (the reason is logged).
    Auto,
    /// KVM or fail.
    Kvm,
    /// Software emulation, always available, ~10x slower.
    Tcg,
}

/// The interpreter the steps run under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PythonSpec {
    /// Absolute path of the distribution's interpreter in the guest.
    pub interpreter: String,
    /// Absolute path of the virtual environment the `prepare` steps create.
    pub venv: String,
}

/// One step: a command template, a timeout, and whether its failure fails the task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepSpec {
    pub name: String,
    /// The command template as written in the recipe (validated by [`Template::parse`]).
    pub run: String,
    pub timeout_secs: u64,
    /// A failing step with `fails_task` fails the task and skips the steps after it.
    pub fails_task: bool,
}

impl StepSpec {
    /// The parsed template (always valid for a step of a validated recipe).
    pub fn template(&self) -> Template {
        Template::parse(&self.run).unwrap_or_else(|_| {
            unreachable!("recipe steps are validated when the recipe is parsed")
        })
    }
}

/// One mistake in a recipe file, at a position a person can jump to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipeDiagnostic {
    pub file: PathBuf,
    /// 1-based line and column (in characters).
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for RecipeDiagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.message
        )
    }
}

/// Why a recipe could not be loaded: every diagnostic found, or an I/O problem.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("{}", .0.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<RecipeDiagnostic>),
    #[error("cannot read recipe {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl Recipe {
    /// Reads and validates a recipe file; its name is the file stem.
    pub fn load(path: &Path) -> Result<Recipe, RecipeError> {
        crate::recipe_parse::load(path)
    }

    /// Validates recipe `text` as if read from `file` (used for diagnostics and the name).
    pub fn parse(file: &Path, text: &str) -> Result<Recipe, Vec<RecipeDiagnostic>> {
        crate::recipe_parse::parse(file, text)
    }
}

#[cfg(test)]
mod shipped_recipes {
    use super::*;

    #[test]
    fn debian_12_recipe_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes/debian-12.toml");
        let recipe = Recipe::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(recipe.name, "debian-12");
        assert_eq!(recipe.vm.accel, Accel::Auto);
        assert_eq!(
            recipe
                .steps
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>(),
            ["install", "import", "test"]
        );
    }
}
