//! The recipes a master accepts, loaded once from its recipes directory. Each task stores a
//! snapshot of its recipe at submission, so editing a recipe later never changes a queued task.

use crate::error::MasterError;
use pyti_wire::recipe::Recipe;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

/// A recipe ready to be snapshotted: its JSON form and that form's SHA-256.
#[derive(Debug, Clone)]
pub struct RecipeEntry {
    pub recipe: Recipe,
    pub json: String,
    pub sha256: String,
}

/// Known recipes by name.
#[derive(Debug, Clone, Default)]
pub struct RecipeCatalog {
    entries: BTreeMap<String, RecipeEntry>,
}

impl RecipeCatalog {
    /// Loads every `*.toml` in `dir`; any invalid recipe fails the whole load (a master must not
    /// start with half its recipes).
    pub fn load_dir(dir: &Path) -> Result<RecipeCatalog, MasterError> {
        let err = |reason: String| MasterError::Recipes {
            dir: dir.display().to_string(),
            reason,
        };
        let listing = std::fs::read_dir(dir).map_err(|e| err(e.to_string()))?;
        let mut recipes = Vec::new();
        for entry in listing {
            let path = entry.map_err(|e| err(e.to_string()))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            recipes.push(Recipe::load(&path).map_err(|e| err(e.to_string()))?);
        }
        Ok(RecipeCatalog::from_recipes(recipes))
    }

    /// A catalog of the given recipes (tests, embedded mode).
    pub fn from_recipes(recipes: impl IntoIterator<Item = Recipe>) -> RecipeCatalog {
        let entries = recipes
            .into_iter()
            .map(|recipe| {
                let json = serde_json::to_string(&recipe)
                    .unwrap_or_else(|e| unreachable!("a recipe always serializes: {e}"));
                let sha256 = hex::encode(Sha256::digest(json.as_bytes()));
                (
                    recipe.name.clone(),
                    RecipeEntry {
                        recipe,
                        json,
                        sha256,
                    },
                )
            })
            .collect();
        RecipeCatalog { entries }
    }

    /// The recipe called `name`.
    pub fn get(&self, name: &str) -> Option<&RecipeEntry> {
        self.entries.get(name)
    }

    /// Recipe names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }
}
