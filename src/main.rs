//! `pyti`: the one binary users run. Thin glue: parse the command line, build the pieces from the
//! library crates (master, slave, vmanager, diskhandler), run them, and show progress and tables.
//!
//! Exit codes: 0 success, 1 the thing checked or tested failed (a failing recipe check, a failing
//! doctor check, a failed task), 2 usage or infrastructure error (including commands whose
//! implementation has not landed yet).

mod cli;
mod commands;
mod config;
mod settings;

use clap::{CommandFactory, FromArgMatches};
use std::process::ExitCode;

fn main() -> ExitCode {
    // The matches are kept beside the parsed `Cli`: they say which values came from a flag, an
    // environment variable or a default, which `settings` needs to let the config file in.
    let matches = cli::Cli::command().get_matches();
    let cli = cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    init_logging(&cli);
    match commands::dispatch(cli, &matches) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// Logs go to stderr through `tracing`; `PYTI_LOG` (an env-filter) wins over `-v`/`-q`.
fn init_logging(cli: &cli::Cli) {
    let default = match (cli.quiet, cli.verbose, cli.command.is_daemon()) {
        (true, _, _) => "error",
        (false, 0, false) => "warn",
        (false, 0, true) | (false, 1, _) => "info",
        (false, 2, _) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PYTI_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
