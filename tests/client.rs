//! The client commands against a real `pyti master` process (SQLite), with the test as the
//! master's slave over the JSON-RPC API: `pyti submit --wait` follows a job until it is done and
//! ends with its results' exit code; `pyti compare` shows a package's versions side by side and
//! exits 1 when one regressed; `pyti log` shows a task's events.

// Only the process helpers of `common`: its package builders are for the VM stories.
#[allow(dead_code)]
mod common;

use common::cluster::{admin_token, explain, free_port, pyti, run, start_master, Daemon};
use pyti_wire::client::http_client;
use pyti_wire::job::{
    ClaimRequest, ClaimedTask, ProgressReport, ReportOutcome, ResultReport, SlaveRegistration,
};
use pyti_wire::raw_data::{CapturedOutput, RawResult, StepOutcome, StepRawData, RAW_RESULT_SCHEMA};
use pyti_wire::rpc::PytiApiClient;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

const SLAVE: &str = "test-slave";
/// The master's `--max-attempts`: enough attempts for a log longer than one `task_log` page.
const ATTEMPTS: u32 = 6;

/// Checks that `out` exited with `code` and said `text` on stderr.
fn assert_fails_saying(out: &Output, code: i32, text: &str) {
    assert_eq!(out.status.code(), Some(code), "{}", explain(out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(text),
        "{}",
        explain(out)
    );
}

/// Raw data where every step of the task's recipe exited 0.
fn passing(task: &ClaimedTask) -> RawResult {
    RawResult {
        schema: RAW_RESULT_SCHEMA,
        task_id: task.task_id.to_string(),
        agent_version: "test".into(),
        guest_kernel: "6.1".into(),
        interpreter_version: "Python 3.11.2".into(),
        uptime_start_secs: 1.0,
        uptime_end_secs: 3.0,
        steps: task
            .recipe
            .steps
            .iter()
            .map(|step| StepRawData {
                name: step.name.clone(),
                command: step.run.clone(),
                outcome: StepOutcome::Exited { code: 0 },
                wall_secs: 0.5,
                user_cpu_secs: 0.1,
                system_cpu_secs: 0.1,
                max_rss_kib: 10_000,
                stdout: CapturedOutput::default(),
                stderr: CapturedOutput::default(),
            })
            .collect(),
    }
}

struct Cluster {
    data: tempfile::TempDir,
    db: String,
    port: u16,
    master: Option<Daemon>,
    url: String,
    token: String,
    rt: tokio::runtime::Runtime,
    slave: jsonrpsee::http_client::HttpClient,
}

impl Cluster {
    fn start(data: tempfile::TempDir) -> Cluster {
        let db = data.path().join("master.sqlite").display().to_string();
        let token = admin_token(data.path(), &db);
        let port = free_port();
        let url = format!("http://127.0.0.1:{port}");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let slave = http_client(&url, Some(&token), Duration::from_secs(60)).unwrap();
        let mut c = Cluster {
            data,
            db,
            port,
            master: None,
            url,
            token,
            rt,
            slave,
        };
        c.start_master();
        c.rt.block_on(c.slave.register(SlaveRegistration {
            name: SLAVE.into(),
            recipes: vec!["debian-12".into()],
            slots: 1,
        }))
        .expect("register");
        c
    }

    fn start_master(&mut self) {
        let recipes = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes");
        let log: PathBuf = self.data.path().join("master.log");
        self.master = Some(start_master(
            self.data.path(),
            self.port,
            &self.db,
            &recipes,
            &["--max-attempts", &ATTEMPTS.to_string()],
            log,
        ));
    }

    /// Claims a task as the slave; `what` says which one is expected.
    fn claim(&self, what: &str) -> ClaimedTask {
        self.rt
            .block_on(self.slave.claim(ClaimRequest {
                slave: SLAVE.into(),
                wait_secs: 30,
            }))
            .expect("claim")
            .unwrap_or_else(|| panic!("no task claimed: {what}"))
    }

    fn master_log(&self) -> String {
        self.master.as_ref().map(Daemon::log).unwrap_or_default()
    }

    fn pyti(&self, args: &[&str]) -> std::process::Command {
        let mut command = pyti(self.data.path());
        command
            .args(args)
            .args(["--master", &self.url, "--token", &self.token]);
        command
    }

    /// Runs `pyti submit PACKAGE --wait` and, as the slave, claims its one task, reports
    /// progress and then `outcome` (restarting the master in between with `restart`); returns
    /// what the command printed once it ended.
    fn submit_wait(
        &mut self,
        package: &str,
        restart: bool,
        outcome: fn(&ClaimedTask) -> ReportOutcome,
    ) -> Output {
        let mut child = self
            .pyti(&["submit", package, "--recipe", "debian-12", "--wait"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("pyti submit starts");
        let task = self.claim("the submitted task is claimed");
        self.rt
            .block_on(self.slave.report_progress(ProgressReport {
                task_id: task.task_id,
                attempt: task.attempt,
                lease_id: task.lease_id.clone(),
                phase: "installing".into(),
                message: String::new(),
            }))
            .expect("progress");
        // Following a job that is not done: the command must still be waiting.
        std::thread::sleep(Duration::from_millis(1500));
        assert!(
            child.try_wait().unwrap().is_none(),
            "submit --wait returned while its task was still running"
        );
        if restart {
            // SIGTERM: the master ends every subscription with a final event and stops; the
            // new one serves the same database on the same port.
            drop(self.master.take());
            self.start_master();
            // A new connection: the pooled one went with the old master.
            self.slave =
                http_client(&self.url, Some(&self.token), Duration::from_secs(60)).unwrap();
            std::thread::sleep(Duration::from_millis(500));
            assert!(
                child.try_wait().unwrap().is_none(),
                "submit --wait gave up when the master restarted"
            );
        }
        self.rt
            .block_on(self.slave.report_result(ResultReport {
                task_id: task.task_id,
                attempt: task.attempt,
                lease_id: task.lease_id.clone(),
                outcome: outcome(&task),
            }))
            .expect("report");
        let deadline = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("submit --wait did not end after its job was done");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        child.wait_with_output().unwrap()
    }
}

#[test]
fn submit_wait_follows_a_job_to_its_verdict_and_compare_exits_1_on_a_regression() {
    let mut c = Cluster::start(tempfile::tempdir().unwrap());

    // The first version passes: exit 0, its verdict in the table, the task's states on stderr.
    let out = c.submit_wait("six==1.16.0", false, |task| ReportOutcome::Raw {
        result: passing(task),
    });
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    assert!(
        stdout.contains("job 1 queued") && stdout.contains("pass"),
        "{stdout}"
    );
    assert!(
        stderr.contains("(debian-12") && stderr.contains("): finished(pass)"),
        "the task's states are shown as they change:\n{stderr}\n--- master\n{}",
        c.master_log()
    );

    // Its log: the lease, the slave's progress, the result, in that order.
    let out = run(&mut c.pyti(&["log", "1", "--json"]));
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    let log: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let phases: Vec<&str> = log
        .as_array()
        .expect("a list of entries")
        .iter()
        .map(|e| e["phase"].as_str().unwrap())
        .collect();
    let installing = phases.iter().position(|p| *p == "installing");
    assert!(
        installing.is_some_and(|i| i > 0 && i + 1 < phases.len()),
        "{phases:?}"
    );
    let out = run(&mut c.pyti(&["log", "1"]));
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("installing"));
    let out = run(&mut c.pyti(&["log", "999"]));
    assert_fails_saying(&out, 2, "task 999 does not exist");
    let out = run(&mut c.pyti(&["log", "one"]));
    assert_fails_saying(&out, 2, "`one` is not a task id");

    let out = run(&mut c.pyti(&["compare", "six"]));
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("1.16.0") && stdout.contains("pass") && stdout.contains("no regressions"),
        "{stdout}"
    );

    // The next version's package is unusable: verdict `error`, exit 1, and a regression. The
    // master restarts while the command follows the job: it follows it again, to the end.
    let out = c.submit_wait("six==1.17.0", true, |_| ReportOutcome::PackageError {
        reason: "no such release".into(),
    });
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("error"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("following it again") && stderr.contains("): finished(error)"),
        "{stderr}"
    );

    let out = run(&mut c.pyti(&["compare", "six"]));
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("error (regressed)")
            && stdout.contains("regression on debian-12: 1.16.0 pass -> 1.17.0 error"),
        "{stdout}"
    );

    let out = run(&mut c.pyti(&["compare", "six", "--json"]));
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    let json: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(json["versions"], serde_json::json!(["1.16.0", "1.17.0"]));
    assert_eq!(json["regressions"][0]["to"], "error", "{json:#}");

    // Only the newest version: no version before it to regress from, and a line saying what
    // was left out.
    let out = run(&mut c.pyti(&["compare", "six", "--limit", "1"]));
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("1.17.0")
            && !stdout.contains("1.16.0")
            && stdout.contains("1 older version(s) not shown")
            && stdout.contains("no regressions"),
        "{stdout}"
    );
    let out = run(&mut c.pyti(&["compare", "six", "--limit", "0"]));
    assert_fails_saying(&out, 2, "--limit");

    // A package the master never saw is an error that says so, not an empty "no regressions".
    let out = run(&mut c.pyti(&["compare", "never-submitted"]));
    assert_fails_saying(&out, 2, "no results for `never-submitted`");

    // `status` filters and pages the job list.
    let job_ids = |args: &[&str]| -> Vec<i64> {
        let out = run(&mut c.pyti(&[&["status", "--json"], args].concat()));
        assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
        let jobs: Vec<Value> = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
        jobs.iter().map(|j| j["id"].as_i64().unwrap()).collect()
    };
    assert_eq!(job_ids(&[]), [2, 1], "newest first");
    assert_eq!(job_ids(&["--status", "error"]), [2]);
    assert_eq!(
        job_ids(&["--package", "SIX", "--recipe", "debian-12"]),
        [2, 1]
    );
    assert_eq!(job_ids(&["--since", "1d", "--status", "pass"]), [1]);
    assert!(job_ids(&["--since", "2999-01-01"]).is_empty());
    assert!(job_ids(&["--submitter", "someone-else"]).is_empty());
    assert_eq!(job_ids(&["--before", "2"]), [1]);
    let out = run(&mut c.pyti(&["status", "2", "--json"]));
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    let job: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(
        (&job["id"], job["tasks"].as_array().map(Vec::len)),
        (&serde_json::json!(2), Some(1)),
        "{job:#}"
    );
    let out = run(&mut c.pyti(&["status", "--limit", "1"]));
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("six==1.17.0") && !stdout.contains("six==1.16.0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("the same command with --before 2"),
        "{stdout}"
    );
    let out = run(&mut c.pyti(&["status", "--since", "2999-01-01"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no jobs match"));
    let out = run(&mut c.pyti(&["status", "--since", "yesterday"]));
    assert_fails_saying(&out, 2, "is not a date");
    let out = run(&mut c.pyti(&["status", "--status", "bogus"]));
    assert_fails_saying(&out, 2, "`bogus` is not a state");
}

/// A task whose log is longer than one `task_log` page: every attempt fills its log up to the
/// master's limit (further progress is refused) and ends as an infrastructure failure, so
/// `pyti log` must read page after page to show all of it, in order.
#[test]
fn log_reads_a_long_log_page_by_page() {
    let c = Cluster::start(tempfile::tempdir().unwrap());
    let out = run(&mut c.pyti(&["submit", "six==1.16.0", "--recipe", "debian-12"]));
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    let mut refusals = 0;
    for attempt in 1..=ATTEMPTS {
        let task = c.claim("the task is claimed again after each failure");
        assert_eq!(task.attempt, attempt);
        for n in 0.. {
            let progress = ProgressReport {
                task_id: task.task_id,
                attempt,
                lease_id: task.lease_id.clone(),
                phase: "step".into(),
                message: format!("line {n}"),
            };
            if let Err(e) = c.rt.block_on(c.slave.report_progress(progress)) {
                assert!(e.to_string().contains("the most one attempt keeps"), "{e}");
                refusals += 1;
                break;
            }
            assert!(n < 1000, "progress is never refused");
        }
        c.rt.block_on(c.slave.report_result(ResultReport {
            task_id: task.task_id,
            attempt,
            lease_id: task.lease_id.clone(),
            outcome: ReportOutcome::Infrastructure {
                reason: "the VM did not boot".into(),
            },
        }))
        .expect("report");
    }
    assert_eq!(refusals, ATTEMPTS);

    let out = run(&mut c.pyti(&["log", "1", "--json"]));
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    let log: Vec<Value> = serde_json::from_slice(&out.stdout).expect("a JSON list on stdout");
    assert!(log.len() > 1000, "more than one page: {} lines", log.len());
    let attempts: Vec<u64> = log.iter().map(|e| e["attempt"].as_u64().unwrap()).collect();
    assert!(attempts.windows(2).all(|w| w[0] <= w[1]), "oldest first");
    assert_eq!(attempts.last(), Some(&u64::from(ATTEMPTS)));
    let last = log.last().unwrap()["message"].as_str().unwrap();
    assert!(
        last.contains("tmpfail"),
        "the log ends with the task's end: {last}"
    );
    // Each attempt's progress, in order, no line twice.
    for attempt in 1..=u64::from(ATTEMPTS) {
        let lines: Vec<&str> = log
            .iter()
            .filter(|e| e["attempt"] == attempt && e["phase"] == "step")
            .map(|e| e["message"].as_str().unwrap())
            .collect();
        assert!(!lines.is_empty());
        for (n, line) in lines.iter().enumerate() {
            assert_eq!(*line, format!("line {n}"), "attempt {attempt}");
        }
    }
}

/// A refusal that asking again cannot change ends `submit --wait` at once: the token it
/// follows the job with is revoked and the master restarted (the open subscription was
/// authorised when it began; the next one is refused).
#[test]
fn submit_wait_ends_at_once_when_its_token_is_revoked() {
    let mut c = Cluster::start(tempfile::tempdir().unwrap());
    let token_cmd = |args: &[&str]| {
        let out = run(pyti(c.data.path())
            .args(["master", "token"])
            .args(args)
            .args(["--database", &c.db]));
        assert!(out.status.success(), "{}", explain(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let waiter = token_cmd(&["add", "waiter", "--role", "submitter"]);
    let mut child = pyti(c.data.path())
        .args(["submit", "six==1.16.0", "--recipe", "debian-12", "--wait"])
        .args(["--master", &c.url, "--token", &waiter])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pyti submit starts");
    let task = c.claim("the submitted task is claimed");
    assert_eq!(task.task_id, 1);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "still following the job"
    );

    token_cmd(&["revoke", "waiter"]);
    drop(c.master.take());
    c.start_master();
    let revoked = Instant::now();
    // Well before the ~60 s that FOLLOW_TRIES pauses of 2 s would take.
    while child.try_wait().unwrap().is_none() {
        if revoked.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("submit --wait kept following with a revoked token");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    assert_fails_saying(&out, 2, "the master refused");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("gave up following"),
        "{}",
        explain(&out)
    );
}
