//! `pyti recipes check`'s engine: every kind of recipe mistake is reported at the line and column
//! a person would fix, several per file when several things are wrong.
//!
//! Most cases start from [`VALID`] and replace one numbered line, so the expected position can be
//! read straight off the test. Whole malformed files live in `tests/fixtures/recipes/`.

use pyti_wire::limits::{MAX_RECIPE_FILE_BYTES, MAX_STEPS, MAX_STEP_NAME_CHARS};
use pyti_wire::recipe::{Accel, GuestTool, Recipe, RecipeDiagnostic, RecipeError};
use std::path::{Path, PathBuf};

/// A minimal valid recipe. Line numbers, for reading the tests:
const VALID: &str = r#"format = 1
description = "test recipe"
[guest]
distribution = "debian-12"
packages = ["python3", "python3-venv"]
[vm]
memory_mib = 1024
vcpus = 1
accel = "auto"
[python]
interpreter = "/usr/bin/python3"
venv = "/opt/pyti/venv"
[[prepare]]
name = "venv"
run = "{interpreter} -m venv {venv}"
timeout = 300
[[steps]]
name = "install"
run = "{python} -m pip install {package}"
timeout = 900
"#;
//   1 format            6 [vm]              11 interpreter      16 timeout
//   2 description       7 memory_mib        12 venv             17 [[steps]]
//   3 [guest]           8 vcpus             13 [[prepare]]      18 name
//   4 distribution      9 accel             14 name             19 run
//   5 packages         10 [python]          15 run              20 timeout

/// [`VALID`] with the given 1-based lines replaced (an empty replacement deletes the line).
fn with_lines(replacements: &[(usize, &str)]) -> String {
    let mut out = String::new();
    for (index, line) in VALID.lines().enumerate() {
        match replacements.iter().find(|(n, _)| *n == index + 1) {
            Some((_, "")) => {}
            Some((_, new)) => {
                out.push_str(new);
                out.push('\n');
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

fn with_line(line: usize, replacement: &str) -> String {
    with_lines(&[(line, replacement)])
}

fn check(text: &str) -> Vec<RecipeDiagnostic> {
    match Recipe::parse(Path::new("recipes/test-recipe.toml"), text) {
        Ok(recipe) => panic!("expected diagnostics, the recipe was accepted: {recipe:?}"),
        Err(diagnostics) => diagnostics,
    }
}

/// Asserts exactly these diagnostics, in order: (line, column, a phrase of the message).
#[track_caller]
fn assert_diagnostics(diagnostics: &[RecipeDiagnostic], expected: &[(usize, usize, &str)]) {
    let shown = diagnostics
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        diagnostics.len(),
        expected.len(),
        "wrong number of diagnostics:\n{shown}"
    );
    for (d, (line, column, phrase)) in diagnostics.iter().zip(expected) {
        assert_eq!(
            (d.line, d.column),
            (*line, *column),
            "wrong position for {phrase:?}:\n{shown}"
        );
        assert!(
            d.message.contains(phrase),
            "message {:?} lacks {phrase:?}:\n{shown}",
            d.message
        );
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/recipes")
        .join(name)
}

fn load_diagnostics(path: &Path) -> Vec<RecipeDiagnostic> {
    match Recipe::load(path) {
        Ok(recipe) => panic!("expected diagnostics, the recipe was accepted: {recipe:?}"),
        Err(RecipeError::Invalid(diagnostics)) => diagnostics,
        Err(other) => panic!("expected diagnostics, got {other}"),
    }
}

#[test]
fn shipped_debian_12_recipe_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes/debian-12.toml");
    let recipe = Recipe::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(recipe.name, "debian-12");
    assert_eq!(recipe.prepare.len(), 1);
    assert_eq!(recipe.steps.len(), 3);
    assert!(recipe.steps.iter().all(|s| s.fails_task));
    // The install step runs the uv the image has.
    assert_eq!(recipe.guest.tools, vec![GuestTool::Uv]);
    assert!(recipe.steps[0].run.contains(GuestTool::Uv.guest_path()));
    // The multi-line `import` script survives intact.
    assert!(recipe.steps[1]
        .run
        .contains("importlib.import_module(name)"));
}

#[test]
fn valid_recipe_parses_with_defaults() {
    let recipe = Recipe::parse(Path::new("recipes/test-recipe.toml"), VALID)
        .unwrap_or_else(|d| panic!("{d:?}"));
    assert_eq!(recipe.name, "test-recipe");
    assert_eq!(recipe.vm.memory_mib, 1024);
    assert_eq!(recipe.steps[0].timeout_secs, 900);
    assert!(recipe.steps[0].fails_task, "fails_task defaults to true");

    let minimal = with_lines(&[(5, ""), (9, ""), (13, ""), (14, ""), (15, ""), (16, "")]);
    let recipe =
        Recipe::parse(Path::new("minimal.toml"), &minimal).unwrap_or_else(|d| panic!("{d:?}"));
    assert_eq!(recipe.vm.accel, Accel::Auto, "accel defaults to auto");
    assert!(recipe.guest.packages.is_empty());
    assert!(recipe.guest.tools.is_empty(), "no tools by default");
    assert!(recipe.prepare.is_empty());

    let optional = with_lines(&[
        (9, "accel = \"tcg\""),
        (20, "timeout = 900\nfails_task = false"),
    ]);
    let recipe =
        Recipe::parse(Path::new("optional.toml"), &optional).unwrap_or_else(|d| panic!("{d:?}"));
    assert_eq!(recipe.vm.accel, Accel::Tcg);
    assert!(!recipe.steps[0].fails_task);
}

#[test]
fn diagnostics_print_as_file_line_col_message() {
    let diagnostics = check(&with_line(8, "vcpus = 0"));
    assert_eq!(
        diagnostics[0].to_string(),
        "recipes/test-recipe.toml:8:9: `vcpus` = 0 is out of range; use a value from 1 to 64 vCPUs"
    );
}

#[test]
fn syntax_error_is_reported_at_its_position() {
    let diagnostics = load_diagnostics(&fixture("syntax-error.toml"));
    assert!(!diagnostics.is_empty());
    let first = &diagnostics[0];
    assert_eq!((first.line, first.column), (5, 14), "{first}");
    assert!(first.message.contains("TOML syntax error"), "{first}");
    assert!(
        first.to_string().contains("syntax-error.toml:5:14: "),
        "{first}"
    );

    assert_diagnostics(
        &check(&with_line(2, "description = \"unterminated")),
        &[(2, 28, "TOML syntax error")],
    );
    assert_diagnostics(
        &check(&with_line(8, "vcpus = 1\nvcpus = 2")),
        &[(9, 1, "duplicate key `vcpus`")],
    );
}

#[test]
fn unknown_keys_are_named_with_the_closest_known_key() {
    assert_diagnostics(
        &load_diagnostics(&fixture("unknown-keys.toml")),
        &[
            (
                3,
                1,
                "unknown key `colour` at the top level; remove it (allowed: `format`",
            ),
            (
                10,
                1,
                "unknown key `memory` in [vm]; did you mean `memory_mib`?",
            ),
            (
                21,
                1,
                "unknown key `timout` in [[steps]] #1; did you mean `timeout`?",
            ),
        ],
    );
    // A nested table and a dotted key are unknown keys too.
    assert_diagnostics(
        &check(&with_line(9, "accel = \"auto\"\ncpu.model = \"host\"")),
        &[(10, 1, "unknown key `cpu` in [vm]")],
    );
    assert_diagnostics(
        &check(&with_line(20, "timeout = 900\n[steps.env]\nX = \"1\"")),
        &[(21, 8, "unknown key `env` in [[steps]] #1; remove it")],
    );
}

#[test]
fn wrong_types_say_what_was_expected() {
    assert_diagnostics(
        &check(&with_line(7, "memory_mib = \"1024\"")),
        &[(
            7,
            14,
            "`memory_mib` must be an integer, found string \"1024\"; write the number without quotes",
        )],
    );
    assert_diagnostics(
        &check(&with_line(2, "description = 3")),
        &[(
            2,
            15,
            "`description` must be a string, found integer 3; put the value in double quotes",
        )],
    );
    assert_diagnostics(
        &check(&with_line(20, "timeout = 1.5\nfails_task = \"false\"")),
        &[
            (20, 11, "`timeout` must be an integer, found float 1.5"),
            (
                21,
                14,
                "`fails_task` must be a boolean (`true` or `false`), found string",
            ),
        ],
    );
    assert_diagnostics(
        &check(&with_lines(&[
            (1, "format = 1\nvm = 3"),
            (6, ""),
            (7, ""),
            (8, ""),
            (9, ""),
        ])),
        &[(2, 6, "`vm` must be a table")],
    );
    assert_diagnostics(
        &check(&with_line(17, "[steps]")),
        &[(17, 1, "`steps` must be an array of tables (write each step under its own `[[steps]]` header), found a table")],
    );
    // An inline table is a table too: a missing key points at its opening brace.
    assert_diagnostics(
        &check(&with_lines(&[
            (1, "format = 1\nvm = { memory_mib = 1024 }"),
            (6, ""),
            (7, ""),
            (8, ""),
            (9, ""),
        ])),
        &[(2, 6, "missing `vcpus` in [vm]")],
    );
    assert_diagnostics(
        &check(&with_line(5, "packages = \"python3\"")),
        &[(
            5,
            12,
            "`packages` must be an array of package names, found string",
        )],
    );
    assert_diagnostics(
        &check(&with_line(5, "packages = [\"python3\", 3]")),
        &[(5, 24, "`packages entry` must be a string, found integer 3")],
    );
}

#[test]
fn missing_fields_point_at_the_table_that_lacks_them() {
    assert_diagnostics(
        &check(&with_line(20, "")),
        &[(
            17,
            1,
            "missing `timeout` in [[steps]] #1; add `timeout = 600` (seconds)",
        )],
    );
    assert_diagnostics(
        &check(&with_line(11, "")),
        &[(10, 1, "missing `interpreter` in [python]")],
    );
    assert_diagnostics(
        &check(&with_lines(&[(2, ""), (10, ""), (11, ""), (12, "")])),
        &[
            (1, 1, "missing `description` at the top level"),
            (
                1,
                1,
                "missing `python` at the top level; add a `[python]` section",
            ),
        ],
    );
    assert_diagnostics(
        &check(&with_lines(&[(17, ""), (18, ""), (19, ""), (20, "")])),
        &[(1, 1, "missing `steps` at the top level")],
    );
}

#[test]
fn bad_templates_point_at_the_placeholder() {
    assert_diagnostics(
        &check(&with_line(
            19,
            r#"run = "{python} -m pip install {pakage} }""#,
        )),
        &[
            (
                19,
                32,
                "unknown placeholder `{pakage}` in `run`; did you mean `{package}`?",
            ),
            (19, 41, "lone `}`"),
        ],
    );
    assert_diagnostics(
        &check(&with_line(19, r#"run = "echo {} {python""#)),
        &[(19, 13, "empty placeholder"), (19, 16, "never closed")],
    );
    assert_diagnostics(
        &check(&with_line(19, r#"run = "  ""#)),
        &[(19, 7, "`run` is empty")],
    );
}

#[test]
fn template_positions_survive_escapes_and_multiline_strings() {
    assert_diagnostics(
        &load_diagnostics(&fixture("escaped-template.toml")),
        &[
            (17, 23, "unknown placeholder `{nope}`"),
            (
                26,
                6,
                "`{wheelhose}` in `run`; did you mean `{wheelhouse}`?",
            ),
            (31, 16, "`{dst}` in `run`; did you mean `{dist}`?"),
        ],
    );
}

#[test]
fn prepare_steps_may_use_only_image_time_placeholders() {
    let text = with_line(
        15,
        r#"run = "{interpreter} -m venv {venv} && echo {package} {workdir}""#,
    );
    assert_diagnostics(
        &check(&text),
        &[
            (15, 45, "`{package}` has no value in a `[[prepare]]` step"),
            (15, 55, "`{workdir}` has no value in a `[[prepare]]` step"),
        ],
    );
    let message = &check(&text)[0].message;
    assert!(
        message.contains("{interpreter}, {venv}, {python}"),
        "{message}"
    );
    assert!(
        message.contains("move this command to `[[steps]]`"),
        "{message}"
    );
}

#[test]
fn memory_out_of_range() {
    for bad in ["100", "65537", "-1", "99999999999999999999"] {
        assert_diagnostics(
            &check(&with_line(7, &format!("memory_mib = {bad}"))),
            &[(7, 14, "use a value from 256 to 65536 MiB")],
        );
    }
}

#[test]
fn vcpus_out_of_range() {
    for bad in ["0", "65"] {
        assert_diagnostics(
            &check(&with_line(8, &format!("vcpus = {bad}"))),
            &[(8, 9, "use a value from 1 to 64 vCPUs")],
        );
    }
}

#[test]
fn timeout_out_of_range() {
    for bad in ["0", "21601"] {
        assert_diagnostics(
            &check(&with_line(16, &format!("timeout = {bad}"))),
            &[(16, 11, "use a value from 1 to 21600 seconds")],
        );
    }
}

#[test]
fn too_many_steps() {
    let mut text = VALID.to_string();
    for n in 0..MAX_STEPS {
        text.push_str(&format!(
            "[[steps]]\nname = \"s{n}\"\nrun = \"true\"\ntimeout = 1\n"
        ));
    }
    // Step MAX_STEPS + 1 is the last one appended: 20 base lines, 4 lines per step.
    let header = 20 + 4 * (MAX_STEPS - 1) + 1;
    assert_eq!(header, 145);
    assert_diagnostics(
        &check(&text),
        &[(header, 1, "more than 32 `[[steps]]` sections")],
    );
}

#[test]
fn empty_steps() {
    let text = with_lines(&[
        (2, "description = \"test recipe\"\nsteps = []"),
        (17, ""),
        (18, ""),
        (19, ""),
        (20, ""),
    ]);
    assert_diagnostics(&check(&text), &[(3, 9, "`steps` is empty")]);
}

#[test]
fn step_names_are_short_plain_and_unique() {
    assert_diagnostics(
        &check(&with_line(18, "name = \"\"")),
        &[(18, 8, "step name must be 1 to 64 characters long, found 0")],
    );
    let long = "x".repeat(MAX_STEP_NAME_CHARS + 1);
    assert_diagnostics(
        &check(&with_line(18, &format!("name = \"{long}\""))),
        &[(18, 8, "found 65")],
    );
    assert_diagnostics(
        &check(&with_line(18, "name = \"Install now\"")),
        &[(18, 8, "contains 'I'; use only a-z, 0-9, `_` and `-`")],
    );
    let duplicate = with_line(
        20,
        "timeout = 900\n[[steps]]\nname = \"install\"\nrun = \"true\"\ntimeout = 5",
    );
    assert_diagnostics(
        &check(&duplicate),
        &[(
            22,
            8,
            "step name `install` is already used in `[[steps]]` (line 18)",
        )],
    );
    // The same name in `prepare` and `steps` is fine: they are separate sections.
    let across = with_line(14, "name = \"install\"");
    Recipe::parse(Path::new("across.toml"), &across).unwrap_or_else(|d| panic!("{d:?}"));
}

#[test]
fn package_names_follow_debian_policy() {
    assert_diagnostics(
        &check(&with_line(
            5,
            r#"packages = ["python3", "Py_thon", "x", "python3"]"#,
        )),
        &[
            (5, 24, "\"Py_thon\" is not a Debian package name"),
            (5, 35, "\"x\" is not a Debian package name"),
            (5, 40, "package `python3` is listed twice"),
        ],
    );
}

#[test]
fn tools_are_the_ones_the_host_supplies_each_once() {
    let recipe = Recipe::parse(
        Path::new("tools.toml"),
        &with_line(
            5,
            r#"packages = ["python3"]
tools = ["uv"]"#,
        ),
    )
    .unwrap_or_else(|d| panic!("{d:?}"));
    assert_eq!(recipe.guest.tools, vec![GuestTool::Uv]);
    assert_diagnostics(
        &check(&with_line(
            5,
            r#"packages = ["python3"]
tools = ["uv", "pipx", "uv"]"#,
        )),
        &[
            (6, 16, "unknown tool \"pipx\"; the host can supply: uv"),
            (6, 24, "tool `uv` is listed twice"),
        ],
    );
    assert_diagnostics(
        &check(&with_line(
            5,
            r#"packages = ["python3"]
tools = "uv""#,
        )),
        &[(6, 9, "an array of tool names")],
    );
}

#[test]
fn accel_must_be_auto_kvm_or_tcg() {
    assert_diagnostics(
        &check(&with_line(9, "accel = \"KVM\"")),
        &[(9, 9, "unknown accel \"KVM\"; did you mean `kvm`?")],
    );
    assert_diagnostics(
        &check(&with_line(9, "accel = \"fast\"")),
        &[(9, 9, "unknown accel \"fast\"; use \"auto\"")],
    );
}

#[test]
fn format_must_be_the_supported_one() {
    assert_diagnostics(
        &check(&with_line(1, "format = 2")),
        &[(
            1,
            10,
            "recipe format 2 is not supported: this pyti reads format 1",
        )],
    );
}

#[test]
fn interpreter_and_venv_must_be_absolute_paths() {
    assert_diagnostics(
        &check(&with_lines(&[
            (11, "interpreter = \"python3\""),
            (12, "venv = \"opt/venv\""),
        ])),
        &[
            (
                11,
                15,
                "`interpreter` = \"python3\" must be an absolute path",
            ),
            (12, 8, "`venv` = \"opt/venv\" must be an absolute path"),
        ],
    );
}

#[test]
fn recipe_name_comes_from_a_plain_file_name() {
    let diagnostics = Recipe::parse(Path::new("recipes/Debian_12.toml"), VALID).unwrap_err();
    assert_diagnostics(
        &diagnostics,
        &[(
            1,
            1,
            "recipe name `Debian_12` (the file name without `.toml`)",
        )],
    );
}

#[test]
fn oversized_file_is_refused_before_parsing() {
    let mut text = VALID.to_string();
    text.push_str(&"#".repeat(MAX_RECIPE_FILE_BYTES as usize));
    assert_diagnostics(&check(&text), &[(1, 1, "larger than 262144 bytes")]);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.toml");
    std::fs::write(&path, &text).unwrap();
    assert_diagnostics(
        &load_diagnostics(&path),
        &[(1, 1, "larger than 262144 bytes")],
    );
}

#[test]
fn non_utf8_file_is_reported_where_the_bad_byte_is() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latin1.toml");
    std::fs::write(&path, b"format = 1\ndescription = \"caf\xe9\"\n").unwrap();
    assert_diagnostics(&load_diagnostics(&path), &[(2, 19, "not valid UTF-8")]);
    assert!(matches!(
        Recipe::load(&dir.path().join("absent.toml")),
        Err(RecipeError::Read { .. })
    ));
}

#[test]
fn several_mistakes_in_one_file_are_all_reported_in_order() {
    assert_diagnostics(
        &load_diagnostics(&fixture("several-mistakes.toml")),
        &[
            (6, 24, "\"Python3-Venv\" is not a Debian package name"),
            (
                9,
                14,
                "`memory_mib` must be an integer, found string \"1024\"",
            ),
            (10, 9, "`vcpus` = 0 is out of range"),
            (11, 9, "unknown accel \"kvmm\"; did you mean `kvm`?"),
            (13, 1, "missing `venv` in [python]"),
            (
                14,
                15,
                "`interpreter` = \"usr/bin/python3\" must be an absolute path",
            ),
            (18, 64, "`{package}` has no value in a `[[prepare]]` step"),
            (23, 32, "unknown placeholder `{pakage}`"),
            (
                24,
                1,
                "unknown key `timout` in [[steps]] #1; did you mean `timeout`?",
            ),
            (
                27,
                8,
                "step name `install` is already used in `[[steps]]` (line 22)",
            ),
            (28, 29, "lone `}`"),
            (29, 11, "`timeout` = 0 is out of range"),
        ],
    );
}
