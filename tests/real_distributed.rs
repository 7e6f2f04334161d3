//! Distributed mode as an operator runs it: `pyti master`, `pyti slave` and `pyti submit` as
//! separate processes on the real stack (libvirt + QEMU, libguestfs, PyPI).

mod common;

use common::cluster::{
    admin_token, explain, free_port, pyti, run, start_master, start_slave, submit, wait_for,
    Daemon, JOB_DEADLINE,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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

/// Polls until the job's task is running on a slave.
fn wait_until_running(data: &Path, url: &str, token: &str, job: &str, slave: &Daemon) {
    let started = Instant::now();
    loop {
        let out =
            run(pyti(data).args(["results", job, "--json", "--master", url, "--token", token]));
        if let Ok(results) = serde_json::from_slice::<Value>(&out.stdout) {
            if results["tasks"][0]["state"]["state"] == "running" {
                return;
            }
        }
        assert!(
            started.elapsed() < JOB_DEADLINE,
            "job {job} never ran; slave log:\n{}",
            slave.log()
        );
        std::thread::sleep(Duration::from_millis(500));
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
fn real_distributed_one_slave_times_out_a_hang_stops_a_cancelled_job_and_installs_dependencies_offline(
) {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let recipes = short_timeout_recipes(work.path());
    let database = work.path().join("master.sqlite");
    let database = database.to_str().unwrap();

    let token = admin_token(data.path(), database);
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let master = start_master(
        data.path(),
        port,
        database,
        &recipes,
        // Slaves heartbeat every 5 s: a cancel reaches the running task within that.
        &["--lease-secs", "20"],
        work.path().join("master.log"),
    );
    let slave = start_slave(
        data.path(),
        &url,
        &token,
        "e2e",
        &recipes,
        work.path().join("slave.log"),
    );

    let hanging = common::sdist(
        work.path(),
        "pyti_hanging_demo",
        "import time\ntime.sleep(3600)",
        None,
    );
    let hanging_job = submit(data.path(), &url, &token, hanging.to_str().unwrap());
    let cancelled = common::sdist(
        work.path(),
        "pyti_cancelled_demo",
        "import time\ntime.sleep(3600)",
        None,
    );
    let cancelled_job = submit(data.path(), &url, &token, cancelled.to_str().unwrap());
    // python-dateutil needs six: both come from PyPI as wheels and install in the offline guest.
    let dependencies_job = submit(data.path(), &url, &token, "python-dateutil==2.9.0.post0");
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

    // Cancelling a job whose task is running: the slave stops the guest (it would otherwise
    // hang until the test step's timeout) and the task ends cancelled.
    wait_until_running(data.path(), &url, &token, &cancelled_job, &slave);
    std::thread::sleep(Duration::from_secs(3));
    let out = run(pyti(data.path()).args([
        "cancel",
        &cancelled_job,
        "--master",
        &url,
        "--token",
        &token,
    ]));
    assert!(out.status.success(), "{}", explain(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 running task(s) being stopped"),
        "{}",
        explain(&out)
    );
    let results = wait_for(data.path(), &url, &token, &cancelled_job, &slave);
    let task = &results["tasks"][0];
    assert_eq!(task["state"]["state"], "cancelled", "{results:#}");
    let attempt = &task["attempts"][0];
    assert_eq!(attempt["outcome"], "cancelled", "{results:#}");
    assert!(
        attempt["reason"]
            .as_str()
            .is_some_and(|r| r.contains("the guest was stopped")),
        "the slave stopped the guest rather than letting it run out: {results:#}\nslave log:\n{}",
        slave.log()
    );

    let results = wait_for(data.path(), &url, &token, &dependencies_job, &slave);
    assert_eq!(
        results["tasks"][0]["state"]["verdict"],
        "pass",
        "{results:#}\nslave log:\n{}",
        slave.log()
    );
    // uv lists what it installed on stderr (` + name==version`).
    let installed = step(&results, "install")["stderr"]["head"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        installed.contains("+ python-dateutil==2.9.0.post0") && installed.contains("+ six=="),
        "both the package and its dependency were installed from the wheelhouse: {results:#}"
    );
    assert!(
        step(&results, "import")["stdout"]["head"]
            .as_str()
            .is_some_and(|out| out.contains("imported dateutil")),
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
