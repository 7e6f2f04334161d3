//! Running pyti's daemons and client commands as separate processes, as an operator does.
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a job may take before the story counts as failed (image build, appliance launch,
/// first boot and the task itself under TCG).
pub const JOB_DEADLINE: Duration = Duration::from_secs(300);

pub fn pyti(data: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pyti"));
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("XDG_DATA_HOME", data)
        .env_remove("PYTI_LOG");
    command
}

pub fn run(command: &mut Command) -> Output {
    command.output().expect("pyti runs")
}

pub fn explain(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A daemon that is stopped (SIGTERM, then SIGKILL) when the test ends, however it ends.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn spawn(mut command: Command, log: PathBuf) -> Daemon {
        let file = std::fs::File::create(&log).unwrap();
        let child = command
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("daemon starts");
        Daemon { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Quiet: a daemon the test already killed has no process left to signal.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn submit(data: &Path, url: &str, token: &str, package: &str) -> String {
    let out = run(pyti(data).args([
        "submit",
        package,
        "--recipe",
        "debian-12",
        "--master",
        url,
        "--token",
        token,
    ]));
    assert!(out.status.success(), "{}", explain(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .nth(1)
        .expect("`job N queued`")
        .to_string()
}

/// Polls `pyti results JOB --json` until every task finished; returns the results.
pub fn wait_for(data: &Path, url: &str, token: &str, job: &str, slave: &Daemon) -> Value {
    let started = Instant::now();
    loop {
        let out =
            run(pyti(data).args(["results", job, "--json", "--master", url, "--token", token]));
        if let Ok(results) = serde_json::from_slice::<Value>(&out.stdout) {
            let done = results["tasks"].as_array().is_some_and(|t| {
                t.iter().all(|t| {
                    t["state"]["state"] == "finished" || t["state"]["state"] == "cancelled"
                })
            });
            if done {
                return results;
            }
        }
        assert!(
            started.elapsed() < JOB_DEADLINE,
            "job {job} did not finish in time; slave log:\n{}",
            slave.log()
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Creates an admin token in `database` (a SQLite path) and returns it.
pub fn admin_token(data: &Path, database: &str) -> String {
    let out = run(pyti(data).args([
        "master",
        "token",
        "add",
        "operator",
        "--role",
        "admin",
        "--database",
        database,
    ]));
    assert!(out.status.success(), "{}", explain(&out));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!token.is_empty());
    token
}

/// Starts `pyti master` on `port` over `database` with `recipes` (plus `extra` flags), logging to
/// `log`, and waits until it listens.
pub fn start_master(
    data: &Path,
    port: u16,
    database: &str,
    recipes: &Path,
    extra: &[&str],
    log: PathBuf,
) -> Daemon {
    let mut master = pyti(data);
    master
        .args([
            "master",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--database",
            database,
        ])
        .arg("--recipes-dir")
        .arg(recipes)
        .args(extra);
    let master = Daemon::spawn(master, log);
    let listening = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            listening.elapsed() < Duration::from_secs(30),
            "the master did not listen:\n{}",
            master.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    master
}

/// Starts `pyti slave` named `name` with one slot against the master at `url`.
pub fn start_slave(
    data: &Path,
    url: &str,
    token: &str,
    name: &str,
    recipes: &Path,
    log: PathBuf,
) -> Daemon {
    let mut slave = pyti(data);
    slave
        .args([
            "slave", "--master", url, "--token", token, "--slots", "1", "--name", name,
        ])
        .arg("--recipes-dir")
        .arg(recipes)
        .env("PYTI_LOG", "info");
    Daemon::spawn(slave, log)
}
