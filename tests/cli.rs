//! The command line as a user meets it: help texts, recipe checking, honest refusals.

use std::path::Path;
use std::process::{Command, Output};

fn pyti(args: &[&str]) -> Output {
    pyti_with(args, &[])
}

/// Runs pyti with only the given `PYTI_*` variables (and `XDG_CONFIG_HOME`, if given) set: the
/// developer's own environment and config file never leak into a test.
fn pyti_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pyti"));
    command
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env(
            "XDG_CONFIG_HOME",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-config-here"),
        );
    for (name, _) in std::env::vars() {
        if name.starts_with("PYTI_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    command.output().expect("the pyti binary runs")
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
        &["log"],
        &["compare"],
        &["recipes", "list"],
        &["recipes", "check"],
        &["recipes", "show"],
        &["image", "build"],
        &["doctor"],
        &["config", "show"],
        &["bench"],
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
        "run", "master", "slave", "submit", "status", "results", "cancel", "log", "compare",
        "recipes", "image", "doctor", "config", "bench",
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

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The value and source columns of `key`'s row in a `pyti config show` table.
fn config_row(table: &str, key: &str) -> (String, String) {
    let row = table
        .lines()
        .find(|l| l.starts_with(&format!("│ {key} ")))
        .unwrap_or_else(|| panic!("no `{key}` row in:\n{table}"));
    let cells: Vec<&str> = row.trim_matches('│').split('┆').map(|c| c.trim()).collect();
    (cells[1].to_string(), cells[2].to_string())
}

/// A config file in a fresh directory; returns the directory (keep it alive) and the path.
fn config_file(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pyti.toml");
    std::fs::write(&path, text).unwrap();
    let path = path.to_str().unwrap().to_string();
    (dir, path)
}

#[test]
fn config_precedence_is_flag_then_env_then_file_then_default() {
    let (_dir, file) =
        config_file("[master]\nlisten = \"127.0.0.1:7001\"\nlease_secs = 30\nmax_attempts = 7\n");
    let show = |flags: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["--config", file.as_str(), "config", "show", "master"];
        args.extend_from_slice(flags);
        let out = pyti_with(&args, env);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    };
    let from_file = format!("file {file}");

    // Only the file: its values win over the defaults; keys it lacks stay default.
    let table = show(&[], &[]);
    assert_eq!(
        config_row(&table, "master.listen"),
        ("127.0.0.1:7001".into(), from_file.clone())
    );
    assert_eq!(
        config_row(&table, "master.lease_secs"),
        ("30".into(), from_file.clone())
    );
    assert_eq!(
        config_row(&table, "recipes_dir"),
        ("recipes".into(), "default".into())
    );
    assert_eq!(
        config_row(&table, "config file"),
        (file.clone(), "flag --config".into())
    );

    // The environment wins over the file.
    let env = [("PYTI_LISTEN", "127.0.0.1:7002"), ("PYTI_LEASE_SECS", "40")];
    let table = show(&[], &env);
    assert_eq!(
        config_row(&table, "master.listen"),
        ("127.0.0.1:7002".into(), "env PYTI_LISTEN".into())
    );
    assert_eq!(
        config_row(&table, "master.lease_secs"),
        ("40".into(), "env PYTI_LEASE_SECS".into())
    );
    assert_eq!(
        config_row(&table, "master.max_attempts"),
        ("7".into(), from_file.clone())
    );

    // A flag wins over both.
    let table = show(&["--listen", "127.0.0.1:7003", "--lease-secs", "50"], &env);
    assert_eq!(
        config_row(&table, "master.listen"),
        ("127.0.0.1:7003".into(), "flag --listen".into())
    );
    assert_eq!(
        config_row(&table, "master.lease_secs"),
        ("50".into(), "flag --lease-secs".into())
    );

    // Without a file: the built-in defaults.
    let out = pyti_with(&["config", "show", "master"], &[]);
    let table = stdout(&out);
    assert_eq!(
        config_row(&table, "master.listen"),
        ("127.0.0.1:7420".into(), "default".into())
    );
    assert_eq!(
        config_row(&table, "master.lease_secs"),
        ("120".into(), "default".into())
    );
    assert!(
        config_row(&table, "config file").0.ends_with("(absent)"),
        "{table}"
    );
}

#[test]
fn a_slave_s_slots_name_and_mode_come_from_the_environment_and_a_flag_wins() {
    let env = [
        ("PYTI_SLAVE_SLOTS", "4"),
        ("PYTI_SLAVE_NAME", "builder-7"),
        ("PYTI_SLAVE_MODE", "cold"),
    ];
    let out = pyti_with(&["config", "show", "slave"], &env);
    assert!(out.status.success(), "{out:?}");
    let table = stdout(&out);
    for (key, value, variable) in [
        ("slave.slots", "4", "PYTI_SLAVE_SLOTS"),
        ("slave.name", "builder-7", "PYTI_SLAVE_NAME"),
        ("slave.mode", "cold", "PYTI_SLAVE_MODE"),
    ] {
        assert_eq!(
            config_row(&table, key),
            (value.into(), format!("env {variable}")),
            "{table}"
        );
    }
    let table = stdout(&pyti_with(
        &["config", "show", "slave", "--slots", "2", "--mode", "warm"],
        &env,
    ));
    assert_eq!(
        config_row(&table, "slave.slots"),
        ("2".into(), "flag --slots".into())
    );
    assert_eq!(
        config_row(&table, "slave.mode"),
        ("warm".into(), "flag --mode".into())
    );
    // The variables are checked as the flags are.
    for (variable, value, says) in [
        ("PYTI_SLAVE_SLOTS", "0", "must be at least 1"),
        ("PYTI_SLAVE_MODE", "hot", "possible values: warm, cold"),
    ] {
        let out = pyti_with(&["config", "show", "slave"], &[(variable, value)]);
        assert_eq!(out.status.code(), Some(2), "{variable}={value}: {out:?}");
        assert!(stderr(&out).contains(says), "{}", stderr(&out));
    }
}

#[test]
fn the_config_file_is_found_in_xdg_config_home_and_drives_real_commands() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join("pyti")).unwrap();
    let empty = home.path().join("no-recipes-here");
    std::fs::write(
        home.path().join("pyti/config.toml"),
        format!(
            "recipes_dir = {:?}\n[slave]\nslots = 3\n",
            empty.display().to_string()
        ),
    )
    .unwrap();
    let xdg = [("XDG_CONFIG_HOME", home.path().to_str().unwrap())];

    let table = stdout(&pyti_with(&["config", "show"], &xdg));
    let (value, source) = config_row(&table, "slave.slots");
    assert_eq!(value, "3");
    assert!(source.ends_with("pyti/config.toml"), "{table}");

    // `pyti recipes list` looks in the file's recipes_dir; a flag still overrides it.
    let out = pyti_with(&["recipes", "list"], &xdg);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr(&out).contains(&empty.display().to_string()),
        "{}",
        stderr(&out)
    );
    let out = pyti_with(&["recipes", "list", "--recipes-dir", "recipes"], &xdg);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn an_unknown_key_in_the_config_file_is_an_error_naming_key_and_file() {
    let (_dir, file) = config_file("[slave]\nslot = 2\n");
    let out = pyti_with(&["--config", &file, "recipes", "list"], &[]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = stderr(&out);
    assert!(err.contains(&format!("{file}:2:1:")), "{err}");
    assert!(
        err.contains("unknown field `slot`") && err.contains("`slots`"),
        "{err}"
    );
}

#[test]
fn a_bad_value_in_the_config_file_is_an_error_naming_the_key() {
    let (_dir, file) = config_file("[master]\nlease_secs = 1\n");
    let out = pyti_with(&["config", "show"], &[("PYTI_CONFIG", &file)]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{file}:2:14:"))
            && err.contains("`lease_secs` must be between 4 and 86400"),
        "{err}"
    );
}

#[test]
fn a_missing_config_file_given_explicitly_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let missing = missing.to_str().unwrap();
    for out in [
        pyti_with(&["--config", missing, "config", "show"], &[]),
        pyti_with(&["recipes", "list"], &[("PYTI_CONFIG", missing)]),
    ] {
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let err = stderr(&out);
        assert!(
            err.contains(&format!("config file {missing} does not exist")),
            "{err}"
        );
    }
}

#[test]
fn tokens_in_the_config_file_are_masked_and_a_readable_file_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, file) = config_file("[client]\ntoken = \"s3cret-token\"\n");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = pyti_with(&["--config", &file, "config", "show", "client"], &[]);
    assert!(out.status.success(), "{out:?}");
    let table = stdout(&out);
    assert!(!table.contains("s3cret"), "{table}");
    assert_eq!(config_row(&table, "client.token").1, format!("file {file}"));
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = pyti_with(&["--config", &file, "config", "show", "client"], &[]);
    assert!(out.status.success(), "{out:?}");
    assert!(!stderr(&out).contains("chmod"), "{}", stderr(&out));
}

#[test]
fn token_list_shows_the_active_tokens_and_all_adds_the_revoked_ones() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("master.db").display());
    for name in ["keeper", "gone"] {
        let out = pyti(&[
            "master",
            "token",
            "add",
            name,
            "--role",
            "reader",
            "--database",
            &db,
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = pyti(&["master", "token", "revoke", "gone", "--database", &db]);
    assert!(out.status.success(), "{}", stderr(&out));

    let out = pyti(&["master", "token", "list", "--database", &db]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(table.contains("keeper"), "{table}");
    assert!(
        !table.contains("gone") && !table.contains("revoked"),
        "{table}"
    );
    assert!(
        stderr(&out).contains("1 revoked token(s) not shown (--all lists them)"),
        "{}",
        stderr(&out)
    );

    let out = pyti(&["master", "token", "list", "--all", "--database", &db]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    assert!(
        table.contains("keeper") && table.contains("gone") && table.contains("revoked"),
        "{table}"
    );
    assert!(!stderr(&out).contains("not shown"), "{}", stderr(&out));
}
