//! The configuration file: settings a user would otherwise repeat as flags or `PYTI_*` variables.
//!
//! Found at `--config FILE` / `PYTI_CONFIG` (which must exist), else at
//! `$XDG_CONFIG_HOME/pyti/config.toml` (optional). Its shape mirrors the commands:
//!
//! ```toml
//! recipes_dir = "/srv/pyti/recipes"   # every command that reads recipes
//! libvirt_uri = "qemu:///system"      # run, slave, doctor
//!
//! [master]                            # pyti master (and `master token`: database)
//! listen = "0.0.0.0:7420"
//! database = "postgres://pyti:pyti@db/pyti"
//! lease_secs = 120
//! max_attempts = 3
//!
//! [slave]                             # pyti slave
//! master = "http://master:7420"
//! token = "SECRET"
//! slots = 2
//! name = "builder-1"
//! mode = "warm"
//!
//! [client]                            # pyti submit | status | results | cancel | log | compare
//! master = "http://master:7420"
//! token = "SECRET"
//!
//! [run]                               # pyti run
//! mode = "warm"
//! ```
//!
//! Values are checked as strictly as the flags they stand for; which one wins when a value is
//! given several ways is decided in [`crate::settings`].

use crate::cli::{SlotMode, LEASE_SECS_RANGE, MAX_ATTEMPTS_RANGE};
use serde::{Deserialize, Deserializer};
use std::fmt::Display;
use std::io::Read;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

/// Largest config file read: a config holds a few dozen lines; anything bigger is a wrong path.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Why the config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--config` / `PYTI_CONFIG` named a file that is not there.
    #[error(
        "config file {} does not exist; create it, or fix --config / PYTI_CONFIG",
        .0.display()
    )]
    Missing(PathBuf),
    /// The file exists but could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Larger than [`MAX_CONFIG_BYTES`].
    #[error(
        "config file {} is larger than {MAX_CONFIG_BYTES} bytes; is --config pointing at the right file?",
        .0.display()
    )]
    TooLarge(PathBuf),
    /// Not TOML, an unknown key, or a value its flag would refuse too.
    #[error(
        "{}:{line}:{column}: {message}\n(fix or remove this key; README.md § Configuration lists the keys)",
        path.display()
    )]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

/// The file's contents: every key optional, unknown keys refused (a typo must not be ignored).
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Directory of recipe files, for every command that reads recipes.
    pub recipes_dir: Option<PathBuf>,
    /// libvirt connection URI, for `run`, `slave` and `doctor`.
    pub libvirt_uri: Option<String>,
    #[serde(default)]
    pub master: MasterSection,
    #[serde(default)]
    pub slave: SlaveSection,
    #[serde(default)]
    pub client: ClientSection,
    #[serde(default)]
    pub run: RunSection,
}

/// `[master]`: `pyti master` (and the database of `pyti master token`).
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasterSection {
    #[serde(default, deserialize_with = "listen")]
    pub listen: Option<SocketAddr>,
    pub database: Option<String>,
    #[serde(default, deserialize_with = "lease_secs")]
    pub lease_secs: Option<u64>,
    #[serde(default, deserialize_with = "max_attempts")]
    pub max_attempts: Option<u32>,
}

/// `[slave]`: `pyti slave`.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlaveSection {
    pub master: Option<String>,
    pub token: Option<String>,
    #[serde(default, deserialize_with = "slots")]
    pub slots: Option<usize>,
    pub name: Option<String>,
    pub mode: Option<SlotMode>,
}

/// `[client]`: the commands that talk to a master (`submit`, `status`, `results`, `cancel`,
/// `log`, `compare`).
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSection {
    pub master: Option<String>,
    pub token: Option<String>,
}

/// `[run]`: `pyti run`.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    pub mode: Option<SlotMode>,
}

/// A config file that was found and parsed.
#[derive(Debug)]
pub struct LoadedConfig {
    pub path: PathBuf,
    pub file: ConfigFile,
}

/// Where the config file is looked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Location {
    pub path: PathBuf,
    /// Given by `--config` / `PYTI_CONFIG`: it must exist. The default location may be absent.
    pub required: bool,
}

/// The file to read: the one given, else `$XDG_CONFIG_HOME/pyti/config.toml` (None when the
/// user has no config directory at all).
pub fn locate(given: Option<PathBuf>) -> Option<Location> {
    match given {
        Some(path) => Some(Location {
            path,
            required: true,
        }),
        None => dirs::config_dir().map(|dir| Location {
            path: dir.join("pyti").join("config.toml"),
            required: false,
        }),
    }
}

/// Reads and checks the file; `Ok(None)` when the default location holds no file.
pub fn load(location: &Location) -> Result<Option<LoadedConfig>, ConfigError> {
    let path = &location.path;
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return if location.required {
                Err(ConfigError::Missing(path.clone()))
            } else {
                Ok(None)
            };
        }
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.clone(),
                source,
            })
        }
    };
    let read_error = |source| ConfigError::Read {
        path: path.clone(),
        source,
    };
    let mode = file.metadata().map_err(read_error)?.permissions();
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_error)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge(path.clone()));
    }
    let parsed = parse(path, &text)?;
    if parsed.has_secret() && exposed_to_others(&mode) {
        tracing::warn!(
            "config file {} holds a token but other users can read it; run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    Ok(Some(LoadedConfig {
        path: path.clone(),
        file: parsed,
    }))
}

/// Parses the text of the file at `path` (named in errors, with line and column).
pub fn parse(path: &Path, text: &str) -> Result<ConfigFile, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let (line, column) = e
            .span()
            .map(|span| line_and_column(text, span.start))
            .unwrap_or((1, 1));
        let message = e.message().trim();
        let message = match key_at(text, line) {
            Some(key)
                if !message.contains(&format!("`{}`", key.rsplit('.').next().unwrap_or(&key))) =>
            {
                format!("`{key}`: {message}")
            }
            _ => message.to_string(),
        };
        ConfigError::Invalid {
            path: path.to_path_buf(),
            line,
            column,
            message,
        }
    })
}

impl ConfigFile {
    /// Whether the file holds a secret, so that who can read it matters.
    pub fn has_secret(&self) -> bool {
        self.slave.token.is_some() || self.client.token.is_some()
    }
}

/// Group or others may read the file (like ssh, refuse to stay silent about a readable secret).
fn exposed_to_others(permissions: &std::fs::Permissions) -> bool {
    use std::os::unix::fs::PermissionsExt;
    permissions.mode() & 0o077 != 0
}

/// The key set on `line` (1-based) with its section (`slave.slots`), so that an error about a
/// value names its key even when the value's own message does not (`invalid type: string`).
fn key_at(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let (key, _) = lines.get(line.checked_sub(1)?)?.split_once('=')?;
    let key = key.trim();
    if key.is_empty()
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
    {
        return None;
    }
    let section = lines[..line - 1].iter().rev().find_map(|l| {
        l.trim()
            .strip_prefix('[')?
            .split_once(']')
            .map(|(s, _)| s.trim())
    });
    Some(match section {
        Some(section) => format!("{section}.{key}"),
        None => key.to_string(),
    })
}

/// 1-based line and column (in characters) of a byte offset.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

/// An integer key checked against the same range as its flag.
fn in_range<'de, D, T>(
    deserializer: D,
    key: &str,
    range: RangeInclusive<T>,
) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + PartialOrd + Display,
{
    let value = T::deserialize(deserializer)?;
    if range.contains(&value) {
        Ok(Some(value))
    } else {
        Err(serde::de::Error::custom(format!(
            "`{key}` must be between {} and {}, not {value}",
            range.start(),
            range.end()
        )))
    }
}

fn lease_secs<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    in_range(deserializer, "lease_secs", LEASE_SECS_RANGE)
}

fn max_attempts<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u32>, D::Error> {
    in_range(deserializer, "max_attempts", MAX_ATTEMPTS_RANGE)
}

fn slots<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<usize>, D::Error> {
    in_range(deserializer, "slots", 1..=usize::MAX)
}

fn listen<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map(Some).map_err(|e| {
        serde::de::Error::custom(format!(
            "`listen` must be an address and port like \"0.0.0.0:7420\", not {text:?} ({e})"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
recipes_dir = "/srv/pyti/recipes"
libvirt_uri = "qemu:///system"

[master]
listen = "0.0.0.0:7420"
database = "postgres://pyti:pyti@db/pyti"
lease_secs = 120
max_attempts = 3

[slave]
master = "http://master:7420"
token = "SECRET"
slots = 2
name = "builder-1"
mode = "cold"

[client]
master = "http://master:7420"
token = "SECRET"

[run]
mode = "warm"
"#;

    fn parse_err(text: &str) -> (usize, usize, String) {
        match parse(Path::new("/etc/x.toml"), text) {
            Err(ConfigError::Invalid {
                line,
                column,
                message,
                ..
            }) => (line, column, message),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn the_documented_example_parses_into_every_section() {
        let config = parse(Path::new("x.toml"), EXAMPLE).unwrap();
        assert_eq!(config.recipes_dir, Some(PathBuf::from("/srv/pyti/recipes")));
        assert_eq!(config.master.listen, Some("0.0.0.0:7420".parse().unwrap()));
        assert_eq!(config.master.lease_secs, Some(120));
        assert_eq!(config.master.max_attempts, Some(3));
        assert_eq!(config.slave.slots, Some(2));
        assert!(matches!(config.slave.mode, Some(SlotMode::Cold)));
        assert!(matches!(config.run.mode, Some(SlotMode::Warm)));
        assert_eq!(config.client.token.as_deref(), Some("SECRET"));
        assert!(config.has_secret());
    }

    #[test]
    fn the_readme_example_is_a_valid_config_file() {
        let readme = include_str!("../README.md");
        let section = &readme[readme.find("## Configuration").expect("README section")..];
        let start = section.find("```toml\n").expect("a toml block") + "```toml\n".len();
        let block = &section[start..start + section[start..].find("```").unwrap()];
        let config = parse(Path::new("README.md"), block).unwrap();
        assert!(config.master.listen.is_some() && config.slave.slots.is_some());
        assert!(config.client.token.is_some() && config.run.mode.is_some());
    }

    #[test]
    fn an_empty_file_sets_nothing() {
        let config = parse(Path::new("x.toml"), "").unwrap();
        assert_eq!(config, ConfigFile::default());
        assert!(!config.has_secret());
    }

    #[test]
    fn an_unknown_key_is_refused_with_its_position_and_the_known_keys() {
        let (line, column, message) =
            parse_err("[master]\nlisten = \"127.0.0.1:1\"\nlease_sec = 9\n");
        assert_eq!((line, column), (3, 1));
        assert!(
            message.contains("lease_sec") && message.contains("lease_secs"),
            "{message}"
        );
        let (line, _, message) = parse_err("colour = \"red\"\n");
        assert_eq!(line, 1);
        assert!(message.contains("colour"), "{message}");
    }

    #[test]
    fn values_are_checked_like_their_flags() {
        for (text, key) in [
            ("[master]\nlease_secs = 1", "lease_secs"),
            ("[master]\nlease_secs = 86401", "lease_secs"),
            ("[master]\nmax_attempts = 0", "max_attempts"),
            ("[master]\nmax_attempts = 101", "max_attempts"),
            ("[slave]\nslots = 0", "slots"),
            ("[master]\nlisten = \"localhost\"", "listen"),
        ] {
            let (line, _, message) = parse_err(text);
            assert_eq!(line, 2, "{text}");
            assert!(message.contains(key), "{text}: {message}");
        }
        let (_, _, message) = parse_err("[slave]\nmode = \"hot\"");
        assert!(
            message.contains("warm") && message.contains("cold"),
            "{message}"
        );
        let (_, _, message) = parse_err("[slave]\nslots = \"two\"");
        assert!(
            message.starts_with("`slave.slots`: invalid type"),
            "{message}"
        );
        let (_, _, message) = parse_err("libvirt_uri = 7");
        assert!(
            message.starts_with("`libvirt_uri`: invalid type"),
            "{message}"
        );
    }

    #[test]
    fn the_error_names_the_file_and_says_what_to_do() {
        let error = parse(Path::new("/etc/pyti.toml"), "[slave]\nslots = 0").unwrap_err();
        let text = error.to_string();
        assert!(text.starts_with("/etc/pyti.toml:2:9: "), "{text}");
        assert!(text.contains("README.md § Configuration"), "{text}");
    }

    #[test]
    fn a_given_file_must_exist_but_the_default_one_may_be_absent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.toml");
        let given = Location {
            path: path.clone(),
            required: true,
        };
        let error = load(&given).unwrap_err();
        assert!(matches!(&error, ConfigError::Missing(p) if *p == path));
        assert!(error.to_string().contains(&path.display().to_string()));
        let default = Location {
            path,
            required: false,
        };
        assert!(load(&default).unwrap().is_none());
    }

    #[test]
    fn a_huge_file_is_refused_before_parsing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.toml");
        std::fs::write(&path, "#".repeat(MAX_CONFIG_BYTES as usize + 1)).unwrap();
        let location = Location {
            path,
            required: true,
        };
        assert!(matches!(load(&location), Err(ConfigError::TooLarge(_))));
    }

    #[test]
    fn a_file_readable_by_others_is_noticed() {
        use std::os::unix::fs::PermissionsExt;
        assert!(exposed_to_others(&std::fs::Permissions::from_mode(0o644)));
        assert!(exposed_to_others(&std::fs::Permissions::from_mode(0o640)));
        assert!(!exposed_to_others(&std::fs::Permissions::from_mode(0o600)));
    }

    #[test]
    fn positions_count_characters_not_bytes() {
        assert_eq!(line_and_column("a\nbé = 1", 5), (2, 3));
        assert_eq!(line_and_column("abc", 0), (1, 1));
        assert_eq!(line_and_column("abc", 99), (1, 4));
    }
}
