//! The command-line interface: every subcommand, its options and its help text.

use clap::{Args, Parser, Subcommand, ValueEnum};
use pyti_wire::job::{COMPARE_DEFAULT_VERSIONS, COMPARE_MAX_VERSIONS};
use serde::Deserialize;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;

/// `--lease-secs`: at least 4 s, so that the quarter-lease heartbeat is a whole second; at most
/// a day, past which a dead slave's task would wait unreasonably long.
pub const LEASE_SECS_RANGE: RangeInclusive<u64> = 4..=86_400;
/// `--max-attempts`: a task is tried at least once; more than 100 attempts hides a broken host.
pub const MAX_ATTEMPTS_RANGE: RangeInclusive<u32> = 1..=100;

/// pyti tests Python packages in disposable virtual machines.
///
/// A master turns each submitted job (a PyPI `name==version`, a local sdist/wheel, or a URL) into
/// one task per recipe and queues it durably; slaves run each task in a throw-away VM (libvirt +
/// QEMU), inject the package and its dependencies through a separate I/O disk (libguestfs), and
/// report per-step raw data (exit codes, bounded output, times, memory) back to the master.
/// Recipes (`recipes/*.toml`) say which guest to build and which steps to run.
///
/// Settings come from, in this order: a command-line flag, its `PYTI_*` environment variable,
/// the config file (`--config`, else $XDG_CONFIG_HOME/pyti/config.toml), the built-in default.
/// `pyti config show` prints the effective settings and where each one came from.
#[derive(Debug, Parser)]
#[command(name = "pyti", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace); PYTI_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Config file (TOML); it must exist. Without it, $XDG_CONFIG_HOME/pyti/config.toml
    /// (~/.config/pyti/config.toml) is read if present.
    #[arg(long, global = true, env = "PYTI_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one job end to end on this machine: master and slave in one process.
    ///
    /// Starts an embedded master (SQLite in the user's data directory) and a slave, builds the
    /// guest image if needed, runs the package against the recipe and prints a results table.
    /// Exit code: 0 all tasks passed, 1 any task failed, 2 infrastructure error.
    Run(RunArgs),
    /// Serve the master: the job queue and the JSON-RPC API (HTTP + WebSocket), or manage tokens.
    Master(MasterArgs),
    /// Serve a slave: claim tasks from a master and run them in VM slots.
    Slave(SlaveArgs),
    /// Submit a job to a master.
    Submit(SubmitArgs),
    /// Show jobs on a master (all recent ones, or one job and its tasks).
    Status(StatusArgs),
    /// Show the results of a job: per task and per step.
    Results(ResultsArgs),
    /// Cancel a job: queued tasks are cancelled, running ones are stopped by their slave.
    Cancel(CancelArgs),
    /// Show a task's log: every attempt's events, oldest first (leased, the slave's progress
    /// through the task, the result or why the attempt ended).
    Log(LogArgs),
    /// Compare a package's results across its versions and recipes: which versions regressed.
    ///
    /// One row per recipe, one column per version (in the order they were first submitted),
    /// each cell the latest verdict. Exit code: 0 no regression, 1 a regression: a version
    /// that did not pass on a recipe where the version before it passed.
    Compare(CompareArgs),
    /// List, validate and show recipe files.
    #[command(subcommand)]
    Recipes(RecipesCommand),
    /// Build guest images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Check this host: libvirt, virtlogd, QEMU, KVM or TCG, libguestfs, nbdkit, disk space.
    ///
    /// Prints a table with what to do for each failed check; exits 1 if any check failed.
    Doctor(DoctorArgs),
    /// Show the effective configuration: each setting, its value and where it came from.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Measure the task cycle: the same package through warm, cold and naive slots.
    ///
    /// Runs TASKS tasks of the package per mode on this host (no master) and prints the median
    /// of every phase (acquire, inject, boot or attach, guest run, steps, detach and revert,
    /// extract), the orchestration overhead (total minus the steps' own time) and each mode's
    /// overhead against warm. The naive cycle boots a clean VM per task and launches a fresh
    /// libguestfs appliance for the inject and for the extract. Every task must pass.
    Bench(BenchArgs),
}

impl Command {
    /// Long-running services log at info level by default; one-shot commands stay quiet.
    pub fn is_daemon(&self) -> bool {
        matches!(self, Command::Master(m) if m.command.is_none())
            || matches!(self, Command::Slave(_))
    }
}

/// Where recipes are looked up by name.
#[derive(Debug, Args, Clone)]
pub struct RecipeDirArg {
    /// Directory of recipe files (`NAME.toml`). Config file: `recipes_dir`.
    #[arg(long, env = "PYTI_RECIPES_DIR", default_value = "recipes")]
    pub recipes_dir: PathBuf,
}

/// Which libvirt to drive.
#[derive(Debug, Args, Clone)]
pub struct LibvirtArg {
    /// libvirt connection URI (e.g. qemu:///system, or qemu:///embed?root=DIR for a private,
    /// daemon-less QEMU driver). Config file: `libvirt_uri`.
    #[arg(long, env = "PYTI_LIBVIRT_URI", default_value = "qemu:///system")]
    pub libvirt_uri: String,
}

/// How a slot restores a clean guest between tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotMode {
    /// Boot once, snapshot the running guest after `prepare`, revert into it per task (fast).
    Warm,
    /// Boot a clean, shut-off disk for every task (slower, no memory state carried over).
    Cold,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The package: `name==version` from PyPI, a local sdist/wheel path, or an http(s) URL.
    pub package: String,
    /// Recipe name (in --recipes-dir) or path to a recipe file; defaults to the host's
    /// distribution (`debian-12` here).
    #[arg(long)]
    pub recipe: Option<String>,
    #[command(flatten)]
    pub recipes: RecipeDirArg,
    #[command(flatten)]
    pub libvirt: LibvirtArg,
    /// How slots restore a clean guest between tasks. Config file: `[run] mode`.
    #[arg(long, value_enum, default_value = "warm")]
    pub mode: SlotMode,
    /// Print the machine-readable result (JSON) on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also write the results as JUnit XML to this file.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The package: `name==version` from PyPI, a local sdist/wheel path, or an http(s) URL.
    #[arg(default_value = "six==1.16.0")]
    pub package: String,
    /// Recipe name (in --recipes-dir) or path to a recipe file.
    #[arg(long, default_value = "debian-12")]
    pub recipe: String,
    #[command(flatten)]
    pub recipes: RecipeDirArg,
    #[command(flatten)]
    pub libvirt: LibvirtArg,
    /// Tasks per mode.
    #[arg(long, default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=pyti_slave::bench::MAX_BENCH_TASKS as i64))]
    pub tasks: u32,
    /// Tasks of the naive cycle (about 40 s each under TCG; default: --tasks).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=pyti_slave::bench::MAX_BENCH_TASKS as i64))]
    pub naive_tasks: Option<u32>,
    /// Leave out the naive cycle.
    #[arg(long, conflicts_with = "naive_tasks")]
    pub skip_naive: bool,
    /// Print every task's timings as JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct MasterArgs {
    #[command(subcommand)]
    pub command: Option<MasterCommand>,
    #[command(flatten)]
    pub serve: MasterServeArgs,
}

#[derive(Debug, Args)]
pub struct MasterServeArgs {
    /// Address to serve the JSON-RPC API (HTTP + WebSocket), /health and /metrics on.
    /// Config file: `[master] listen`.
    #[arg(long, env = "PYTI_LISTEN", default_value = pyti_master::config::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Database: a SQLite file path / `sqlite://` URL (default: master.sqlite in the user's data
    /// directory), or a `postgres://` URL to share the queue between several masters.
    /// Config file: `[master] database`.
    #[arg(long, env = "PYTI_DATABASE")]
    pub database: Option<String>,
    #[command(flatten)]
    pub recipes: RecipeDirArg,
    /// Seconds a task's lease lasts after its slave's last heartbeat; a slave silent for longer
    /// loses the task, which is requeued (attempt + 1). Slaves heartbeat every quarter of this,
    /// at most 10 s apart: a cancelled job's running tasks stop within a heartbeat.
    /// Config file: `[master] lease_secs`.
    #[arg(long, env = "PYTI_LEASE_SECS", default_value_t = pyti_master::config::DEFAULT_LEASE_SECS,
          value_parser = clap::value_parser!(u64).range(LEASE_SECS_RANGE))]
    pub lease_secs: u64,
    /// Attempts per task before an infrastructure failure becomes the verdict `tmpfail`.
    /// Config file: `[master] max_attempts`.
    #[arg(long, env = "PYTI_MAX_ATTEMPTS", default_value_t = pyti_master::config::DEFAULT_MAX_ATTEMPTS,
          value_parser = clap::value_parser!(u32)
              .range(i64::from(*MAX_ATTEMPTS_RANGE.start())..=i64::from(*MAX_ATTEMPTS_RANGE.end())))]
    pub max_attempts: u32,
}

#[derive(Debug, Subcommand)]
pub enum MasterCommand {
    /// Manage API tokens (stored hashed in the master's database).
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it once (it cannot be shown again).
    Add {
        /// A name to recognise the token by (e.g. the slave's host name).
        name: String,
        /// What the token may do.
        #[arg(long, value_enum)]
        role: TokenRole,
        /// The master's database (as for `pyti master`). Config file: `[master] database`.
        #[arg(long, env = "PYTI_DATABASE")]
        database: Option<String>,
    },
    /// List the active tokens (names, roles, creation times; never the secrets).
    List {
        /// Also list revoked tokens, with when they were revoked (`pyti run` revokes the token
        /// of its embedded master and slave when it ends, so one is left per run).
        #[arg(long)]
        all: bool,
        #[arg(long, env = "PYTI_DATABASE")]
        database: Option<String>,
    },
    /// Revoke a token by name.
    Revoke {
        name: String,
        #[arg(long, env = "PYTI_DATABASE")]
        database: Option<String>,
    },
}

/// What a token allows.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TokenRole {
    /// Register, claim tasks and report results.
    Slave,
    /// Submit and cancel jobs (and read).
    Submitter,
    /// Read jobs, results and events.
    Reader,
    /// Everything, including token management over the API.
    Admin,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// The task id (`pyti status JOB` lists a job's tasks).
    pub task: String,
    /// Print the log as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connection: MasterConnection,
}

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The package's name (as on PyPI: case, `-`, `_` and `.` do not matter).
    pub package: String,
    /// Only these recipes (repeat or comma-separate; default: every recipe it ran on).
    #[arg(long = "recipe", value_delimiter = ',')]
    pub recipes: Vec<String>,
    /// Only the newest this many versions (by first submission).
    #[arg(long, default_value_t = COMPARE_DEFAULT_VERSIONS,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(COMPARE_MAX_VERSIONS)))]
    pub limit: u32,
    /// Print the comparison as JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connection: MasterConnection,
}

/// How to reach a master.
#[derive(Debug, Args, Clone)]
pub struct MasterConnection {
    /// The master's URL (http://HOST:PORT). Config file: `master` in `[slave]` or `[client]`.
    #[arg(long, env = "PYTI_MASTER", default_value = pyti_master::config::DEFAULT_MASTER_URL)]
    pub master: String,
    /// Bearer token (from `pyti master token add`). Config file: `token` in `[slave]` or
    /// `[client]` (keep that file `chmod 600`).
    #[arg(long, env = "PYTI_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Args)]
pub struct SlaveArgs {
    #[command(flatten)]
    pub connection: MasterConnection,
    /// VM slots run concurrently (default: one per two host cores, at least one).
    /// Config file: `[slave] slots`.
    #[arg(long, env = "PYTI_SLAVE_SLOTS", value_parser = at_least_one)]
    pub slots: Option<usize>,
    /// A name for this slave (default: the host name); VM domains are named pyti-NAME-SLOT.
    /// Config file: `[slave] name`.
    #[arg(long, env = "PYTI_SLAVE_NAME")]
    pub name: Option<String>,
    #[command(flatten)]
    pub recipes: RecipeDirArg,
    #[command(flatten)]
    pub libvirt: LibvirtArg,
    /// How slots restore a clean guest between tasks. Config file: `[slave] mode`.
    #[arg(long, env = "PYTI_SLAVE_MODE", value_enum, default_value = "warm")]
    pub mode: SlotMode,
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The package: `name==version`, a local sdist/wheel path, or an http(s) URL.
    pub package: String,
    /// Recipes to run it against (repeat or comma-separate).
    #[arg(long = "recipe", required = true, value_delimiter = ',')]
    pub recipes: Vec<String>,
    /// 1 (lowest) to 10 (highest).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u8).range(1..=10))]
    pub priority: u8,
    /// A label saying why the job was submitted (e.g. "nightly", "release 2.0").
    #[arg(long)]
    pub label: Option<String>,
    /// Wait until the job is done, showing its tasks' state changes as they happen, then print
    /// its results; the exit code is then that of `pyti results` (0 all passed, 1 any failed,
    /// 2 an infrastructure error).
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub connection: MasterConnection,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// A job id; without it, the most recent jobs (filtered by the options below).
    pub job: Option<String>,
    /// Only jobs of this package.
    #[arg(long, conflicts_with = "job")]
    pub package: Option<String>,
    /// Only jobs with a task for this recipe.
    #[arg(long, conflicts_with = "job")]
    pub recipe: Option<String>,
    /// Only jobs with a task in this state (queued, leased, running, finished, cancelled) or
    /// with this verdict (pass, fail, error, timeout, tmpfail).
    #[arg(long, conflicts_with = "job")]
    pub status: Option<String>,
    /// Only jobs of this submitter (a token's name).
    #[arg(long, conflicts_with = "job")]
    pub submitter: Option<String>,
    /// Only jobs created since then: a date (2026-11-20), a UTC time (2026-11-20 14:00) or an
    /// age (30m, 12h, 7d).
    #[arg(long, conflicts_with = "job")]
    pub since: Option<String>,
    /// Only jobs older than this job (the next page: the command prints it when there are more).
    #[arg(long, conflicts_with = "job")]
    pub before: Option<String>,
    /// At most this many jobs, newest first.
    #[arg(long, default_value_t = 20, conflicts_with = "job",
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connection: MasterConnection,
}

#[derive(Debug, Args)]
pub struct ResultsArgs {
    /// The job id.
    pub job: String,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub connection: MasterConnection,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The job id.
    pub job: String,
    #[command(flatten)]
    pub connection: MasterConnection,
}

#[derive(Debug, Subcommand)]
pub enum RecipesCommand {
    /// List the recipes in the recipes directory.
    List {
        #[command(flatten)]
        recipes: RecipeDirArg,
    },
    /// Validate recipe files; every mistake is printed as `file:line:col: message`.
    ///
    /// Exits 1 if any file has a mistake.
    Check {
        /// Recipe files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Show one recipe: guest, VM resources, interpreter and steps.
    Show {
        /// A recipe name (in --recipes-dir) or a path to a recipe file.
        recipe: String,
        #[command(flatten)]
        recipes: RecipeDirArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build (or find in the cache) the guest image for a recipe, from distribution packages only.
    ///
    /// The image (kernel, initrd, qcow2 system disk with the agent baked in) is cached per user,
    /// keyed by the recipe's guest and prepare sections and the agent binary: a rebuild with
    /// nothing changed is a cache hit.
    Build {
        /// A recipe name (in --recipes-dir) or a path to a recipe file.
        recipe: String,
        #[command(flatten)]
        recipes: RecipeDirArg,
        /// The in-guest agent binary (default: `pyti-agent` beside this executable).
        #[arg(long, env = "PYTI_AGENT")]
        agent: Option<PathBuf>,
        /// Image cache directory (default: $XDG_CACHE_HOME/pyti/images).
        #[arg(long, env = "PYTI_IMAGE_CACHE")]
        cache: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub libvirt: LibvirtArg,
    /// Skip launching a libguestfs appliance (the slowest check, ~10 s under TCG).
    #[arg(long)]
    pub skip_appliance: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print every setting, its effective value and its source: flag, environment variable,
    /// config file or default (tokens are never printed).
    ///
    /// With a command line after `show` (e.g. `pyti config show slave --slots 2`), print what
    /// that command would use; with a section name (master, slave, client, run), that section;
    /// without either, every section.
    Show {
        /// A pyti command line without the leading `pyti`, or a section name.
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "COMMAND"
        )]
        command: Vec<String>,
    },
}

/// `--slots`: a slave with no slot would claim nothing.
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_string()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}
