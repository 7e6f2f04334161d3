//! `pyti image build`: build or reuse a recipe's guest image, with a progress line per phase.

use super::recipes;
use crate::cli::ImageCommand;
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use pyti_slave::daemon;
use pyti_vmanager::image::{self, BuildPhase, ImageCache};
use std::process::ExitCode;
use std::time::{Duration, Instant};

pub fn run(command: ImageCommand) -> anyhow::Result<ExitCode> {
    let ImageCommand::Build {
        recipe,
        recipes: dir,
        agent,
        cache,
    } = command;
    let recipe = recipes::load(&recipe, &dir)?;
    let agent = match agent {
        Some(path) => path,
        None => image::agent_binary_path()?,
    };
    let cache = ImageCache::new(match cache {
        Some(root) => root,
        None => ImageCache::default_root()?,
    });
    let files = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(daemon::host_files(
            std::slice::from_ref(&recipe),
            agent,
            &super::slave::wheelhouse_cache(),
        ))
        .with_context(|| format!("installing the tools recipe `{}` names", recipe.name))?;

    let started = Instant::now();
    let bar = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("static template"),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    let image = image::build(&recipe, &files, &cache, &mut |event| match event {
        BuildPhase::Started { phase } => {
            bar.set_message(format!("building `{}`: {}", recipe.name, phase.name()))
        }
        BuildPhase::Finished { phase, elapsed } => super::say(
            &bar,
            format!("  {:<18} {:>6.1} s", phase.name(), elapsed.as_secs_f64()),
        ),
        BuildPhase::CacheHit { key } => {
            super::say(&bar, format!("  cache hit ({})", &key[..key.len().min(16)]))
        }
    })
    .with_context(|| format!("building the guest image for recipe `{}`", recipe.name))?;
    bar.finish_and_clear();
    println!(
        "image for `{}` ready in {:.1} s\n  kernel       {}\n  initrd       {}\n  system disk  {}",
        recipe.name,
        started.elapsed().as_secs_f64(),
        image.kernel.display(),
        image.initrd.display(),
        image.system_disk.display()
    );
    Ok(ExitCode::SUCCESS)
}
