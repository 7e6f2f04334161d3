//! Distributed mode as an operator runs it: `pyti master`, `pyti slave` and `pyti submit` as
//! separate processes on the real stack (libvirt + QEMU, libguestfs, PyPI).

mod common;

use common::cluster::{admin_token, free_port, start_master, start_slave, submit, wait_for};
use serde_json::Value;
use std::path::{Path, PathBuf};

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

    let token = admin_token(data.path(), database);
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let master = start_master(
        data.path(),
        port,
        database,
        &recipes,
        &[],
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
