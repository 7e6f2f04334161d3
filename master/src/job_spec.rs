//! Validation of a submitted [`JobSpec`]: every field checked, every error naming its field,
//! before anything is stored.

use crate::error::MasterError;
use crate::recipes::RecipeCatalog;
use pyti_wire::job::{
    decode_hex, JobSpec, PackageSpec, MAX_NAME_CHARS, MAX_PRIORITY, MAX_RECIPES_PER_JOB,
    MAX_UPLOAD_BYTES, MAX_URL_CHARS, MIN_PRIORITY,
};
use sha2::{Digest, Sha256};
use std::collections::HashSet;

/// Longest version string (PEP 440 versions are short; this bounds junk).
const MAX_VERSION_CHARS: usize = 64;
/// Trigger label used when the submitter gives none.
const DEFAULT_TRIGGER: &str = "manual";

/// A job that passed validation, in the form the store writes.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// The spec without uploaded bytes, as JSON.
    pub spec_json: String,
    pub package_name: String,
    pub package_version: Option<String>,
    pub upload: Option<Vec<u8>>,
    pub submitter: String,
    pub priority: u8,
    pub trigger: String,
    pub recipes: Vec<String>,
}

/// Checks `spec` submitted by `caller` (an admin may name another submitter).
pub fn validate(
    spec: &JobSpec,
    caller: &str,
    caller_is_admin: bool,
    catalog: &RecipeCatalog,
) -> Result<NewJob, MasterError> {
    let upload = check_package(&spec.package)?;

    if spec.recipes.is_empty() {
        return Err(MasterError::field("recipes", "name at least one recipe"));
    }
    if spec.recipes.len() > MAX_RECIPES_PER_JOB {
        return Err(MasterError::field(
            "recipes",
            format!(
                "{} recipes, at most {MAX_RECIPES_PER_JOB}",
                spec.recipes.len()
            ),
        ));
    }
    let mut seen = HashSet::new();
    for (i, recipe) in spec.recipes.iter().enumerate() {
        let field = format!("recipes[{i}]");
        check_name(&field, recipe)?;
        if catalog.get(recipe).is_none() {
            let known: Vec<&str> = catalog.names().collect();
            return Err(MasterError::field(
                field,
                format!("unknown recipe `{recipe}` (known: {})", known.join(", ")),
            ));
        }
        if !seen.insert(recipe.as_str()) {
            return Err(MasterError::field(
                field,
                format!("`{recipe}` is listed twice"),
            ));
        }
    }

    if !(MIN_PRIORITY..=MAX_PRIORITY).contains(&spec.priority) {
        return Err(MasterError::field(
            "priority",
            format!(
                "{} is outside {MIN_PRIORITY}..={MAX_PRIORITY}",
                spec.priority
            ),
        ));
    }

    let submitter = match &spec.submitter {
        None => caller.to_string(),
        Some(name) => {
            check_name("submitter", name)?;
            if name != caller && !caller_is_admin {
                return Err(MasterError::field(
                    "submitter",
                    "only an admin token may submit on behalf of someone else",
                ));
            }
            name.clone()
        }
    };

    let trigger = if spec.trigger.is_empty() {
        DEFAULT_TRIGGER.to_string()
    } else {
        check_label("trigger", &spec.trigger)?;
        spec.trigger.clone()
    };

    let (package_name, package_version) = spec.package.name_version();
    if package_name.is_empty() {
        return Err(MasterError::field(
            "package",
            "no package name can be derived from it",
        ));
    }
    let spec_json = serde_json::to_string(&spec.package.without_content())
        .map_err(|e| MasterError::field("package", e.to_string()))?;
    Ok(NewJob {
        spec_json,
        package_name,
        package_version,
        upload,
        submitter,
        priority: spec.priority,
        trigger,
        recipes: spec.recipes.clone(),
    })
}

fn check_package(package: &PackageSpec) -> Result<Option<Vec<u8>>, MasterError> {
    match package {
        PackageSpec::Pypi { name, version } => {
            check_package_name("package.name", name)?;
            check_version("package.version", version)?;
            Ok(None)
        }
        PackageSpec::Upload {
            filename,
            sha256,
            content_hex,
        } => {
            check_filename("package.filename", filename)?;
            check_sha256("package.sha256", sha256)?;
            if content_hex.len() > 2 * MAX_UPLOAD_BYTES {
                return Err(MasterError::field(
                    "package.content_hex",
                    format!(
                        "{} bytes, at most {MAX_UPLOAD_BYTES} allowed",
                        content_hex.len() / 2
                    ),
                ));
            }
            let bytes = decode_hex(content_hex)
                .ok_or_else(|| MasterError::field("package.content_hex", "not valid hex"))?;
            if bytes.is_empty() {
                return Err(MasterError::field(
                    "package.content_hex",
                    "the file is empty",
                ));
            }
            let actual = hex::encode(Sha256::digest(&bytes));
            if !actual.eq_ignore_ascii_case(sha256) {
                return Err(MasterError::field(
                    "package.sha256",
                    format!("does not match the content (content hashes to {actual})"),
                ));
            }
            Ok(Some(bytes))
        }
        PackageSpec::Url { url, sha256 } => {
            if url.len() > MAX_URL_CHARS {
                return Err(MasterError::field(
                    "package.url",
                    format!("longer than {MAX_URL_CHARS} characters"),
                ));
            }
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(MasterError::field(
                    "package.url",
                    "must start with https:// or http://",
                ));
            }
            if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(MasterError::field(
                    "package.url",
                    "contains whitespace or control characters",
                ));
            }
            let last = url.rsplit('/').next().unwrap_or_default();
            let last = last.split(['?', '#']).next().unwrap_or_default();
            check_filename("package.url", last)?;
            if let Some(sha) = sha256 {
                check_sha256("package.sha256", sha)?;
            }
            Ok(None)
        }
    }
}

/// Slave, recipe and submitter names: `[A-Za-z0-9._-]`, 1–128 characters.
pub fn check_name(field: &str, value: &str) -> Result<(), MasterError> {
    if value.is_empty() || value.chars().count() > MAX_NAME_CHARS {
        return Err(MasterError::field(
            field,
            format!("must be 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@')))
    {
        return Err(MasterError::field(
            field,
            format!("character {c:?} is not allowed (use letters, digits, `.`, `_`, `-`, `@`)"),
        ));
    }
    Ok(())
}

/// A free-form label: printable, bounded.
pub fn check_label(field: &str, value: &str) -> Result<(), MasterError> {
    if value.chars().count() > MAX_NAME_CHARS {
        return Err(MasterError::field(
            field,
            format!("longer than {MAX_NAME_CHARS} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(MasterError::field(field, "contains control characters"));
    }
    Ok(())
}

/// PEP 508 names: letters, digits, `._-`, starting and ending with a letter or digit.
fn check_package_name(field: &str, name: &str) -> Result<(), MasterError> {
    check_name(field, name)?;
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if name.contains('@') || !edge_ok(name.chars().next()) || !edge_ok(name.chars().last()) {
        return Err(MasterError::field(
            field,
            format!("`{name}` is not a valid package name (PEP 508)"),
        ));
    }
    Ok(())
}

fn check_version(field: &str, version: &str) -> Result<(), MasterError> {
    if version.is_empty() || version.len() > MAX_VERSION_CHARS {
        return Err(MasterError::field(
            field,
            format!("must be 1 to {MAX_VERSION_CHARS} characters"),
        ));
    }
    if !version
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '!' | '_' | '-'))
    {
        return Err(MasterError::field(
            field,
            format!("`{version}` is not a valid version (PEP 440)"),
        ));
    }
    Ok(())
}

fn check_filename(field: &str, name: &str) -> Result<(), MasterError> {
    if name.is_empty() || name.len() > MAX_NAME_CHARS || name.starts_with('.') {
        return Err(MasterError::field(
            field,
            format!("file name must be 1 to {MAX_NAME_CHARS} characters, not starting with `.`"),
        ));
    }
    if name.contains(['/', '\\']) || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(MasterError::field(
            field,
            "file name contains a path separator or whitespace",
        ));
    }
    if ![".whl", ".tar.gz", ".zip"]
        .iter()
        .any(|ext| name.ends_with(ext))
    {
        return Err(MasterError::field(
            field,
            "must be a wheel (.whl) or an sdist (.tar.gz, .zip)",
        ));
    }
    Ok(())
}

fn check_sha256(field: &str, sha: &str) -> Result<(), MasterError> {
    if sha.len() != 64 || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(MasterError::field(field, "must be 64 hex digits (SHA-256)"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pyti_wire::recipe::Recipe;
    use std::path::Path;

    fn catalog() -> RecipeCatalog {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes/debian-12.toml");
        RecipeCatalog::from_recipes([Recipe::load(&path).unwrap()])
    }

    fn spec() -> JobSpec {
        JobSpec {
            package: PackageSpec::pypi("six==1.16.0").unwrap(),
            recipes: vec!["debian-12".into()],
            submitter: None,
            priority: 5,
            trigger: String::new(),
        }
    }

    fn field_of(result: Result<NewJob, MasterError>) -> String {
        match result {
            Err(MasterError::InvalidField { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn a_good_spec_is_accepted_with_defaults() {
        let job = validate(&spec(), "alice", false, &catalog()).unwrap();
        assert_eq!(job.submitter, "alice");
        assert_eq!(job.trigger, "manual");
        assert_eq!(job.package_name, "six");
    }

    #[test]
    fn each_bad_field_is_named() {
        let c = catalog();
        let mut s = spec();
        s.recipes = vec!["debian-12".into(), "nope".into()];
        assert_eq!(field_of(validate(&s, "a", false, &c)), "recipes[1]");
        let mut s = spec();
        s.recipes.clear();
        assert_eq!(field_of(validate(&s, "a", false, &c)), "recipes");
        let mut s = spec();
        s.priority = 11;
        assert_eq!(field_of(validate(&s, "a", false, &c)), "priority");
        let mut s = spec();
        s.package = PackageSpec::Pypi {
            name: "-x".into(),
            version: "1".into(),
        };
        assert_eq!(field_of(validate(&s, "a", false, &c)), "package.name");
        let mut s = spec();
        s.package = PackageSpec::Pypi {
            name: "x".into(),
            version: "1 ; rm -rf".into(),
        };
        assert_eq!(field_of(validate(&s, "a", false, &c)), "package.version");
        let mut s = spec();
        s.submitter = Some("bob".into());
        assert_eq!(field_of(validate(&s, "a", false, &c)), "submitter");
        assert!(validate(&s, "a", true, &c).is_ok());
        let mut s = spec();
        s.trigger = "a\nb".into();
        assert_eq!(field_of(validate(&s, "a", false, &c)), "trigger");
        let mut s = spec();
        s.package = PackageSpec::Url {
            url: "file:///etc/passwd".into(),
            sha256: None,
        };
        assert_eq!(field_of(validate(&s, "a", false, &c)), "package.url");
    }

    #[test]
    fn uploads_must_match_their_hash() {
        let c = catalog();
        let content = b"PK\x03\x04 not really a wheel";
        let sha = hex::encode(Sha256::digest(content));
        let mut s = spec();
        s.package = PackageSpec::upload("demo-1.0-py3-none-any.whl", &sha, content);
        let job = validate(&s, "a", false, &c).unwrap();
        assert_eq!(job.upload.as_deref(), Some(&content[..]));
        assert!(
            !job.spec_json.contains("content_hex\":\"50"),
            "bytes must not be in the spec JSON"
        );
        s.package = PackageSpec::upload("demo-1.0-py3-none-any.whl", &"0".repeat(64), content);
        assert_eq!(field_of(validate(&s, "a", false, &c)), "package.sha256");
        s.package = PackageSpec::upload("../evil.whl", &sha, content);
        assert_eq!(field_of(validate(&s, "a", false, &c)), "package.filename");
        s.package = PackageSpec::Upload {
            filename: "demo-1.0.tar.gz".into(),
            sha256: sha.clone(),
            content_hex: "zz".into(),
        };
        assert_eq!(
            field_of(validate(&s, "a", false, &c)),
            "package.content_hex"
        );
    }
}
