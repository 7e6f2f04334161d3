//! `pyti slave`: claim tasks from a master and run them in VM slots.

use super::recipes;
use crate::cli::{SlaveArgs, SlotMode as CliSlotMode};
use anyhow::Context;
use pyti_slave::daemon::{self, SlaveConfig, SlaveEvent};
use pyti_vmanager::image::{self, ImageCache};
use pyti_vmanager::SlotMode;
use pyti_wire::limits::DEFAULT_STEP_OUTPUT_BYTES;
use pyti_wire::recipe::Recipe;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// The slot mode the CLI asked for.
pub fn slot_mode(mode: CliSlotMode) -> SlotMode {
    match mode {
        CliSlotMode::Warm => SlotMode::Warm,
        CliSlotMode::Cold => SlotMode::Cold,
    }
}

/// A per-user directory under the data dir (`~/.local/share/pyti/<name>`), created.
pub fn data_dir(name: &str) -> anyhow::Result<PathBuf> {
    let dir = dirs::data_dir()
        .unwrap_or_else(|| PathBuf::from(".local/share"))
        .join("pyti")
        .join(name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Everything a slave needs besides the master's address and its recipes.
pub fn slave_config(
    name: String,
    master_url: String,
    token: Option<String>,
    slots: usize,
    mode: SlotMode,
    recipes: Vec<Recipe>,
    libvirt_uri: String,
) -> anyhow::Result<SlaveConfig> {
    Ok(SlaveConfig {
        state_dir: data_dir(&format!("slave-{name}"))?,
        name,
        master_url,
        token,
        slots,
        mode,
        recipes,
        libvirt_uri,
        image_cache: match std::env::var_os("PYTI_IMAGE_CACHE") {
            Some(dir) => PathBuf::from(dir),
            None => ImageCache::default_root()?,
        },
        agent_binary: image::agent_binary_path()?,
        wheelhouse_cache: wheelhouse_cache(),
        output_limit_bytes: DEFAULT_STEP_OUTPUT_BYTES,
    })
}

/// Where slaves keep downloaded wheels and the pinned uv: $XDG_CACHE_HOME/pyti/wheelhouse.
pub fn wheelhouse_cache() -> PathBuf {
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("pyti")
        .join("wheelhouse")
}

/// The default slave name: the host name, reduced to what a libvirt domain name allows.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "slave".to_string())
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect()
}

/// Every valid recipe in the recipes directory (invalid ones are reported and skipped).
fn all_recipes(dir: &crate::cli::RecipeDirArg) -> anyhow::Result<Vec<Recipe>> {
    let mut found = Vec::new();
    for path in recipes::recipe_files(&dir.recipes_dir)? {
        match Recipe::load(&path) {
            Ok(recipe) => found.push(recipe),
            Err(e) => tracing::warn!("skipping invalid recipe {}: {e}", path.display()),
        }
    }
    anyhow::ensure!(
        !found.is_empty(),
        "no valid recipe in {}",
        dir.recipes_dir.display()
    );
    Ok(found)
}

pub fn run(args: SlaveArgs) -> anyhow::Result<ExitCode> {
    let recipes = all_recipes(&args.recipes)?;
    let config = slave_config(
        args.name.unwrap_or_else(host_name),
        args.connection.master,
        args.connection.token,
        args.slots.unwrap_or_else(SlaveConfig::default_slots).max(1),
        slot_mode(args.mode),
        recipes,
        args.libvirt.libvirt_uri,
    )?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let log = |event: SlaveEvent| tracing::debug!(?event, "slave event");
        let images = daemon::build_images(&config, log).await?;
        daemon::run(config, images, super::shutdown_signal(), Arc::new(log)).await?;
        Ok(ExitCode::SUCCESS)
    })
}
