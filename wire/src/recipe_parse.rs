//! Recipe validation that reports every mistake, each at a position a person can jump to.
//!
//! The TOML is parsed into a spanned tree ([`toml::de::DeTable`]) and walked by hand rather than
//! deserialized with serde: serde stops at the first mistake, and a recipe author fixing a file
//! wants the whole list at once. Each check records a byte offset in the file; offsets become
//! 1-based `line:column` (column in characters) only when the diagnostics are sorted and emitted.
//!
//! When the TOML itself is malformed only the syntax errors are reported: the recovered tree is a
//! guess, and checking a guess would invent mistakes the author never made.

use crate::limits::{
    MAX_COMMAND_BYTES, MAX_GUEST_MEMORY_MIB, MAX_GUEST_PACKAGES, MAX_GUEST_VCPUS,
    MAX_RECIPE_FILE_BYTES, MAX_STEPS, MAX_STEP_NAME_CHARS, MAX_STEP_TIMEOUT_SECS,
    MIN_GUEST_MEMORY_MIB, MIN_STEP_TIMEOUT_SECS,
};
use crate::recipe::{
    Accel, GuestSpec, GuestTool, PythonSpec, Recipe, RecipeDiagnostic, RecipeError, StepSpec,
    VmResources, RECIPE_FORMAT,
};
use crate::template::{Placeholder, Template, TemplateError};
use std::io::Read;
use std::ops::RangeInclusive;
use std::path::Path;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

type Value<'i> = Spanned<DeValue<'i>>;

pub(crate) fn load(path: &Path) -> Result<Recipe, RecipeError> {
    let read_error = |source| RecipeError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    // Read at most one byte past the limit: enough to know the file is too big, never more.
    let mut bytes = Vec::new();
    file.take(MAX_RECIPE_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_RECIPE_FILE_BYTES {
        return Err(RecipeError::Invalid(vec![diagnostic(
            path,
            1,
            1,
            too_large_message(),
        )]));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        // The prefix is valid UTF-8 by definition; fall back to 1:1 rather than trust that blindly.
        let (line, column) = std::str::from_utf8(valid)
            .map(|prefix| line_col(prefix, prefix.len()))
            .unwrap_or((1, 1));
        RecipeError::Invalid(vec![diagnostic(
            path,
            line,
            column,
            "the file is not valid UTF-8 here; TOML files must be UTF-8 (re-save it as UTF-8)"
                .to_string(),
        )])
    })?;
    parse(path, &text).map_err(RecipeError::Invalid)
}

pub(crate) fn parse(file: &Path, text: &str) -> Result<Recipe, Vec<RecipeDiagnostic>> {
    let mut checker = Checker {
        text,
        found: Vec::new(),
    };
    let recipe = checker.recipe(file);
    let mut found = checker.found;
    found.sort();
    found.dedup();
    let diagnostics: Vec<RecipeDiagnostic> = found
        .into_iter()
        .map(|(offset, message)| {
            let (line, column) = line_col(text, offset);
            diagnostic(file, line, column, message)
        })
        .collect();
    match recipe {
        Some(recipe) if diagnostics.is_empty() => Ok(recipe),
        _ if !diagnostics.is_empty() => Err(diagnostics),
        // Every path that yields no recipe records why; this is a last line of defence.
        _ => Err(vec![diagnostic(
            file,
            1,
            1,
            "recipe rejected without a specific reason (a pyti bug; please report it)".to_string(),
        )]),
    }
}

fn diagnostic(file: &Path, line: usize, column: usize, message: String) -> RecipeDiagnostic {
    RecipeDiagnostic {
        file: file.to_path_buf(),
        line,
        column,
        message,
    }
}

fn too_large_message() -> String {
    format!(
        "recipe file is larger than {MAX_RECIPE_FILE_BYTES} bytes; a recipe lists a few short \
         steps, so move long scripts into the guest image or the package's own tests"
    )
}

/// One key a recipe table may hold, and what to write when it is missing.
struct Field {
    key: &'static str,
    /// `None` for optional keys; otherwise what to add, shown in the "missing" diagnostic.
    missing_hint: Option<&'static str>,
}

const fn required(key: &'static str, hint: &'static str) -> Field {
    Field {
        key,
        missing_hint: Some(hint),
    }
}

const fn optional(key: &'static str) -> Field {
    Field {
        key,
        missing_hint: None,
    }
}

const TOP_FIELDS: &[Field] = &[
    required("format", "`format = 1`"),
    required(
        "description",
        "`description = \"...\"` (one line for `pyti recipes list`)",
    ),
    required(
        "guest",
        "a `[guest]` section with `distribution` and `packages`",
    ),
    required("vm", "a `[vm]` section with `memory_mib` and `vcpus`"),
    required(
        "python",
        "a `[python]` section with `interpreter` and `venv`",
    ),
    optional("prepare"),
    required(
        "steps",
        "at least one `[[steps]]` section with `name`, `run` and `timeout`",
    ),
];

const GUEST_FIELDS: &[Field] = &[
    required("distribution", "`distribution = \"debian-12\"`"),
    optional("packages"),
    optional("tools"),
];

const VM_FIELDS: &[Field] = &[
    required("memory_mib", "`memory_mib = 1024` (guest memory in MiB)"),
    required("vcpus", "`vcpus = 1`"),
    optional("accel"),
];

const PYTHON_FIELDS: &[Field] = &[
    required(
        "interpreter",
        "`interpreter = \"/usr/bin/python3\"` (absolute path in the guest)",
    ),
    required(
        "venv",
        "`venv = \"/opt/pyti/venv\"` (absolute path in the guest)",
    ),
];

const STEP_FIELDS: &[Field] = &[
    required("name", "`name = \"...\"` (a-z, 0-9, `_`, `-`)"),
    required(
        "run",
        "`run = \"...\"` (the shell command, with `{placeholders}`)",
    ),
    required("timeout", "`timeout = 600` (seconds)"),
    optional("fails_task"),
];

/// A table being checked, with what to call it in messages.
struct Section<'a, 'i> {
    table: &'a DeTable<'i>,
    /// Where "missing key" diagnostics point: the table's header or opening brace.
    at: usize,
    /// "at the top level", "in [vm]", "in [[steps]] #2".
    place: String,
    fields: &'static [Field],
}

/// The two lists of steps a recipe holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum StepList {
    Prepare,
    Steps,
}

impl StepList {
    fn key(self) -> &'static str {
        match self {
            StepList::Prepare => "prepare",
            StepList::Steps => "steps",
        }
    }
}

/// Walks one recipe's tree and collects `(byte offset, message)` for every mistake.
struct Checker<'i> {
    text: &'i str,
    found: Vec<(usize, String)>,
}

impl<'i> Checker<'i> {
    fn report(&mut self, offset: usize, message: impl Into<String>) {
        self.found.push((offset, message.into()));
    }

    fn recipe(&mut self, file: &Path) -> Option<Recipe> {
        let name = self.recipe_name(file);
        if self.text.len() as u64 > MAX_RECIPE_FILE_BYTES {
            self.report(0, too_large_message());
            return None;
        }
        let (document, errors) = DeTable::parse_recoverable(self.text);
        if !errors.is_empty() {
            for error in errors {
                self.syntax_error(&error);
            }
            return None;
        }
        let root = Section {
            table: document.get_ref(),
            at: 0,
            place: "at the top level".to_string(),
            fields: TOP_FIELDS,
        };
        self.unknown_keys(&root);

        let format = self.field(&root, "format").and_then(|v| self.format(v));
        let description = self
            .field(&root, "description")
            .and_then(|v| self.description(v));
        let guest = self.field(&root, "guest").and_then(|v| self.guest(v));
        let vm = self.field(&root, "vm").and_then(|v| self.vm(v));
        let python = self.field(&root, "python").and_then(|v| self.python(v));
        let prepare = match self.field(&root, "prepare") {
            Some(v) => self.step_list(v, StepList::Prepare),
            None => Some(Vec::new()),
        };
        let steps = self
            .field(&root, "steps")
            .and_then(|v| self.step_list(v, StepList::Steps));
        format?;
        Some(Recipe {
            name: name?,
            description: description?,
            guest: guest?,
            vm: vm?,
            python: python?,
            prepare: prepare?,
            steps: steps?,
        })
    }

    /// The recipe's name is its file stem; it names images and log lines, so it is kept plain.
    fn recipe_name(&mut self, file: &Path) -> Option<String> {
        let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned());
        match stem {
            Some(stem) if is_plain_name(&stem) => Some(stem),
            stem => {
                self.report(
                    0,
                    format!(
                        "recipe name `{}` (the file name without `.toml`) must start with a-z or \
                         0-9 and contain only a-z, 0-9, `.`, `_`, `-`; rename the file, e.g. \
                         `debian-12.toml`",
                        stem.unwrap_or_default()
                    ),
                );
                None
            }
        }
    }

    fn syntax_error(&mut self, error: &toml::de::Error) {
        let span = error.span().unwrap_or(0..0);
        let message = if error.message() == "duplicate key" {
            let key = self.text.get(span.clone()).unwrap_or("");
            format!(
                "duplicate key `{key}`: each key and each [section] may appear only once; \
                 remove or rename one of them"
            )
        } else {
            format!(
                "TOML syntax error: {}; fix the syntax here (see https://toml.io)",
                error.message()
            )
        };
        self.report(span.start, message);
    }

    /// Reports every key of `section` that is not one of its fields.
    fn unknown_keys(&mut self, section: &Section<'_, 'i>) {
        for (key, _) in section.table.iter() {
            let name: &str = key.get_ref();
            if section.fields.iter().any(|f| f.key == name) {
                continue;
            }
            let allowed = section
                .fields
                .iter()
                .map(|f| format!("`{}`", f.key))
                .collect::<Vec<_>>()
                .join(", ");
            let message = match closest(name, section.fields.iter().map(|f| f.key)) {
                Some(guess) => format!(
                    "unknown key `{name}` {}; did you mean `{guess}`? (allowed: {allowed})",
                    section.place
                ),
                None => format!(
                    "unknown key `{name}` {}; remove it (allowed: {allowed})",
                    section.place
                ),
            };
            self.report(key.span().start, message);
        }
    }

    /// Looks `key` up in `section`, reporting it at the section when it is required and absent.
    fn field<'a>(&mut self, section: &Section<'a, 'i>, key: &str) -> Option<&'a Value<'i>> {
        let found = section
            .table
            .iter()
            .find(|(k, _)| {
                let name: &str = k.get_ref();
                name == key
            })
            .map(|(_, v)| v);
        if found.is_none() {
            let hint = section
                .fields
                .iter()
                .find(|f| f.key == key)
                .and_then(|f| f.missing_hint);
            // A misspelt key (`timout`) is already reported with "did you mean `timeout`?";
            // saying `timeout` is missing too would be the same mistake twice.
            let misspelt = section.table.iter().any(|(k, _)| {
                let name: &str = k.get_ref();
                !section.fields.iter().any(|f| f.key == name)
                    && closest(name, section.fields.iter().map(|f| f.key)) == Some(key)
            });
            if let (Some(hint), false) = (hint, misspelt) {
                self.report(
                    section.at,
                    format!("missing `{key}` {}; add {hint}", section.place),
                );
            }
        }
        found
    }

    /// Opens a value that must be a table and reports its unknown keys.
    fn section<'a>(
        &mut self,
        value: &'a Value<'i>,
        key: &str,
        label: String,
        fields: &'static [Field],
    ) -> Option<Section<'a, 'i>> {
        let DeValue::Table(table) = value.get_ref() else {
            self.wrong_type(value, key, "a table (a `[section]`)");
            return None;
        };
        let section = Section {
            table,
            at: value.span().start,
            place: format!("in {label}"),
            fields,
        };
        self.unknown_keys(&section);
        Some(section)
    }

    fn wrong_type(&mut self, value: &Value<'i>, key: &str, expected: &str) {
        let found = value.get_ref();
        let hint = match found {
            DeValue::String(s)
                if expected.contains("integer") && s.trim().parse::<i128>().is_ok() =>
            {
                "; write the number without quotes"
            }
            DeValue::String(s)
                if expected.contains("boolean") && matches!(s.as_ref(), "true" | "false") =>
            {
                "; write `true` or `false` without quotes"
            }
            DeValue::String(_) => "",
            _ if expected.contains("string") => "; put the value in double quotes",
            _ => "",
        };
        self.report(
            value.span().start,
            format!(
                "`{key}` must be {expected}, found {}{hint}",
                describe(found)
            ),
        );
    }

    fn string<'a>(&mut self, value: &'a Value<'i>, key: &str) -> Option<&'a str> {
        match value.get_ref() {
            DeValue::String(s) => Some(s.as_ref()),
            _ => {
                self.wrong_type(value, key, "a string");
                None
            }
        }
    }

    fn integer(
        &mut self,
        value: &Value<'i>,
        key: &str,
        range: RangeInclusive<u64>,
        unit: &str,
    ) -> Option<u64> {
        let DeValue::Integer(integer) = value.get_ref() else {
            self.wrong_type(value, key, "an integer");
            return None;
        };
        let parsed = i128::from_str_radix(integer.as_str(), integer.radix())
            .ok()
            .and_then(|n| u64::try_from(n).ok());
        match parsed {
            Some(n) if range.contains(&n) => Some(n),
            _ => {
                self.report(
                    value.span().start,
                    format!(
                        "`{key}` = {integer} is out of range; use a value from {} to {}{unit}",
                        range.start(),
                        range.end()
                    ),
                );
                None
            }
        }
    }

    fn boolean(&mut self, value: &Value<'i>, key: &str) -> Option<bool> {
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong_type(value, key, "a boolean (`true` or `false`)");
                None
            }
        }
    }

    fn format(&mut self, value: &Value<'i>) -> Option<u64> {
        let DeValue::Integer(integer) = value.get_ref() else {
            self.wrong_type(value, "format", "an integer");
            return None;
        };
        let n = i128::from_str_radix(integer.as_str(), integer.radix()).ok();
        if n == Some(i128::from(RECIPE_FORMAT)) {
            Some(RECIPE_FORMAT)
        } else {
            self.report(
                value.span().start,
                format!(
                    "recipe format {integer} is not supported: this pyti reads format \
                     {RECIPE_FORMAT}; write `format = {RECIPE_FORMAT}` and use the keys it \
                     documents, or upgrade pyti"
                ),
            );
            None
        }
    }

    fn description(&mut self, value: &Value<'i>) -> Option<String> {
        let text = self.string(value, "description")?;
        if text.trim().is_empty() {
            self.report(
                value.span().start,
                "`description` is empty; write one line naming the distribution and Python",
            );
            None
        } else if text.contains(['\n', '\r']) {
            self.report(
                value.span().start,
                "`description` must be a single line (it is one row of `pyti recipes list`)",
            );
            None
        } else {
            Some(text.to_string())
        }
    }

    fn guest(&mut self, value: &Value<'i>) -> Option<GuestSpec> {
        let section = self.section(value, "guest", "[guest]".into(), GUEST_FIELDS)?;
        let distribution = self
            .field(&section, "distribution")
            .and_then(|v| self.distribution(v));
        let packages = match self.field(&section, "packages") {
            Some(v) => self.packages(v),
            None => Some(Vec::new()),
        };
        let tools = match self.field(&section, "tools") {
            Some(v) => self.tools(v),
            None => Some(Vec::new()),
        };
        Some(GuestSpec {
            distribution: distribution?,
            packages: packages?,
            tools: tools?,
        })
    }

    fn tools(&mut self, value: &Value<'i>) -> Option<Vec<GuestTool>> {
        let DeValue::Array(items) = value.get_ref() else {
            self.wrong_type(value, "tools", "an array of tool names");
            return None;
        };
        let mut ok = true;
        let mut tools: Vec<GuestTool> = Vec::new();
        for item in items.iter() {
            let Some(name) = self.string(item, "tools entry") else {
                ok = false;
                continue;
            };
            match GuestTool::ALL.iter().find(|t| t.name() == name) {
                Some(tool) if tools.contains(tool) => {
                    self.report(
                        item.span().start,
                        format!("tool `{name}` is listed twice; remove one"),
                    );
                    ok = false;
                }
                Some(tool) => tools.push(*tool),
                None => {
                    let known: Vec<&str> = GuestTool::ALL.iter().map(|t| t.name()).collect();
                    self.report(
                        item.span().start,
                        format!(
                            "unknown tool {name:?}; the host can supply: {}",
                            known.join(", ")
                        ),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(tools)
    }

    fn distribution(&mut self, value: &Value<'i>) -> Option<String> {
        let name = self.string(value, "distribution")?;
        if is_plain_name(name) {
            Some(name.to_string())
        } else {
            self.report(
                value.span().start,
                format!(
                    "`distribution` = {name:?} is not a distribution name; write it like \
                     `debian-12` (a-z, 0-9, `.`, `_`, `-`)"
                ),
            );
            None
        }
    }

    fn packages(&mut self, value: &Value<'i>) -> Option<Vec<String>> {
        let DeValue::Array(items) = value.get_ref() else {
            self.wrong_type(value, "packages", "an array of package names");
            return None;
        };
        let mut ok = true;
        if items.len() > MAX_GUEST_PACKAGES {
            self.report(
                items[MAX_GUEST_PACKAGES].span().start,
                format!(
                    "more than {MAX_GUEST_PACKAGES} packages; list only what the steps need \
                     (dependencies are pulled in automatically)"
                ),
            );
            ok = false;
        }
        let mut packages: Vec<String> = Vec::new();
        for item in items.iter() {
            let Some(name) = self.string(item, "packages entry") else {
                ok = false;
                continue;
            };
            if !is_debian_package_name(name) {
                self.report(
                    item.span().start,
                    format!(
                        "{name:?} is not a Debian package name: use at least two characters of \
                         a-z, 0-9, `+`, `-`, `.`, starting with a letter or digit (e.g. \
                         `python3-venv`)"
                    ),
                );
                ok = false;
            } else if packages.iter().any(|p| p == name) {
                self.report(
                    item.span().start,
                    format!("package `{name}` is listed twice; remove one"),
                );
                ok = false;
            } else {
                packages.push(name.to_string());
            }
        }
        ok.then_some(packages)
    }

    fn vm(&mut self, value: &Value<'i>) -> Option<VmResources> {
        let section = self.section(value, "vm", "[vm]".into(), VM_FIELDS)?;
        let memory_mib = self.field(&section, "memory_mib").and_then(|v| {
            self.integer(
                v,
                "memory_mib",
                MIN_GUEST_MEMORY_MIB..=MAX_GUEST_MEMORY_MIB,
                " MiB",
            )
        });
        let vcpus = self
            .field(&section, "vcpus")
            .and_then(|v| self.integer(v, "vcpus", 1..=MAX_GUEST_VCPUS, " vCPUs"));
        let accel = match self.field(&section, "accel") {
            Some(v) => self.accel(v),
            None => Some(Accel::Auto),
        };
        Some(VmResources {
            memory_mib: memory_mib?,
            vcpus: vcpus?,
            accel: accel?,
        })
    }

    fn accel(&mut self, value: &Value<'i>) -> Option<Accel> {
        let name = self.string(value, "accel")?;
        match name {
            "auto" => Some(Accel::Auto),
            "kvm" => Some(Accel::Kvm),
            "tcg" => Some(Accel::Tcg),
            _ => {
                let guess = closest(name, ["auto", "kvm", "tcg"])
                    .map(|g| format!("did you mean `{g}`? "))
                    .unwrap_or_default();
                self.report(
                    value.span().start,
                    format!(
                        "unknown accel {name:?}; {guess}use \"auto\" (KVM when it works, else \
                         TCG), \"kvm\" or \"tcg\""
                    ),
                );
                None
            }
        }
    }

    fn python(&mut self, value: &Value<'i>) -> Option<PythonSpec> {
        let section = self.section(value, "python", "[python]".into(), PYTHON_FIELDS)?;
        let interpreter = self
            .field(&section, "interpreter")
            .and_then(|v| self.absolute_path(v, "interpreter"));
        let venv = self
            .field(&section, "venv")
            .and_then(|v| self.absolute_path(v, "venv"));
        Some(PythonSpec {
            interpreter: interpreter?,
            venv: venv?,
        })
    }

    fn absolute_path(&mut self, value: &Value<'i>, key: &str) -> Option<String> {
        let path = self.string(value, key)?;
        if !path.starts_with('/') {
            self.report(
                value.span().start,
                format!(
                    "`{key}` = {path:?} must be an absolute path in the guest, starting with `/`"
                ),
            );
            None
        } else if path.chars().any(char::is_control) {
            self.report(
                value.span().start,
                format!("`{key}` contains a control character; write a plain absolute path"),
            );
            None
        } else {
            Some(path.to_string())
        }
    }

    fn step_list(&mut self, value: &Value<'i>, list: StepList) -> Option<Vec<StepSpec>> {
        let key = list.key();
        let DeValue::Array(items) = value.get_ref() else {
            self.wrong_type(
                value,
                key,
                &format!("an array of tables (write each step under its own `[[{key}]]` header)"),
            );
            return None;
        };
        if list == StepList::Steps && items.is_empty() {
            self.report(
                value.span().start,
                "`steps` is empty; add at least one `[[steps]]` section with `name`, `run` and \
                 `timeout`",
            );
            return None;
        }
        let mut ok = true;
        if items.len() > MAX_STEPS {
            self.report(
                items[MAX_STEPS].span().start,
                format!(
                    "more than {MAX_STEPS} `[[{key}]]` sections; merge steps (a recipe describes \
                     a few phases, not a script)"
                ),
            );
            ok = false;
        }
        let mut names: Vec<(String, usize)> = Vec::new();
        let mut steps = Vec::new();
        for (index, item) in items.iter().enumerate() {
            match self.step(item, list, index + 1, &mut names) {
                Some(step) => steps.push(step),
                None => ok = false,
            }
        }
        ok.then_some(steps)
    }

    fn step(
        &mut self,
        value: &Value<'i>,
        list: StepList,
        number: usize,
        names: &mut Vec<(String, usize)>,
    ) -> Option<StepSpec> {
        let label = format!("[[{}]] #{number}", list.key());
        let section = self.section(value, list.key(), label, STEP_FIELDS)?;
        let name = self
            .field(&section, "name")
            .and_then(|v| self.step_name(v, list, names));
        let run = self
            .field(&section, "run")
            .and_then(|v| self.command(v, list));
        let timeout_secs = self.field(&section, "timeout").and_then(|v| {
            self.integer(
                v,
                "timeout",
                MIN_STEP_TIMEOUT_SECS..=MAX_STEP_TIMEOUT_SECS,
                " seconds",
            )
        });
        let fails_task = match self.field(&section, "fails_task") {
            Some(v) => self.boolean(v, "fails_task"),
            None => Some(true),
        };
        Some(StepSpec {
            name: name?,
            run: run?,
            timeout_secs: timeout_secs?,
            fails_task: fails_task?,
        })
    }

    fn step_name(
        &mut self,
        value: &Value<'i>,
        list: StepList,
        names: &mut Vec<(String, usize)>,
    ) -> Option<String> {
        let name = self.string(value, "name")?;
        let at = value.span().start;
        let length = name.chars().count();
        if length == 0 || length > MAX_STEP_NAME_CHARS {
            self.report(
                at,
                format!(
                    "step name must be 1 to {MAX_STEP_NAME_CHARS} characters long, found \
                     {length}; use a short word like `install`"
                ),
            );
            return None;
        }
        if let Some(bad) = name
            .chars()
            .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '_' | '-'))
        {
            self.report(
                at,
                format!(
                    "step name {name:?} contains {bad:?}; use only a-z, 0-9, `_` and `-` (it \
                     names log files and result entries)"
                ),
            );
            return None;
        }
        if let Some((_, first)) = names.iter().find(|(n, _)| n == name) {
            let (line, _) = line_col(self.text, *first);
            self.report(
                at,
                format!(
                    "step name `{name}` is already used in `[[{}]]` (line {line}); give each step \
                     a unique name",
                    list.key()
                ),
            );
            return None;
        }
        names.push((name.to_string(), at));
        Some(name.to_string())
    }

    /// Checks a `run` template: not empty, bounded, valid, and in `prepare` only image-time
    /// placeholders.
    fn command(&mut self, value: &Value<'i>, list: StepList) -> Option<String> {
        let command = self.string(value, "run")?;
        let at = value.span().start;
        if command.trim().is_empty() {
            self.report(at, "`run` is empty; write the shell command this step runs");
            return None;
        }
        if command.len() > MAX_COMMAND_BYTES {
            self.report(
                at,
                format!(
                    "`run` is {} bytes, over the {MAX_COMMAND_BYTES}-byte limit; move the script \
                     into the guest image or the package's tests",
                    command.len()
                ),
            );
            return None;
        }
        let positions = value_offsets(self.text, value.span(), command);
        // Where byte `offset` of the command sits in the file; the value's start when the
        // string's escapes could not be mapped back (the message then quotes the spot).
        let locate = |offset: usize| -> (usize, String) {
            match positions.as_ref().and_then(|p| p.get(offset)) {
                Some(&file_offset) => (file_offset, String::new()),
                None => (at, format!(" (at {:?})", excerpt(command, offset))),
            }
        };
        match Template::parse(command) {
            Err(errors) => {
                for error in errors {
                    let (offset, suffix) = locate(error.offset());
                    let message = match &error {
                        TemplateError::UnknownPlaceholder { name, .. } => {
                            let known = Placeholder::ALL
                                .iter()
                                .map(|p| format!("{{{}}}", p.name()))
                                .collect::<Vec<_>>()
                                .join(", ");
                            let word = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                            if !word {
                                // Braces of shell or Python code (`${x}`, `{a: 1}`), not a typo.
                                let shown = excerpt(name, 0);
                                self.report(
                                    offset,
                                    format!(
                                        "`{{{shown}…` in `run` is read as a placeholder; write \
                                         `{{{{` and `}}}}` for literal braces in shell or Python \
                                         code (placeholders are {known}){suffix}"
                                    ),
                                );
                                continue;
                            }
                            match closest(name, Placeholder::ALL.iter().map(|p| p.name())) {
                                Some(guess) => format!(
                                    "unknown placeholder `{{{name}}}` in `run`; did you mean \
                                     `{{{guess}}}`? (known: {known})"
                                ),
                                None => format!(
                                    "unknown placeholder `{{{name}}}` in `run`; use one of \
                                     {known}, or write `{{{{` and `}}}}` for literal braces"
                                ),
                            }
                        }
                        other => format!("in `run`: {other}"),
                    };
                    self.report(offset, format!("{message}{suffix}"));
                }
                None
            }
            Ok(_) if list == StepList::Prepare => {
                let allowed = Placeholder::ALL
                    .iter()
                    .filter(|p| p.known_at_prepare())
                    .map(|p| format!("{{{}}}", p.name()))
                    .collect::<Vec<_>>()
                    .join(", ");
                let mut ok = true;
                for (offset, name) in holes(command) {
                    let known = Placeholder::from_name(name).is_some_and(|p| p.known_at_prepare());
                    if !known {
                        let (offset, suffix) = locate(offset);
                        self.report(
                            offset,
                            format!(
                                "`{{{name}}}` has no value in a `[[prepare]]` step: prepare runs \
                                 once per guest, before any task; use only {allowed} here, or \
                                 move this command to `[[steps]]`{suffix}"
                            ),
                        );
                        ok = false;
                    }
                }
                ok.then(|| command.to_string())
            }
            Ok(_) => Some(command.to_string()),
        }
    }
}

/// A few characters of `text` from byte `offset`, to quote in a message.
fn excerpt(text: &str, offset: usize) -> String {
    text.get(offset..).unwrap_or("").chars().take(16).collect()
}

/// The `{name}` placeholders of a valid template, with their byte offsets (`{{`, `}}` skipped).
fn holes(template: &str) -> Vec<(usize, &str)> {
    let bytes = template.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'{' | b'}' if bytes.get(i + 1) == Some(&bytes[i]) => i += 2,
            b'{' => match template[i + 1..].find('}') {
                Some(length) => {
                    found.push((i, &template[i + 1..i + 1 + length]));
                    i += length + 2;
                }
                None => break,
            },
            _ => i += 1,
        }
    }
    found
}

/// Maps each byte offset of a string value's decoded text to its byte offset in the file.
///
/// Handles the four TOML string forms, including escapes and line-ending backslashes. Returns
/// `None` if the decoding disagrees with the TOML parser's (then callers point at the value).
fn value_offsets(file: &str, span: std::ops::Range<usize>, decoded: &str) -> Option<Vec<usize>> {
    let raw = file.get(span.clone())?;
    let (quote, escapes) = if raw.starts_with("'''") {
        ("'''", false)
    } else if raw.starts_with("\"\"\"") {
        ("\"\"\"", true)
    } else if raw.starts_with('\'') {
        ("'", false)
    } else if raw.starts_with('"') {
        ("\"", true)
    } else {
        return None;
    };
    let mut start = span.start + quote.len();
    let body_end = span.end.checked_sub(quote.len())?;
    if quote.len() == 3 {
        // A newline right after the opening delimiter is not part of the string.
        let rest = file.get(start..body_end)?;
        if rest.starts_with("\r\n") {
            start += 2;
        } else if rest.starts_with('\n') {
            start += 1;
        }
    }
    let body = file.get(start..body_end)?;
    let mut text = String::new();
    let mut offsets = Vec::new();
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let here = start + i;
        let decoded_char = if escapes && c == '\\' {
            let (_, kind) = chars.next()?;
            match kind {
                'b' => '\u{8}',
                't' => '\t',
                'n' => '\n',
                'f' => '\u{c}',
                'r' => '\r',
                'e' => '\u{1b}',
                '"' => '"',
                '\\' => '\\',
                'x' | 'u' | 'U' => {
                    let digits = match kind {
                        'x' => 2,
                        'u' => 4,
                        _ => 8,
                    };
                    let mut code = 0u32;
                    for _ in 0..digits {
                        code = code * 16 + chars.next()?.1.to_digit(16)?;
                    }
                    char::from_u32(code)?
                }
                c if c.is_whitespace() => {
                    // Line-ending backslash: skip all whitespace and newlines that follow.
                    while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
                    continue;
                }
                _ => return None,
            }
        } else {
            c
        };
        text.push(decoded_char);
        offsets.extend(std::iter::repeat_n(here, decoded_char.len_utf8()));
    }
    offsets.push(body_end);
    (text == decoded).then_some(offsets)
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// What a value is, for "found ..." in a wrong-type message.
fn describe(value: &DeValue<'_>) -> String {
    match value {
        DeValue::String(s) => {
            let short: String = s.chars().take(40).collect();
            if short.len() < s.len() {
                format!("string {short:?}…")
            } else {
                format!("string {short:?}")
            }
        }
        DeValue::Integer(i) => format!("integer {i}"),
        DeValue::Float(f) => format!("float {f}"),
        DeValue::Boolean(b) => format!("boolean {b}"),
        DeValue::Datetime(d) => format!("date-time {d}"),
        DeValue::Array(_) => "an array".to_string(),
        DeValue::Table(_) => "a table".to_string(),
    }
}

/// `[a-z0-9][a-z0-9._-]*`: recipe and distribution names.
fn is_plain_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
}

/// Debian policy §5.6.1: at least two characters of `[a-z0-9+.-]`, starting alphanumeric.
fn is_debian_package_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() >= 2
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+.-".contains(c))
}

/// The candidate `word` was most likely meant to be: a small edit away (typos, swapped letters,
/// wrong case) or a prefix either way (`memory` for `memory_mib`, `timeout_secs` for `timeout`).
fn closest<'k>(word: &str, candidates: impl IntoIterator<Item = &'k str>) -> Option<&'k str> {
    let word = word.to_lowercase();
    candidates
        .into_iter()
        .filter_map(|candidate| {
            let distance = edit_distance(&word, candidate);
            let prefix = word.len() >= 3
                && (candidate.starts_with(word.as_str()) || word.starts_with(candidate));
            let close = distance <= (candidate.chars().count() / 3).max(1);
            (close || prefix).then_some((distance, candidate))
        })
        .min()
        .map(|(_, candidate)| candidate)
}

/// Optimal-string-alignment distance: insertions, deletions, substitutions and transpositions.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for (i, row) in d.chunks_mut(width).enumerate() {
        row[0] = i;
    }
    for (j, cell) in d.iter_mut().take(width).enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    d[a.len() * width + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters_not_bytes() {
        let text = "a = 1\né = \"x\"\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        // `=` after `é` (2 bytes) is byte 9 but character column 3.
        assert_eq!(line_col(text, 9), (2, 3));
        assert_eq!(line_col(text, text.len()), (3, 1));
    }

    /// Offsets in the decoded value, mapped back, land on the same character in the file.
    fn mapped(file: &str, decoded: &str) -> Option<Vec<usize>> {
        let start = file.find('=')? + 2;
        value_offsets(file, start..file.trim_end().len(), decoded)
    }

    #[test]
    fn basic_string_offsets_skip_escapes() {
        let file = r#"run = "a\t\"{x}\u00e9{y}""#;
        let decoded = "a\t\"{x}é{y}";
        let offsets = mapped(file, decoded).unwrap();
        let x = decoded.find("{x}").unwrap();
        let y = decoded.find("{y}").unwrap();
        assert_eq!(&file[offsets[x]..offsets[x] + 3], "{x}");
        assert_eq!(&file[offsets[y]..offsets[y] + 3], "{y}");
    }

    #[test]
    fn multiline_string_offsets_follow_lines() {
        let file = "run = \"\"\"\nfirst \\\n    {x}\nsecond {y}\"\"\"";
        let decoded = "first {x}\nsecond {y}";
        let offsets = mapped(file, decoded).unwrap();
        assert_eq!(
            line_col(file, offsets[decoded.find("{x}").unwrap()]),
            (3, 5)
        );
        assert_eq!(
            line_col(file, offsets[decoded.find("{y}").unwrap()]),
            (4, 8)
        );
        let literal = "run = '''\nraw \\n {x}'''";
        let offsets = mapped(literal, "raw \\n {x}").unwrap();
        assert_eq!(line_col(literal, offsets[7]), (2, 8));
    }

    #[test]
    fn offsets_refuse_a_decoding_that_disagrees() {
        assert_eq!(mapped(r#"run = "abc""#, "abd"), None);
    }

    #[test]
    fn holes_skip_literal_braces() {
        assert_eq!(holes("{{x}} {a} }}{b}"), vec![(6, "a"), (12, "b")]);
    }

    #[test]
    fn suggestions_catch_typos_case_swaps_and_prefixes() {
        let keys = ["name", "run", "timeout", "fails_task"];
        assert_eq!(closest("timout", keys), Some("timeout"));
        assert_eq!(closest("Timeout", keys), Some("timeout"));
        assert_eq!(closest("timeout_secs", keys), Some("timeout"));
        assert_eq!(closest("naem", keys), Some("name"));
        assert_eq!(closest("fail_task", keys), Some("fails_task"));
        assert_eq!(
            closest("memory", ["memory_mib", "vcpus"]),
            Some("memory_mib")
        );
        assert_eq!(closest("colour", keys), None);
    }

    #[test]
    fn debian_package_names_follow_policy() {
        for good in ["python3", "python3-venv", "g++", "libc6.1", "0ad"] {
            assert!(is_debian_package_name(good), "{good}");
        }
        for bad in ["", "a", "Python3", "-x", "py_thon", "foo bar", "pkg:amd64"] {
            assert!(!is_debian_package_name(bad), "{bad}");
        }
    }
}
