//! Jobs and tasks as the API shows them: specs, states, verdicts.
//!
//! A *job* is one package × a list of recipes, submitted by someone with a priority. The master
//! splits it into one *task* per recipe; each task walks the state machine
//! `queued → leased → running → finished(verdict)` or `cancelled`, and every attempt at it is kept.
//! These types are plain serde data so every client (CLI, slave, web page) shares them; the rules
//! live in the master (`pyti_master::state` owns the transitions).

use crate::raw_data::RawResult;
use crate::recipe::Recipe;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A job's id, assigned by the master.
pub type JobId = i64;
/// A task's id, assigned by the master; the guest sees it as a string (`GuestTask::task_id`).
pub type TaskId = i64;

/// Lowest and highest job priority; higher runs first.
pub const MIN_PRIORITY: u8 = 1;
pub const MAX_PRIORITY: u8 = 10;
/// Priority of a job that does not say.
pub const DEFAULT_PRIORITY: u8 = 5;
/// Largest uploaded sdist or wheel: a big scientific wheel is ~50 MB, but pyti tests packages, not
/// their binary payloads; 16 MiB keeps one upload inside one RPC (hex doubles it).
pub const MAX_UPLOAD_BYTES: usize = 16 * 1024 * 1024;
/// Recipes one job may name.
pub const MAX_RECIPES_PER_JOB: usize = 64;
/// Length of names (package, submitter, recipe, slave, trigger label).
pub const MAX_NAME_CHARS: usize = 128;
/// Length of a package URL.
pub const MAX_URL_CHARS: usize = 2048;

/// Which package a job tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PackageSpec {
    /// A release on PyPI: `name==version`.
    Pypi { name: String, version: String },
    /// An sdist or wheel uploaded with the job. `content_hex` is the file, hex-encoded (JSON has no
    /// bytes); `sha256` (hex) must match it.
    Upload {
        filename: String,
        sha256: String,
        content_hex: String,
    },
    /// A file the slave downloads (host side; only wheels are ever processed on the host).
    Url {
        url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sha256: Option<String>,
    },
}

impl PackageSpec {
    /// Parses `name==version` (the CLI's form of a PyPI release).
    pub fn pypi(requirement: &str) -> Option<PackageSpec> {
        let (name, version) = requirement.split_once("==")?;
        let (name, version) = (name.trim(), version.trim());
        if name.is_empty() || version.is_empty() {
            return None;
        }
        Some(PackageSpec::Pypi {
            name: name.to_string(),
            version: version.to_string(),
        })
    }

    /// An upload of `content` named `filename`; `sha256_hex` is its SHA-256 (the caller hashes,
    /// so this crate stays free of crypto dependencies).
    pub fn upload(filename: &str, sha256_hex: &str, content: &[u8]) -> PackageSpec {
        PackageSpec::Upload {
            filename: filename.to_string(),
            sha256: sha256_hex.to_ascii_lowercase(),
            content_hex: encode_hex(content),
        }
    }

    /// The package's name and version as far as the spec tells them (used for filters and
    /// comparisons). Uploads are named by their file name (`name-version.tar.gz` or a wheel's
    /// `name-version-…whl`); URLs by their last path segment.
    pub fn name_version(&self) -> (String, Option<String>) {
        match self {
            PackageSpec::Pypi { name, version } => (normalize_name(name), Some(version.clone())),
            PackageSpec::Upload { filename, .. } => split_filename(filename),
            PackageSpec::Url { url, .. } => {
                let last = url.rsplit('/').next().unwrap_or(url);
                let last = last.split(['?', '#']).next().unwrap_or(last);
                split_filename(last)
            }
        }
    }

    /// The same spec without the uploaded bytes (what listings show).
    pub fn without_content(&self) -> PackageSpec {
        match self {
            PackageSpec::Upload {
                filename, sha256, ..
            } => PackageSpec::Upload {
                filename: filename.clone(),
                sha256: sha256.clone(),
                content_hex: String::new(),
            },
            other => other.clone(),
        }
    }
}

impl fmt::Display for PackageSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PackageSpec::Pypi { name, version } => write!(f, "{name}=={version}"),
            PackageSpec::Upload { filename, .. } => write!(f, "upload:{filename}"),
            PackageSpec::Url { url, .. } => write!(f, "{url}"),
        }
    }
}

/// PEP 503 normalisation: lowercase, runs of `-_.` become `-`.
pub fn normalize_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut dash = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            dash = true;
        } else {
            if dash && !out.is_empty() {
                out.push('-');
            }
            dash = false;
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

fn split_filename(filename: &str) -> (String, Option<String>) {
    let stem = [".tar.gz", ".zip", ".whl", ".tar.bz2", ".tgz"]
        .iter()
        .find_map(|ext| filename.strip_suffix(ext))
        .unwrap_or(filename);
    let mut parts = stem.splitn(3, '-');
    let name = parts.next().unwrap_or(stem);
    let version = parts.next().filter(|v| !v.is_empty()).map(str::to_string);
    (normalize_name(name), version)
}

/// Lowercase hex of `bytes`.
pub fn encode_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

/// Decodes hex (either case); `None` on odd length or a non-hex digit.
pub fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    text.as_bytes()
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// What a submitter asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub package: PackageSpec,
    /// Recipe names (file stems in the master's recipes directory); one task each.
    pub recipes: Vec<String>,
    /// Who the job is for (fair share is per submitter). Defaults to the caller's token name;
    /// only an admin may submit on someone else's behalf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitter: Option<String>,
    /// 1–10, higher first.
    #[serde(default = "default_priority")]
    pub priority: u8,
    /// Free-form label saying what triggered the job (`manual`, `nightly`, `pypi-release`…).
    #[serde(default)]
    pub trigger: String,
}

fn default_priority() -> u8 {
    DEFAULT_PRIORITY
}

/// What `submit_job` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitReceipt {
    pub job_id: JobId,
    /// One task per recipe, in the order the recipes were given.
    pub task_ids: Vec<TaskId>,
}

/// What `cancel_job` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelReceipt {
    /// Queued tasks now cancelled.
    pub cancelled: u64,
    /// Leased or running tasks whose slaves are told to stop (at their next heartbeat).
    pub stopping: u64,
}

/// A task's verdict when it finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every step that fails the task succeeded.
    Pass,
    /// A step that fails the task failed (the package's fault).
    Fail,
    /// The result could not be judged (steps missing, a command that could not start).
    Error,
    /// A step that fails the task ran past its timeout.
    Timeout,
    /// Infrastructure failed on every allowed attempt (VM, disk, lost slave); not the package's fault.
    Tmpfail,
}

impl Verdict {
    /// Every verdict, in a stable order.
    pub const ALL: [Verdict; 5] = [
        Verdict::Pass,
        Verdict::Fail,
        Verdict::Error,
        Verdict::Timeout,
        Verdict::Tmpfail,
    ];

    /// The lowercase name used in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Error => "error",
            Verdict::Timeout => "timeout",
            Verdict::Tmpfail => "tmpfail",
        }
    }

    /// Inverse of [`Verdict::as_str`].
    pub fn parse(text: &str) -> Option<Verdict> {
        Verdict::ALL.into_iter().find(|v| v.as_str() == text)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a task is in its life. Only the master's store changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "state", content = "verdict", rename_all = "snake_case")]
pub enum TaskState {
    /// Waiting for a slave.
    Queued,
    /// Handed to a slave under a lease; the slave has not said it started.
    Leased,
    /// The slave reported progress.
    Running,
    /// Done, with a verdict.
    Finished(Verdict),
    /// Cancelled before it finished.
    Cancelled,
}

impl TaskState {
    /// Whether the task will never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, TaskState::Finished(_) | TaskState::Cancelled)
    }

    /// The state's name without the verdict (`finished` for every verdict).
    pub fn name(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Leased => "leased",
            TaskState::Running => "running",
            TaskState::Finished(_) => "finished",
            TaskState::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskState::Finished(v) => write!(f, "finished({v})"),
            other => f.write_str(other.name()),
        }
    }
}

/// One attempt at a task: who ran it and how it ended. Every attempt is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    /// 1-based.
    pub attempt: u32,
    pub slave: String,
    /// Unix milliseconds.
    pub leased_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    /// How the attempt ended (`None` while it runs).
    pub outcome: Option<AttemptOutcome>,
    /// Why (a failing step, an infrastructure error, "lease expired").
    pub reason: Option<String>,
    /// The agent's raw data, when the attempt produced any (omitted in listings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw_result: Option<RawResult>,
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// The attempt produced a verdict (a `tmpfail` one is retried while attempts remain).
    Verdict(Verdict),
    /// The slave stopped heartbeating; the task was requeued or given up.
    LeaseExpired,
    /// The job was cancelled while this attempt ran.
    Cancelled,
}

/// A task as readers see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: TaskId,
    pub job_id: JobId,
    pub recipe: String,
    pub package: PackageSpec,
    pub submitter: String,
    pub priority: u8,
    pub state: TaskState,
    /// The current attempt (1-based).
    pub attempt: u32,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// Every attempt so far, oldest first (`get_task` only; empty in job listings).
    #[serde(default)]
    pub attempts: Vec<Attempt>,
}

/// A job as readers see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    /// The package, without uploaded bytes.
    pub package: PackageSpec,
    pub submitter: String,
    pub priority: u8,
    pub trigger: String,
    pub created_at_ms: i64,
    pub tasks: Vec<Task>,
}

impl Job {
    /// Whether every task is finished or cancelled.
    pub fn is_done(&self) -> bool {
        self.tasks.iter().all(|t| t.state.is_terminal())
    }
}

/// Filters for `list_jobs`; every field is optional and they combine with AND.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFilter {
    /// Package name (normalised as PEP 503).
    #[serde(default)]
    pub package: Option<String>,
    /// Jobs with a task for this recipe.
    #[serde(default)]
    pub recipe: Option<String>,
    /// Jobs with a task in this state (`queued`, `leased`, `running`, `finished`, `cancelled`) or
    /// with this verdict (`pass`, `fail`, `error`, `timeout`, `tmpfail`).
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub submitter: Option<String>,
    /// Jobs created at or after this time (Unix milliseconds).
    #[serde(default)]
    pub since_ms: Option<i64>,
    /// Only jobs older than this one: the next page after a page whose oldest job this was.
    #[serde(default)]
    pub before: Option<JobId>,
    /// At most this many jobs, newest first (default 100, at most 1000).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// What a slave can do, sent once at start-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlaveRegistration {
    /// Unique slave name (a host name).
    pub name: String,
    /// Recipes this slave has images for.
    pub recipes: Vec<String>,
    /// Tasks it runs at once.
    pub slots: u32,
}

/// The master's answer to `register`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationReply {
    /// Send `heartbeat` at least this often (seconds); leases last `lease_secs`.
    pub heartbeat_secs: u64,
    pub lease_secs: u64,
    /// Recipes the slave named that the master does not know (they are never dispatched).
    pub unknown_recipes: Vec<String>,
}

/// The master's answer to `heartbeat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// Leases renewed.
    pub renewed: u64,
    /// Tasks whose jobs were cancelled: stop them and report an infrastructure failure.
    pub cancel: Vec<TaskId>,
}

/// A slave asking for work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    pub slave: String,
    /// Wait up to this long for a task (long poll); 0 answers at once. Capped by the master.
    #[serde(default)]
    pub wait_secs: u32,
}

/// A task handed to a slave under a lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimedTask {
    pub task_id: TaskId,
    pub job_id: JobId,
    /// Echo this with every report; a report for another attempt is refused.
    pub attempt: u32,
    pub lease_id: String,
    /// The lease ends this long after the last heartbeat.
    pub lease_secs: u64,
    /// Full package spec, uploads included.
    pub package: PackageSpec,
    /// The recipe as it was when the job was submitted.
    pub recipe: Recipe,
}

/// A phase event from a slave (`booting`, `installing`, …); the first one marks the task running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgressReport {
    pub task_id: TaskId,
    pub attempt: u32,
    pub lease_id: String,
    pub phase: String,
    #[serde(default)]
    pub message: String,
}

/// The end of an attempt, as the slave saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ReportOutcome {
    /// The agent's raw data; the master computes the verdict from it and the recipe.
    Raw { result: RawResult },
    /// The infrastructure failed (VM did not boot, disk error…): retried while attempts remain.
    Infrastructure { reason: String },
    /// The guest ran past the task's deadline (the sum of its step timeouts) and was destroyed
    /// before the agent could report: the verdict is `timeout`, not retried.
    GuestTimeout { detail: String },
    /// The package or its dependencies are unusable (no such release, no wheel and no static
    /// metadata, too large, a guest result the host refused): the verdict is `error`, not retried.
    PackageError { reason: String },
}

impl ReportOutcome {
    /// The human-readable reason carried by a non-raw outcome.
    pub fn reason(&self) -> Option<&str> {
        match self {
            ReportOutcome::Raw { .. } => None,
            ReportOutcome::Infrastructure { reason } | ReportOutcome::PackageError { reason } => {
                Some(reason)
            }
            ReportOutcome::GuestTimeout { detail } => Some(detail),
        }
    }
}

/// `report_result`: the raw-data API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultReport {
    pub task_id: TaskId,
    pub attempt: u32,
    pub lease_id: String,
    pub outcome: ReportOutcome,
}

/// What the master made of a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportReceipt {
    /// The task's state after the report (`queued` again when a tmpfail is retried).
    pub state: TaskState,
    /// The verdict of this attempt.
    pub attempt_outcome: AttemptOutcome,
    /// True when this exact report had already been recorded (nothing changed).
    pub duplicate: bool,
}

/// Most lines one `task_log` answer holds; ask again from the next line for more.
pub const TASK_LOG_PAGE_LINES: u32 = 1000;

/// One line of a task's log: a progress event or a state change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub at_ms: i64,
    pub attempt: u32,
    pub phase: String,
    pub message: String,
}

/// `compare`: one package across versions and recipes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompareRequest {
    pub package: String,
    /// Only these recipes (all when empty).
    #[serde(default)]
    pub recipes: Vec<String>,
    /// Only the newest this many versions, by first submission (default
    /// [`COMPARE_DEFAULT_VERSIONS`], at most [`COMPARE_MAX_VERSIONS`]).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// Versions `compare` shows when the request gives no limit.
pub const COMPARE_DEFAULT_VERSIONS: u32 = 50;
/// Most versions one `compare` answer holds.
pub const COMPARE_MAX_VERSIONS: u32 = 500;

/// The latest verdict of one version on one recipe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompareCell {
    pub version: String,
    pub recipe: String,
    pub task_id: TaskId,
    /// `None` while the task has not finished.
    pub verdict: Option<Verdict>,
}

/// A recipe on which a newer version does worse than the version before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Regression {
    pub recipe: String,
    pub from_version: String,
    pub to_version: String,
    pub from: Verdict,
    pub to: Verdict,
}

/// The answer to `compare`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comparison {
    pub package: String,
    /// Versions in the order they were first submitted.
    pub versions: Vec<String>,
    pub recipes: Vec<String>,
    pub cells: Vec<CompareCell>,
    pub regressions: Vec<Regression>,
    /// Older versions left out by the request's `limit`.
    #[serde(default)]
    pub older_versions: u32,
}

/// Which events a subscriber wants.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventFilter {
    /// Only this job's events; the subscription ends (with [`Event::End`]) when the job is done.
    #[serde(default)]
    pub job_id: Option<JobId>,
}

/// A state change pushed to subscribers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    JobSubmitted {
        job_id: JobId,
        task_ids: Vec<TaskId>,
    },
    TaskChanged {
        job_id: JobId,
        task_id: TaskId,
        attempt: u32,
        state: TaskState,
    },
    /// The last event of every subscription: the job is done, the master is stopping, or the
    /// subscriber fell too far behind.
    End { reason: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(encode_hex(&bytes), "0001abff");
        assert_eq!(decode_hex("0001ABff").as_deref(), Some(&bytes[..]));
        assert_eq!(decode_hex("abc"), None);
        assert_eq!(decode_hex("zz"), None);
    }

    #[test]
    fn names_and_versions_come_from_every_kind_of_spec() {
        let pypi = PackageSpec::pypi("Foo_Bar == 1.2").unwrap();
        assert_eq!(pypi.name_version(), ("foo-bar".into(), Some("1.2".into())));
        let up = PackageSpec::upload("six-1.16.0-py2.py3-none-any.whl", "AA", b"x");
        assert_eq!(up.name_version(), ("six".into(), Some("1.16.0".into())));
        let url = PackageSpec::Url {
            url: "https://example.org/d/attrs-23.1.0.tar.gz?x=1".into(),
            sha256: None,
        };
        assert_eq!(url.name_version(), ("attrs".into(), Some("23.1.0".into())));
        assert_eq!(PackageSpec::pypi("nover"), None);
    }

    #[test]
    fn task_state_serializes_with_its_verdict() {
        let s = serde_json::to_string(&TaskState::Finished(Verdict::Timeout)).unwrap();
        assert_eq!(s, r#"{"state":"finished","verdict":"timeout"}"#);
        let q: TaskState = serde_json::from_str(r#"{"state":"queued"}"#).unwrap();
        assert_eq!(q, TaskState::Queued);
    }
}
