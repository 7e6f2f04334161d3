//! Distributed mode as an operator runs it: `pyti master`, `pyti slave` and `pyti submit` as
//! separate processes on the real stack (libvirt + QEMU, libguestfs, PyPI).

mod common;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a job may take before the story counts as failed (image build, appliance launch,
/// first boot and the task itself under TCG).
const JOB_DEADLINE: Duration = Duration::from_secs(300);

fn pyti(data: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pyti"));
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("XDG_DATA_HOME", data)
        .env_remove("PYTI_LOG");
    command
}

fn run(command: &mut Command) -> Output {
    command.output().expect("pyti runs")
}

fn explain(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A daemon that is stopped (SIGTERM, then SIGKILL) when the test ends, however it ends.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn spawn(mut command: Command, log: PathBuf) -> Daemon {
        let file = std::fs::File::create(&log).unwrap();
        let child = command
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("daemon starts");
        Daemon { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
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

/// The shipped recipe with a short `test` timeout, so a hanging test times out in seconds.
fn short_timeout_recipes(dir: &Path) -> PathBuf {
    let recipes = dir.join("recipes");
    std::fs::create_dir_all(&recipes).unwrap();
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/debian-12.toml"),
    )
    .unwrap();
    let (head, test) = text
        .split_once("name = \"test\"")
        .expect("the recipe has a test step");
    let test = test.replacen("timeout = 1800", "timeout = 20", 1);
    assert!(
        test.contains("timeout = 20"),
        "the test step's timeout was not found"
    );
    std::fs::write(
        recipes.join("debian-12.toml"),
        format!("{head}name = \"test\"{test}"),
    )
    .unwrap();
    recipes
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn submit(data: &Path, url: &str, token: &str, package: &str) -> String {
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
fn wait_for(data: &Path, url: &str, token: &str, job: &str, slave: &Daemon) -> Value {
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

fn step<'a>(results: &'a Value, name: &str) -> &'a Value {
    results["tasks"][0]["attempts"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .rev()
                .find_map(|a| a["raw_result"]["steps"].as_array())
        })
        .and_then(|steps| steps.iter().find(|s| s["name"] == name))
        .unwrap_or(&Value::Null)
}

#[test]
fn real_distributed_a_hanging_test_times_out_and_the_same_slave_passes_the_next_job() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let recipes = short_timeout_recipes(work.path());
    let database = work.path().join("master.sqlite");
    let database = database.to_str().unwrap();

    let out = run(pyti(data.path()).args([
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

    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut master = pyti(data.path());
    master
        .args([
            "master",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--database",
            database,
        ])
        .arg("--recipes-dir")
        .arg(&recipes);
    let master = Daemon::spawn(master, work.path().join("master.log"));
    let listening = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            listening.elapsed() < Duration::from_secs(30),
            "the master did not listen:\n{}",
            master.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut slave = pyti(data.path());
    slave
        .args([
            "slave", "--master", &url, "--token", &token, "--slots", "1", "--name", "e2e",
        ])
        .arg("--recipes-dir")
        .arg(&recipes)
        .env("PYTI_LOG", "info");
    let slave = Daemon::spawn(slave, work.path().join("slave.log"));

    let hanging = common::sdist(
        work.path(),
        "pyti_hanging_demo",
        "import time\ntime.sleep(3600)",
        None,
    );
    let hanging_job = submit(data.path(), &url, &token, hanging.to_str().unwrap());
    let six_job = submit(data.path(), &url, &token, "six==1.16.0");

    let results = wait_for(data.path(), &url, &token, &hanging_job, &slave);
    assert_eq!(
        results["tasks"][0]["state"]["verdict"],
        "timeout",
        "{results:#}\nmaster log:\n{}",
        master.log()
    );
    assert_eq!(
        step(&results, "install")["outcome"]["code"],
        0,
        "{results:#}"
    );
    assert_eq!(
        step(&results, "test")["outcome"]["kind"],
        "timed_out",
        "{results:#}"
    );

    let results = wait_for(data.path(), &url, &token, &six_job, &slave);
    assert_eq!(
        results["tasks"][0]["state"]["verdict"],
        "pass",
        "{results:#}\nslave log:\n{}",
        slave.log()
    );
    let slaves: Vec<&str> = results["tasks"][0]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["slave"].as_str())
        .collect();
    assert_eq!(
        slaves,
        ["e2e"],
        "the same slave ran the next job: {results:#}"
    );
}
