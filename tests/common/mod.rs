//! Helpers shared by the end-to-end stories: local packages built on the fly, and pyti's processes
//! run as an operator runs them ([`cluster`]).

pub mod cluster;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Writes an sdist `NAME-0.1.tar.gz` into `dir`: a package `NAME` and a `tests/test_story.py`
/// whose body is `test_body` (indented under a `unittest.TestCase` method). When `marker` is
/// given, `setup.py` writes that file wherever it runs (to prove where package code ran).
pub fn sdist(dir: &Path, name: &str, test_body: &str, marker: Option<&Path>) -> PathBuf {
    let root = dir.join(format!("{name}-0.1"));
    std::fs::create_dir_all(root.join(name)).unwrap();
    std::fs::create_dir_all(root.join("tests")).unwrap();
    std::fs::write(
        root.join("PKG-INFO"),
        format!("Metadata-Version: 2.2\nName: {name}\nVersion: 0.1\nSummary: a pyti test story\n"),
    )
    .unwrap();
    let mark = marker
        .map(|m| {
            format!(
                "import pathlib\npathlib.Path({:?}).write_text('setup.py ran here')\n",
                m.display().to_string()
            )
        })
        .unwrap_or_default();
    std::fs::write(
        root.join("setup.py"),
        format!("{mark}from setuptools import setup\nsetup(name={name:?}, version='0.1', packages=[{name:?}])\n"),
    )
    .unwrap();
    std::fs::write(root.join(name).join("__init__.py"), "ANSWER = 41\n").unwrap();
    std::fs::write(root.join("tests/__init__.py"), "").unwrap();
    let body: String = test_body
        .lines()
        .map(|l| format!("        {l}\n"))
        .collect();
    std::fs::write(
        root.join("tests/test_story.py"),
        format!("import unittest\nimport {name}\n\nclass Story(unittest.TestCase):\n    def test_story(self):\n{body}"),
    )
    .unwrap();
    let sdist = dir.join(format!("{name}-0.1.tar.gz"));
    let status = Command::new("tar")
        .arg("-czf")
        .arg(&sdist)
        .arg("-C")
        .arg(dir)
        .arg(format!("{name}-0.1"))
        .status()
        .unwrap();
    assert!(status.success(), "tar failed");
    sdist
}
