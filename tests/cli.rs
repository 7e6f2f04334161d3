//! The command line as a user meets it: help texts, recipe checking, honest refusals.

use std::path::Path;
use std::process::{Command, Output};

fn pyti(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pyti"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("PYTI_LOG")
        .output()
        .expect("the pyti binary runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_subcommand_has_real_help() {
    let subcommands: &[&[&str]] = &[
        &["run"],
        &["master"],
        &["master", "token", "add"],
        &["slave"],
        &["submit"],
        &["status"],
        &["results"],
        &["cancel"],
        &["recipes", "list"],
        &["recipes", "check"],
        &["recipes", "show"],
        &["image", "build"],
        &["doctor"],
    ];
    for sub in subcommands {
        let mut args = sub.to_vec();
        args.push("--help");
        let out = pyti(&args);
        assert!(out.status.success(), "{args:?}: {out:?}");
        let text = stdout(&out);
        assert!(
            text.contains("Usage: pyti"),
            "{args:?} help lacks usage:\n{text}"
        );
        // The first line of a subcommand's help is its own description, not the top-level one.
        assert!(
            !text.starts_with("pyti tests Python packages"),
            "{args:?}:\n{text}"
        );
    }
    let top = stdout(&pyti(&["--help"]));
    for sub in [
        "run", "master", "slave", "submit", "status", "results", "cancel", "recipes", "image",
        "doctor",
    ] {
        assert!(
            top.contains(&format!("  {sub} ")),
            "top-level help lacks {sub}:\n{top}"
        );
    }
}

#[test]
fn shipped_recipes_pass_the_check() {
    let out = pyti(&["recipes", "check", "recipes/debian-12.toml"]);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("recipes/debian-12.toml: ok"));
}

#[test]
fn a_malformed_recipe_is_reported_with_positions_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let good = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/debian-12.toml");
    let text = std::fs::read_to_string(good).unwrap().replacen(
        "memory_mib = 1024",
        "memory_mib = \"lots\"",
        1,
    );
    let bad = dir.path().join("broken.toml");
    std::fs::write(&bad, text).unwrap();
    let line = std::fs::read_to_string(&bad)
        .unwrap()
        .lines()
        .position(|l| l.starts_with("memory_mib"))
        .unwrap()
        + 1;

    let out = pyti(&[
        "recipes",
        "check",
        bad.to_str().unwrap(),
        "recipes/debian-12.toml",
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = stdout(&out);
    let expected = format!("{}:{line}:", bad.display());
    assert!(text.contains(&expected), "expected {expected} in:\n{text}");
    // The good file is still checked and reported.
    assert!(text.contains("recipes/debian-12.toml: ok"), "{text}");
}

#[test]
fn unknown_recipe_name_lists_the_known_ones() {
    let out = pyti(&["recipes", "show", "plan9"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no recipe `plan9`") && err.contains("debian-12"),
        "{err}"
    );
}

#[test]
fn recipes_list_and_show_describe_the_shipped_recipe() {
    let list = pyti(&["recipes", "list"]);
    assert!(list.status.success(), "{list:?}");
    assert!(stdout(&list).contains("debian-12"));
    let show = pyti(&["recipes", "show", "debian-12"]);
    assert!(show.status.success(), "{show:?}");
    let text = stdout(&show);
    for expected in ["install", "import", "test", "venv", "/usr/bin/python3"] {
        assert!(text.contains(expected), "show lacks {expected}:\n{text}");
    }
}

#[test]
fn real_host_doctor_names_the_accelerator_with_a_reason_and_passes() {
    let out = pyti(&["doctor"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{out:?}\n{text}");
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("│ ")).collect();
    for check in [
        "libvirt",
        "virtlogd",
        "qemu",
        "accelerator",
        "supermin",
        "guest kernel",
        "libguestfs",
        "nbdkit",
        "disk space",
    ] {
        let row = rows
            .iter()
            .find(|r| r.starts_with(&format!("│ {check} ")))
            .unwrap_or_else(|| panic!("no `{check}` row in:\n{text}"));
        if check == "accelerator" {
            // KVM where it works; on hosts like the CI machine, TCG with the probe's evidence.
            assert!(
                row.contains("KVM:") || (row.contains("warn") && row.contains("TCG fallback")),
                "{row}"
            );
        } else {
            assert!(row.contains(" ok "), "`{check}` is not green:\n{text}");
        }
    }
}
