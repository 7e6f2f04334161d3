//! `pyti config show`: every setting, its effective value and where it came from.

use crate::cli::{Cli, ConfigCommand};
use crate::config::{self, LoadedConfig};
use crate::settings::{self, Setting, Source};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};
use std::path::PathBuf;
use std::process::ExitCode;

/// The command lines shown when `pyti config show` is given none, by config section; a section
/// name alone (`pyti config show client`) stands for its command line.
const OVERVIEW: &[(&str, &[&str])] = &[
    ("master", &["master"]),
    ("slave", &["slave"]),
    ("client", &["status"]),
    ("run", &["run", "PACKAGE"]),
];

/// The config file in use: its path as given (or the default one), how it was chosen, and its
/// contents if it was found.
struct FileInUse {
    given: Option<PathBuf>,
    source: Source,
    loaded: Option<LoadedConfig>,
}

/// `outer` and `file` describe the config file of this `pyti config show` invocation itself;
/// a `--config` inside the shown command line replaces it.
pub fn run(
    command: ConfigCommand,
    outer_given: Option<PathBuf>,
    outer: &ArgMatches,
    file: Option<LoadedConfig>,
) -> anyhow::Result<ExitCode> {
    let ConfigCommand::Show { command } = command;
    let owned = |line: &[&str]| line.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let section = match command.as_slice() {
        [word] => OVERVIEW.iter().find(|(name, _)| name == word),
        _ => None,
    };
    let lines: Vec<Vec<String>> = match section {
        Some((_, line)) => vec![owned(line)],
        None if command.is_empty() => OVERVIEW.iter().map(|(_, line)| owned(line)).collect(),
        None => vec![command],
    };
    let mut parsed = Vec::with_capacity(lines.len());
    for line in &lines {
        let argv = std::iter::once("pyti".to_string()).chain(line.iter().cloned());
        match Cli::command().try_get_matches_from(argv) {
            Ok(matches) => {
                let cli = Cli::from_arg_matches(&matches)?;
                parsed.push((cli, matches));
            }
            // `pyti config show slave --help` shows the slave's help.
            Err(e) if !e.use_stderr() => {
                print!("{}", e.render());
                return Ok(ExitCode::SUCCESS);
            }
            Err(e) => anyhow::bail!(
                "`pyti {}` is not a valid command line: {}",
                line.join(" "),
                e.render().to_string().trim_start_matches("error: ")
            ),
        }
    }

    let inner_flag = parsed
        .iter()
        .find(|(_, m)| m.value_source("config") == Some(ValueSource::CommandLine));
    let in_use = match inner_flag {
        Some((cli, _)) => {
            let location = config::locate(cli.config.clone());
            FileInUse {
                given: cli.config.clone(),
                source: Source::Flag("config".into()),
                loaded: location.map(|l| config::load(&l)).transpose()?.flatten(),
            }
        }
        None => FileInUse {
            source: match outer.value_source("config") {
                Some(ValueSource::CommandLine) => Source::Flag("config".into()),
                Some(ValueSource::EnvVariable) => Source::Env("PYTI_CONFIG".into()),
                _ => Source::Default,
            },
            given: outer_given,
            loaded: file,
        },
    };

    let mut rows: Vec<Setting> = Vec::new();
    for (mut cli, matches) in parsed {
        for setting in settings::apply(&mut cli.command, &matches, in_use.loaded.as_ref()) {
            if !rows.iter().any(|r| r.key == setting.key) {
                rows.push(setting);
            }
        }
    }
    // Top-level keys first, then the sections in command order.
    rows.sort_by_key(|r| r.key.contains('.'));

    let mut table = super::new_table();
    table.set_header(["setting", "value", "source"]);
    table.add_row([
        "config file".to_string(),
        config_file_value(&in_use),
        match in_use.source {
            Source::Default => "default location".to_string(),
            ref given => given.to_string(),
        },
    ]);
    for row in rows {
        table.add_row([row.key.to_string(), row.value, row.source.to_string()]);
    }
    println!("{table}");
    Ok(ExitCode::SUCCESS)
}

fn config_file_value(in_use: &FileInUse) -> String {
    match (&in_use.loaded, config::locate(in_use.given.clone())) {
        (Some(loaded), _) => loaded.path.display().to_string(),
        (None, Some(location)) => format!("{} (absent)", location.path.display()),
        (None, None) => "(none: no config directory)".to_string(),
    }
}
