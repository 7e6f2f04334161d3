//! Command templates: shell commands with `{placeholder}` holes filled per task.
//!
//! Placeholders are filled with shell-quoted values, so a package path with spaces or quotes can
//! never split or inject a command. `{{` and `}}` stand for literal braces.

use std::collections::BTreeMap;

/// A placeholder a recipe command may use, and when its value is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Placeholder {
    /// The distribution's interpreter (`/usr/bin/python3`), known when the image is built.
    Interpreter,
    /// The virtual environment directory, known when the image is built.
    Venv,
    /// The venv's python (`{venv}/bin/python`), known when the image is built.
    Python,
    /// What to install: a path to the package file on the I/O disk, or a `name==version`.
    Package,
    /// The distribution name of the package under test, normalised (PEP 503).
    Dist,
    /// The offline wheelhouse directory on the I/O disk.
    Wheelhouse,
    /// The I/O disk mount point.
    Io,
    /// A scratch directory private to this task.
    Workdir,
}

impl Placeholder {
    /// Every placeholder, in the order they are documented.
    pub const ALL: [Placeholder; 8] = [
        Placeholder::Interpreter,
        Placeholder::Venv,
        Placeholder::Python,
        Placeholder::Package,
        Placeholder::Dist,
        Placeholder::Wheelhouse,
        Placeholder::Io,
        Placeholder::Workdir,
    ];

    /// The name written between braces.
    pub fn name(self) -> &'static str {
        match self {
            Placeholder::Interpreter => "interpreter",
            Placeholder::Venv => "venv",
            Placeholder::Python => "python",
            Placeholder::Package => "package",
            Placeholder::Dist => "dist",
            Placeholder::Wheelhouse => "wheelhouse",
            Placeholder::Io => "io",
            Placeholder::Workdir => "workdir",
        }
    }

    /// Whether the value exists before any task (usable in `prepare` steps).
    pub fn known_at_prepare(self) -> bool {
        matches!(
            self,
            Placeholder::Interpreter | Placeholder::Venv | Placeholder::Python
        )
    }

    /// Looks a placeholder up by the name written between braces.
    pub fn from_name(name: &str) -> Option<Placeholder> {
        Placeholder::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// A mistake in a template, with the byte offset in the template where it starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unknown placeholder `{{{name}}}`; known: {known}")]
    UnknownPlaceholder {
        name: String,
        offset: usize,
        known: String,
    },
    #[error("`{{` at this position is never closed; write `{{{{` for a literal brace")]
    Unclosed { offset: usize },
    #[error("lone `}}`; write `}}}}` for a literal brace")]
    StrayClose { offset: usize },
    #[error("empty placeholder `{{}}`")]
    Empty { offset: usize },
}

impl TemplateError {
    /// Byte offset in the template where the mistake starts.
    pub fn offset(&self) -> usize {
        match self {
            TemplateError::UnknownPlaceholder { offset, .. }
            | TemplateError::Unclosed { offset }
            | TemplateError::StrayClose { offset }
            | TemplateError::Empty { offset } => *offset,
        }
    }
}

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Hole(Placeholder),
}

/// A parsed, valid command template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    pieces: Vec<Piece>,
}

impl Template {
    /// Parses `source`, returning every mistake found (not just the first).
    pub fn parse(source: &str) -> Result<Template, Vec<TemplateError>> {
        let mut pieces = Vec::new();
        let mut errors = Vec::new();
        let mut text = String::new();
        let bytes = source.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'{' if bytes.get(i + 1) == Some(&b'{') => {
                    text.push('{');
                    i += 2;
                }
                b'}' if bytes.get(i + 1) == Some(&b'}') => {
                    text.push('}');
                    i += 2;
                }
                b'{' => {
                    let Some(len) = source[i + 1..].find('}') else {
                        errors.push(TemplateError::Unclosed { offset: i });
                        break;
                    };
                    let name = &source[i + 1..i + 1 + len];
                    if name.is_empty() {
                        errors.push(TemplateError::Empty { offset: i });
                    } else if let Some(p) = Placeholder::from_name(name) {
                        if !text.is_empty() {
                            pieces.push(Piece::Text(std::mem::take(&mut text)));
                        }
                        pieces.push(Piece::Hole(p));
                    } else {
                        errors.push(TemplateError::UnknownPlaceholder {
                            name: name.to_string(),
                            offset: i,
                            known: Placeholder::ALL
                                .iter()
                                .map(|p| format!("{{{}}}", p.name()))
                                .collect::<Vec<_>>()
                                .join(", "),
                        });
                    }
                    i += len + 2;
                }
                b'}' => {
                    errors.push(TemplateError::StrayClose { offset: i });
                    i += 1;
                }
                _ => {
                    // Copy one whole UTF-8 character.
                    let ch = source[i..].chars().next().unwrap_or('\u{FFFD}');
                    text.push(ch);
                    i += ch.len_utf8();
                }
            }
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        if errors.is_empty() {
            Ok(Template {
                source: source.to_string(),
                pieces,
            })
        } else {
            Err(errors)
        }
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The placeholders this template uses.
    pub fn placeholders(&self) -> impl Iterator<Item = Placeholder> + '_ {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Hole(h) => Some(*h),
            Piece::Text(_) => None,
        })
    }

    /// Fills every placeholder with its shell-quoted value; `None` names a missing value.
    pub fn expand(&self, values: &BTreeMap<Placeholder, String>) -> Result<String, Placeholder> {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Hole(h) => out.push_str(&shell_quote(values.get(h).ok_or(*h)?)),
            }
        }
        Ok(out)
    }
}

/// Quotes `value` for POSIX `sh` so it stays one word whatever it contains.
pub fn shell_quote(value: &str) -> String {
    let safe = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:+,@%".contains(&b));
    if safe {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_and_quotes() {
        let t = Template::parse("{python} -m pip install {package} {{literal}}").unwrap();
        let values = BTreeMap::from([
            (Placeholder::Python, "/opt/venv/bin/python".to_string()),
            (Placeholder::Package, "/io/my pkg'.whl".to_string()),
        ]);
        assert_eq!(
            t.expand(&values).unwrap(),
            r"/opt/venv/bin/python -m pip install '/io/my pkg'\''.whl' {literal}"
        );
    }

    #[test]
    fn missing_value_is_named() {
        let t = Template::parse("echo {dist}").unwrap();
        assert_eq!(t.expand(&BTreeMap::new()), Err(Placeholder::Dist));
    }

    #[test]
    fn reports_every_mistake_with_offsets() {
        let errors = Template::parse("a {nope} b } c {").unwrap_err();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(
            matches!(&errors[0], TemplateError::UnknownPlaceholder { name, offset: 2, .. } if name == "nope")
        );
        assert_eq!(errors[1], TemplateError::StrayClose { offset: 11 });
        assert_eq!(errors[2], TemplateError::Unclosed { offset: 15 });
    }

    #[test]
    fn empty_placeholder_is_an_error() {
        assert_eq!(
            Template::parse("x {}").unwrap_err(),
            vec![TemplateError::Empty { offset: 2 }]
        );
    }
}
