//! One module per family of subcommands; each turns parsed arguments into library calls.

mod doctor;
mod image;
mod recipes;

use crate::cli::{Cli, Command, MasterArgs};
use anyhow::bail;
use std::process::ExitCode;

/// Runs the chosen subcommand and returns the process exit code.
pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Recipes(command) => recipes::run(command),
        Command::Doctor(args) => doctor::run(args),
        Command::Image(command) => image::run(command),
        Command::Run(_) => not_landed("pyti run", 8),
        Command::Master(MasterArgs { .. }) => not_landed("pyti master", 6),
        Command::Slave(_) => not_landed("pyti slave", 7),
        Command::Submit(_) | Command::Status(_) | Command::Results(_) | Command::Cancel(_) => {
            not_landed("the master client commands", 8)
        }
    }
}

/// Refuses a command whose implementation has not landed, saying so instead of pretending.
fn not_landed(what: &str, issue: u32) -> anyhow::Result<ExitCode> {
    bail!(
        "{what} is not implemented in this build yet (tracked in issue {issue}); nothing was done"
    )
}
