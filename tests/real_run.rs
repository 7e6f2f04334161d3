//! End to end on the real stack (libvirt + QEMU under TCG or KVM, libguestfs + nbdkit, PyPI):
//! `pyti run` as a user runs it, one process with an embedded master and slave.
//!
//! Each test uses a fresh data directory (a fresh master database) and the user's shared image
//! and wheelhouse caches, so the guest image is built once for the whole suite.

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

/// Writes a minimal sdist whose `setup.py` leaves a marker file wherever it runs and whose test
/// fails with a recognisable assertion.
fn failing_sdist(dir: &Path, marker: &Path) -> std::path::PathBuf {
    let root = dir.join("pyti_failing_demo-0.1");
    std::fs::create_dir_all(root.join("pyti_failing_demo")).unwrap();
    std::fs::create_dir_all(root.join("tests")).unwrap();
    std::fs::write(
        root.join("PKG-INFO"),
        "Metadata-Version: 2.2\nName: pyti_failing_demo\nVersion: 0.1\nSummary: a package whose test fails\n",
    )
    .unwrap();
    std::fs::write(
        root.join("setup.py"),
        format!(
            "import pathlib\npathlib.Path({marker:?}).write_text('setup.py ran here')\n\
             from setuptools import setup\nsetup(name='pyti_failing_demo', version='0.1', packages=['pyti_failing_demo'])\n",
            marker = marker.display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(root.join("pyti_failing_demo/__init__.py"), "ANSWER = 41\n").unwrap();
    std::fs::write(root.join("tests/__init__.py"), "").unwrap();
    std::fs::write(
        root.join("tests/test_answer.py"),
        "import unittest\nimport pyti_failing_demo\n\nclass Answer(unittest.TestCase):\n    def test_answer(self):\n        self.assertEqual(pyti_failing_demo.ANSWER, 42, 'PYTI-EXPECTED-FAILURE')\n",
    )
    .unwrap();
    let sdist = dir.join("pyti_failing_demo-0.1.tar.gz");
    let status = Command::new("tar")
        .arg("-czf")
        .arg(&sdist)
        .arg("-C")
        .arg(dir)
        .arg("pyti_failing_demo-0.1")
        .status()
        .unwrap();
    assert!(status.success());
    sdist
}

#[test]
fn real_run_local_sdist_with_failing_test_fails_and_never_runs_setup_py_on_the_host() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let marker = Path::new("/tmp").join(format!("pyti-host-marker-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let sdist = failing_sdist(work.path(), &marker);

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
