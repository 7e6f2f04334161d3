//! One module per family of subcommands; each turns parsed arguments into library calls.

mod bench;
mod client;
mod config;
mod doctor;
mod image;
pub mod master;
mod package_arg;
mod recipes;
mod report;
mod run;
pub mod slave;

use crate::cli::{Cli, Command};
use clap::ArgMatches;
use std::process::ExitCode;

/// Runs the chosen subcommand and returns the process exit code. `matches` are those `cli` was
/// parsed from: settings that no flag or variable gave are taken from the config file first.
pub fn dispatch(cli: Cli, matches: &ArgMatches) -> anyhow::Result<ExitCode> {
    let file = crate::config::locate(cli.config.clone())
        .map(|location| crate::config::load(&location))
        .transpose()?
        .flatten();
    let mut command = cli.command;
    crate::settings::apply(&mut command, matches, file.as_ref());
    match command {
        Command::Config(command) => config::run(command, cli.config, matches, file),
        Command::Recipes(command) => recipes::run(command),
        Command::Doctor(args) => doctor::run(args),
        Command::Image(command) => image::run(command),
        Command::Run(args) => run::run(args),
        Command::Master(args) => master::run(args),
        Command::Slave(args) => slave::run(args),
        Command::Submit(args) => client::submit(args),
        Command::Status(args) => client::status(args),
        Command::Results(args) => client::results(args),
        Command::Cancel(args) => client::cancel(args),
        Command::Log(args) => client::log(args),
        Command::Compare(args) => client::compare(args),
        Command::Bench(args) => bench::run(args),
    }
}

/// Formats Unix milliseconds as local-free UTC time for tables.
pub fn format_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// Resolves on Ctrl-C or SIGTERM: daemons stop cleanly on either.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Prints a progress line above `bar`, or plainly on stderr when stderr is not a terminal
/// (where the bar is hidden and would swallow the line).
pub fn say(bar: &indicatif::ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

/// A table for people: compact borders, wrapped to the terminal (or to 120 columns when the
/// output is not a terminal, e.g. piped into a log).
pub fn new_table() -> comfy_table::Table {
    let mut table = comfy_table::Table::new();
    table
        .load_preset(comfy_table::presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(comfy_table::ContentArrangement::Dynamic);
    if table.width().is_none() {
        table.set_width(120);
    }
    table
}
