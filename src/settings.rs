//! The effective settings of a command, and where each one came from.
//!
//! Precedence: command-line flag > `PYTI_*` environment variable > config file > built-in default.
//! clap already applies the first two and the defaults (so `--help` shows them); [`apply`] then
//! replaces every value clap took from its default, or left unset, by the config file's, and
//! records each setting's source for `pyti config show`.

use crate::cli::{
    Cli, Command, LibvirtArg, MasterCommand, MasterConnection, RecipeDirArg, RecipesCommand,
    TokenCommand,
};
use crate::commands::{master, slave};
use crate::config::{ConfigFile, LoadedConfig};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory};
use std::fmt;
use std::path::PathBuf;

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A command-line flag (its long name).
    Flag(String),
    /// An environment variable (its name).
    Env(String),
    /// The config file at this path.
    File(PathBuf),
    /// pyti's built-in default.
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(name) => write!(f, "flag --{name}"),
            Source::Env(name) => write!(f, "env {name}"),
            Source::File(path) => write!(f, "file {}", path.display()),
            Source::Default => f.write_str("default"),
        }
    }
}

/// One resolved setting, named by its key in the config file (`master.listen`, `recipes_dir`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub key: &'static str,
    /// The value as shown to people (tokens masked).
    pub value: String,
    pub source: Source,
}

/// Fills in `command` from the config file wherever neither a flag nor an environment variable
/// gave a value, and returns every configurable setting of that command with its source.
/// `matches` are the matches of the whole command line that `command` was parsed from.
pub fn apply(
    command: &mut Command,
    matches: &ArgMatches,
    file: Option<&LoadedConfig>,
) -> Vec<Setting> {
    let root = Cli::command();
    let mut definition = &root;
    let mut matches = matches;
    while let Some((name, sub)) = matches.subcommand() {
        match definition.find_subcommand(name) {
            Some(sub_definition) => definition = sub_definition,
            None => break,
        }
        matches = sub;
    }
    let mut resolver = Resolver {
        matches,
        definition,
        file,
        settings: Vec::new(),
    };
    let r = &mut resolver;
    match command {
        Command::Master(args) => match &mut args.command {
            None => {
                let serve = &mut args.serve;
                r.recipes_dir(&mut serve.recipes);
                r.resolve("master.listen", &mut serve.listen, |f| f.master.listen);
                r.resolve("master.database", &mut serve.database, |f| {
                    f.master.database.clone().map(Some)
                });
                r.resolve("master.lease_secs", &mut serve.lease_secs, |f| {
                    f.master.lease_secs
                });
                r.resolve("master.max_attempts", &mut serve.max_attempts, |f| {
                    f.master.max_attempts
                });
            }
            Some(MasterCommand::Token(
                TokenCommand::Add { database, .. }
                | TokenCommand::List { database, .. }
                | TokenCommand::Revoke { database, .. },
            )) => r.resolve("master.database", database, |f| {
                f.master.database.clone().map(Some)
            }),
        },
        Command::Slave(args) => {
            r.recipes_dir(&mut args.recipes);
            r.libvirt(&mut args.libvirt);
            r.resolve("slave.master", &mut args.connection.master, |f| {
                f.slave.master.clone()
            });
            r.resolve("slave.token", &mut args.connection.token, |f| {
                f.slave.token.clone().map(Some)
            });
            r.resolve("slave.slots", &mut args.slots, |f| f.slave.slots.map(Some));
            r.resolve("slave.name", &mut args.name, |f| {
                f.slave.name.clone().map(Some)
            });
            r.resolve("slave.mode", &mut args.mode, |f| f.slave.mode);
        }
        Command::Submit(args) => r.client(&mut args.connection),
        Command::Status(args) => r.client(&mut args.connection),
        Command::Results(args) => r.client(&mut args.connection),
        Command::Cancel(args) => r.client(&mut args.connection),
        Command::Log(args) => r.client(&mut args.connection),
        Command::Compare(args) => r.client(&mut args.connection),
        Command::Run(args) => {
            r.recipes_dir(&mut args.recipes);
            r.libvirt(&mut args.libvirt);
            r.resolve("run.mode", &mut args.mode, |f| f.run.mode);
        }
        Command::Bench(args) => {
            r.recipes_dir(&mut args.recipes);
            r.libvirt(&mut args.libvirt);
        }
        Command::Doctor(args) => r.libvirt(&mut args.libvirt),
        Command::Recipes(
            RecipesCommand::List { recipes } | RecipesCommand::Show { recipes, .. },
        )
        | Command::Image(crate::cli::ImageCommand::Build { recipes, .. }) => r.recipes_dir(recipes),
        // Commands without configurable settings (and any added later until they get some).
        _ => {}
    }
    resolver.settings
}

/// Resolves the settings of one (sub)command.
struct Resolver<'a> {
    /// The matches of the innermost subcommand.
    matches: &'a ArgMatches,
    /// Its definition: flag and variable names for [`Source`].
    definition: &'a clap::Command,
    file: Option<&'a LoadedConfig>,
    settings: Vec<Setting>,
}

impl Resolver<'_> {
    /// Resolves the setting `key`, whose argument id is its last component (the field name in
    /// `cli.rs`). `from_file` picks the file's value; an `Option` field takes `Some` of it.
    fn resolve<T: Shown>(
        &mut self,
        key: &'static str,
        value: &mut T,
        from_file: impl FnOnce(&ConfigFile) -> Option<T>,
    ) {
        let id = key.rsplit('.').next().unwrap_or(key);
        let argument = self.definition.get_arguments().find(|a| a.get_id() == id);
        let source = match self.matches.value_source(id) {
            Some(ValueSource::CommandLine) => Source::Flag(
                argument
                    .and_then(|a| a.get_long())
                    .unwrap_or(id)
                    .to_string(),
            ),
            Some(ValueSource::EnvVariable) => Source::Env(
                argument
                    .and_then(|a| a.get_env())
                    .map(|v| v.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
            _ => match self.file.and_then(|f| from_file(&f.file).map(|v| (f, v))) {
                Some((file, from_file)) => {
                    *value = from_file;
                    Source::File(file.path.clone())
                }
                None => Source::Default,
            },
        };
        self.settings.push(Setting {
            key,
            value: value.shown(key),
            source,
        });
    }

    /// The top-level `recipes_dir`, shared by every command that reads recipes.
    fn recipes_dir(&mut self, recipes: &mut RecipeDirArg) {
        self.resolve("recipes_dir", &mut recipes.recipes_dir, |f| {
            f.recipes_dir.clone()
        });
    }

    /// The top-level `libvirt_uri`, shared by run, slave, bench and doctor.
    fn libvirt(&mut self, libvirt: &mut LibvirtArg) {
        self.resolve("libvirt_uri", &mut libvirt.libvirt_uri, |f| {
            f.libvirt_uri.clone()
        });
    }

    /// The `[client]` settings shared by submit, status, results and cancel.
    fn client(&mut self, connection: &mut MasterConnection) {
        self.resolve("client.master", &mut connection.master, |f| {
            f.client.master.clone()
        });
        self.resolve("client.token", &mut connection.token, |f| {
            f.client.token.clone().map(Some)
        });
    }
}

/// How a setting's value is shown by `pyti config show`.
trait Shown {
    fn shown(&self, key: &str) -> String;
}

macro_rules! shown_as_display {
    ($($t:ty),*) => {$(
        impl Shown for $t {
            fn shown(&self, _key: &str) -> String {
                self.to_string()
            }
        }
    )*};
}
shown_as_display!(String, u32, u64, std::net::SocketAddr);

impl Shown for PathBuf {
    fn shown(&self, _key: &str) -> String {
        self.display().to_string()
    }
}

impl Shown for crate::cli::SlotMode {
    fn shown(&self, _key: &str) -> String {
        format!("{self:?}").to_lowercase()
    }
}

impl Shown for Option<usize> {
    fn shown(&self, _key: &str) -> String {
        match self {
            Some(slots) => slots.to_string(),
            None => format!(
                "{} (one per two host cores)",
                pyti_slave::daemon::SlaveConfig::default_slots()
            ),
        }
    }
}

/// Optional strings: tokens are masked; an unset database or slave name shows what is used.
impl Shown for Option<String> {
    fn shown(&self, key: &str) -> String {
        let id = key.rsplit('.').next().unwrap_or(key);
        match (id, self) {
            ("token", Some(_)) => "******** (hidden)".to_string(),
            ("token", None) => "(none)".to_string(),
            (_, Some(value)) => value.clone(),
            ("database", None) => master::default_database_path().display().to_string(),
            ("name", None) => format!("{} (the host name)", slave::host_name()),
            (_, None) => "(none)".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use clap::FromArgMatches;
    use std::path::Path;

    const FILE: &str = r#"
recipes_dir = "/file/recipes"
libvirt_uri = "qemu:///file"
[master]
listen = "127.0.0.1:7001"
database = "/file/master.sqlite"
lease_secs = 30
max_attempts = 7
[slave]
master = "http://file-slave:1"
token = "file-slave-secret"
slots = 3
name = "file-name"
mode = "cold"
[client]
master = "http://file-client:1"
token = "file-client-secret"
[run]
mode = "cold"
"#;

    /// Parses `pyti ARGS` and applies the test file; env vars are not set by these tests.
    fn resolved(args: &[&str]) -> (Command, Vec<Setting>) {
        let loaded = LoadedConfig {
            path: PathBuf::from("/file.toml"),
            file: config::parse(Path::new("/file.toml"), FILE).unwrap(),
        };
        let matches = Cli::command()
            .try_get_matches_from(std::iter::once("pyti").chain(args.iter().copied()))
            .unwrap();
        let mut cli = Cli::from_arg_matches(&matches).unwrap();
        let settings = apply(&mut cli.command, &matches, Some(&loaded));
        (cli.command, settings)
    }

    fn source_of(settings: &[Setting], key: &str) -> Source {
        settings
            .iter()
            .find(|s| s.key == key)
            .unwrap_or_else(|| panic!("no {key} in {settings:?}"))
            .source
            .clone()
    }

    fn env_is_clean() -> bool {
        std::env::vars().all(|(name, _)| !name.starts_with("PYTI_") || name == "PYTI_LOG")
    }

    #[test]
    fn the_file_fills_what_no_flag_gave_and_a_flag_wins_over_the_file() {
        if !env_is_clean() {
            eprintln!("skipped: PYTI_* variables are set in this environment");
            return;
        }
        let (command, settings) = resolved(&["master", "--lease-secs", "50"]);
        let Command::Master(args) = command else {
            unreachable!()
        };
        assert_eq!(args.serve.lease_secs, 50);
        assert_eq!(
            source_of(&settings, "master.lease_secs"),
            Source::Flag("lease-secs".into())
        );
        assert_eq!(args.serve.max_attempts, 7);
        assert_eq!(args.serve.listen, "127.0.0.1:7001".parse().unwrap());
        assert_eq!(args.serve.database.as_deref(), Some("/file/master.sqlite"));
        assert_eq!(args.serve.recipes.recipes_dir, Path::new("/file/recipes"));
        assert_eq!(
            source_of(&settings, "master.max_attempts"),
            Source::File("/file.toml".into())
        );
    }

    #[test]
    fn every_command_takes_its_own_section() {
        if !env_is_clean() {
            eprintln!("skipped: PYTI_* variables are set in this environment");
            return;
        }
        let (Command::Slave(slave), settings) = resolved(&["slave", "--slots", "1"]) else {
            unreachable!()
        };
        assert_eq!(slave.connection.master, "http://file-slave:1");
        assert_eq!(slave.connection.token.as_deref(), Some("file-slave-secret"));
        assert_eq!(slave.slots, Some(1));
        assert_eq!(slave.name.as_deref(), Some("file-name"));
        assert_eq!(slave.mode, crate::cli::SlotMode::Cold);
        assert_eq!(slave.libvirt.libvirt_uri, "qemu:///file");
        let token = settings.iter().find(|s| s.key == "slave.token").unwrap();
        assert!(!token.value.contains("secret"), "{token:?}");

        let (Command::Status(status), _) = resolved(&["status"]) else {
            unreachable!()
        };
        assert_eq!(status.connection.master, "http://file-client:1");
        assert_eq!(
            status.connection.token.as_deref(),
            Some("file-client-secret")
        );

        let (Command::Run(run), _) = resolved(&["run", "six==1.16.0"]) else {
            unreachable!()
        };
        assert_eq!(run.mode, crate::cli::SlotMode::Cold);
        assert_eq!(run.recipes.recipes_dir, Path::new("/file/recipes"));

        let (Command::Master(master), settings) =
            resolved(&["master", "token", "add", "ci", "--role", "reader"])
        else {
            unreachable!()
        };
        let Some(MasterCommand::Token(TokenCommand::Add { database, .. })) = master.command else {
            unreachable!()
        };
        assert_eq!(database.as_deref(), Some("/file/master.sqlite"));
        assert_eq!(settings.len(), 1);

        let (Command::Doctor(doctor), _) = resolved(&["doctor"]) else {
            unreachable!()
        };
        assert_eq!(doctor.libvirt.libvirt_uri, "qemu:///file");
        for args in [
            &["recipes", "list"][..],
            &["recipes", "show", "x"],
            &["image", "build", "x"],
        ] {
            let (_, settings) = resolved(args);
            assert_eq!(
                source_of(&settings, "recipes_dir"),
                Source::File("/file.toml".into()),
                "{args:?}"
            );
        }
        let (_, settings) = resolved(&["recipes", "check", "x.toml"]);
        assert!(settings.is_empty());
    }

    #[test]
    fn without_a_file_the_defaults_stay() {
        if !env_is_clean() {
            eprintln!("skipped: PYTI_* variables are set in this environment");
            return;
        }
        let matches = Cli::command()
            .try_get_matches_from(["pyti", "master"])
            .unwrap();
        let mut cli = Cli::from_arg_matches(&matches).unwrap();
        let settings = apply(&mut cli.command, &matches, None);
        assert!(settings.iter().all(|s| s.source == Source::Default));
        let Command::Master(args) = cli.command else {
            unreachable!()
        };
        assert_eq!(
            args.serve.lease_secs,
            pyti_master::config::DEFAULT_LEASE_SECS
        );
    }
}
