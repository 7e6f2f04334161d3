//! End to end on the real stack (libvirt + QEMU under TCG or KVM, libguestfs + nbdkit, PyPI):
//! `pyti run` as a user runs it, one process with an embedded master and slave.
//!
//! Each test uses a fresh data directory (a fresh master database) and the user's shared image
//! and wheelhouse caches, so the guest image is built once for the whole suite.

mod common;

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn pyti_run(data_home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pyti"))
        .arg("run")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("XDG_DATA_HOME", data_home)
        .env(
            "PYTI_LOG",
            "pyti=info,pyti_slave=info,pyti_vmanager=info,pyti_diskhandler=info",
        )
        .output()
        .expect("the pyti binary runs")
}

fn explain(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The steps of the (only) task's last attempt with raw data.
fn steps(results: &Value) -> Vec<Value> {
    let attempts = results["tasks"][0]["attempts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    attempts
        .iter()
        .rev()
        .find_map(|a| a["raw_result"]["steps"].as_array().cloned())
        .unwrap_or_default()
}

#[test]
fn real_run_six_from_pypi_passes_and_json_and_junit_agree() {
    let data = tempfile::tempdir().unwrap();
    let junit = data.path().join("six.xml");
    let out = pyti_run(
        data.path(),
        &["six==1.16.0", "--json", "--junit", junit.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", explain(&out));
    let results: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", explain(&out)));
    assert_eq!(
        results["tasks"][0]["state"]["state"], "finished",
        "{results:#}"
    );
    assert_eq!(
        results["tasks"][0]["state"]["verdict"], "pass",
        "{results:#}"
    );
    let steps = steps(&results);
    let names: Vec<&str> = steps.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, ["install", "import", "test"], "{results:#}");
    for step in &steps {
        assert_eq!(step["outcome"]["kind"], "exited", "{step:#}");
        assert_eq!(step["outcome"]["code"], 0, "{step:#}");
    }
    assert!(
        steps[1]["stdout"]["head"]
            .as_str()
            .unwrap_or("")
            .contains("imported six"),
        "{:#}",
        steps[1]
    );

    let xml = std::fs::read_to_string(&junit).expect("--junit wrote the file");
    assert_eq!(xml.matches("<testcase ").count(), 3, "{xml}");
    assert!(xml.contains("failures=\"0\""), "{xml}");
    assert!(!xml.contains("<failure"), "{xml}");
}

#[test]
fn real_run_local_sdist_with_failing_test_fails_and_never_runs_setup_py_on_the_host() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let marker = Path::new("/tmp").join(format!("pyti-host-marker-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let sdist = common::sdist(
        work.path(),
        "pyti_failing_demo",
        "self.assertEqual(pyti_failing_demo.ANSWER, 42, 'PYTI-EXPECTED-FAILURE')",
        Some(&marker),
    );

    let out = pyti_run(data.path(), &[sdist.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    let results: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", explain(&out)));
    assert_eq!(
        results["tasks"][0]["state"]["verdict"], "fail",
        "{results:#}"
    );
    let steps = steps(&results);
    let step = |name: &str| {
        steps
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(
        step("install")["outcome"]["code"],
        0,
        "the sdist builds and installs in the guest: {results:#}"
    );
    let test = step("test");
    assert_eq!(test["outcome"]["code"], 1, "{test:#}");
    let stderr = format!(
        "{}{}",
        test["stderr"]["head"].as_str().unwrap_or(""),
        test["stderr"]["tail"].as_str().unwrap_or("")
    );
    assert!(
        stderr.contains("PYTI-EXPECTED-FAILURE"),
        "the failing assertion is in the step's stderr: {test:#}"
    );
    assert!(
        !marker.exists(),
        "setup.py ran on the host: {} exists",
        marker.display()
    );
}

#[test]
fn real_run_a_test_that_reaches_for_the_network_fails_in_the_offline_guest() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let sdist = common::sdist(
        work.path(),
        "pyti_network_demo",
        "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=5).close()",
        None,
    );
    let out = pyti_run(data.path(), &[sdist.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", explain(&out));
    let results: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", explain(&out)));
    assert_eq!(
        results["tasks"][0]["state"]["verdict"], "fail",
        "{results:#}"
    );
    let test = steps(&results)
        .into_iter()
        .find(|s| s["name"] == "test")
        .unwrap_or_default();
    assert_eq!(test["outcome"]["code"], 1, "{test:#}");
    let stderr = format!(
        "{}{}",
        test["stderr"]["head"].as_str().unwrap_or(""),
        test["stderr"]["tail"].as_str().unwrap_or("")
    );
    assert!(
        stderr.contains("Network is unreachable") || stderr.contains("OSError"),
        "the connection attempt fails inside the guest: {test:#}"
    );
}
