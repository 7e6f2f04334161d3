//! The package under test, as the slave accepts it: a PyPI release, a local file or a URL.
//!
//! Everything here is validation of untrusted text (job specs, file names): a [`PackageSpec`] that
//! exists is well-formed, so the wheelhouse builder never passes a surprise to the resolver (no
//! version ranges, no extras, no environment markers, no path tricks in file names).

use pyti_wire::job::{decode_hex, normalize_name, MAX_URL_CHARS};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};

/// Largest package file (local or downloaded) the slave accepts: a big scientific wheel is about
/// 50 MB; pyti tests packages, not binary payloads, and the file is copied onto every I/O disk.
pub const MAX_PACKAGE_FILE_BYTES: u64 = 64 * 1024 * 1024;
/// Longest distribution name: PyPI's own bound is lower; this keeps error messages short.
pub const MAX_DIST_NAME_CHARS: usize = 128;
/// Longest version string (PyPI versions are short; a long one is garbage or an attack).
pub const MAX_VERSION_CHARS: usize = 64;
/// Longest package file name (ext4's limit for one path component).
pub const MAX_FILENAME_BYTES: usize = 255;

/// Why a package spec or file name was rejected; the message says what a valid one looks like.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error("invalid package spec `{spec}`: {reason}; write `name==version` (an exact release, e.g. `six==1.16.0`), a path to a .whl/.tar.gz/.zip file, or an http(s) URL to one")]
    InvalidSpec { spec: String, reason: String },
    #[error("invalid package file name `{filename}`: {reason}; expected a wheel `name-version(-build)-python-abi-platform.whl` or an sdist `name-version.tar.gz`/`.zip`")]
    InvalidFilename { filename: String, reason: String },
    #[error("package file {path} is {size} bytes, more than the {limit}-byte limit; test a smaller build")]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("cannot read package file {path}: {source}; check the path and its permissions")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("package file {path} is not a regular file; pass the .whl/.tar.gz/.zip itself")]
    NotAFile { path: PathBuf },
    #[error("uploaded package `{filename}` is corrupt: {reason}; upload it again")]
    CorruptUpload { filename: String, reason: String },
}

/// The package a task tests, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackageSpec {
    /// An exact release on the package index: `name==version`.
    Pypi {
        /// The name as written (validated against PEP 508); see [`PackageSpec::dist_name`].
        name: String,
        /// A PEP 440 version, exact (no ranges, no wildcards).
        version: String,
    },
    /// A wheel or sdist on the host's filesystem.
    Local { path: PathBuf },
    /// A wheel or sdist to download (size-bounded); the last path segment is its file name.
    Url { url: String, sha256: Option<String> },
}

impl PackageSpec {
    /// Parses the command-line form: `name==version`, an http(s) URL, or a path to a package
    /// file (which must exist, be a regular file with a valid wheel/sdist name, and be small
    /// enough).
    pub fn parse(text: &str) -> Result<PackageSpec, PackageError> {
        let spec = text.trim();
        let invalid = |reason: &str| PackageError::InvalidSpec {
            spec: truncate_for_message(spec),
            reason: reason.to_string(),
        };
        if spec.is_empty() {
            return Err(invalid("it is empty"));
        }
        if spec.starts_with("http://") || spec.starts_with("https://") {
            return PackageSpec::url(spec, None);
        }
        if spec.contains("://") {
            return Err(invalid("only http:// and https:// URLs are supported"));
        }
        let looks_like_file = [".whl", ".tar.gz", ".zip"]
            .iter()
            .any(|ext| spec.to_ascii_lowercase().ends_with(ext))
            || spec.contains('/');
        if looks_like_file {
            return PackageSpec::local(Path::new(spec));
        }
        PackageSpec::requirement(spec)
    }

    /// Validates `name==version`: a PEP 508 name and one exact PEP 440 version, nothing else.
    pub fn requirement(spec: &str) -> Result<PackageSpec, PackageError> {
        let invalid = |reason: String| PackageError::InvalidSpec {
            spec: truncate_for_message(spec),
            reason,
        };
        if spec.contains(';') {
            return Err(invalid("environment markers are not allowed".into()));
        }
        if spec.contains('[') {
            return Err(invalid("extras are not allowed".into()));
        }
        if spec.contains('@') {
            return Err(invalid(
                "direct references (`name @ url`) are not allowed".into(),
            ));
        }
        if spec.contains("===") {
            return Err(invalid("arbitrary equality `===` is not allowed".into()));
        }
        let Some((name, version)) = spec.split_once("==") else {
            return Err(invalid(
                "no exact version: pin one release with `==` (ranges such as `>=` or `~=` resolve differently over time)".into(),
            ));
        };
        let (name, version) = (name.trim(), version.trim());
        validate_dist_name(name).map_err(invalid)?;
        if version.contains(',') || version.contains("==") {
            return Err(invalid("give exactly one version".into()));
        }
        if version.contains('*') {
            return Err(invalid("wildcard versions are not allowed".into()));
        }
        validate_version(version).map_err(invalid)?;
        Ok(PackageSpec::Pypi {
            name: name.to_string(),
            version: version.to_string(),
        })
    }

    /// Validates a local package file: a regular file, a wheel/sdist name, within
    /// [`MAX_PACKAGE_FILE_BYTES`].
    pub fn local(path: &Path) -> Result<PackageSpec, PackageError> {
        let filename = path
            .file_name()
            .and_then(|name| name.to_str())
            .ok_or_else(|| PackageError::InvalidFilename {
                filename: path.display().to_string(),
                reason: "no UTF-8 file name".into(),
            })?;
        DistFile::parse(filename)?;
        let meta = std::fs::metadata(path).map_err(|source| PackageError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
        if !meta.is_file() {
            return Err(PackageError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        if meta.len() > MAX_PACKAGE_FILE_BYTES {
            return Err(PackageError::TooLarge {
                path: path.to_path_buf(),
                size: meta.len(),
                limit: MAX_PACKAGE_FILE_BYTES,
            });
        }
        Ok(PackageSpec::Local {
            path: path.to_path_buf(),
        })
    }

    /// Validates a URL to a wheel or sdist (`sha256`, if given, is checked after download).
    pub fn url(url: &str, sha256: Option<&str>) -> Result<PackageSpec, PackageError> {
        let invalid = |reason: &str| PackageError::InvalidSpec {
            spec: truncate_for_message(url),
            reason: reason.to_string(),
        };
        if url.len() > MAX_URL_CHARS {
            return Err(invalid("the URL is too long"));
        }
        let Some(rest) = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
        else {
            return Err(invalid("only http:// and https:// URLs are supported"));
        };
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("the URL contains whitespace or control characters"));
        }
        let path = rest.split(['?', '#']).next().unwrap_or(rest);
        let Some((host, path)) = path.split_once('/') else {
            return Err(invalid("the URL has no path to a file"));
        };
        if host.is_empty() {
            return Err(invalid("the URL has no host"));
        }
        let filename = path.rsplit('/').next().unwrap_or(path);
        DistFile::parse(filename)?;
        if let Some(hash) = sha256 {
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid("the sha256 is not 64 hex digits"));
            }
        }
        Ok(PackageSpec::Url {
            url: url.to_string(),
            sha256: sha256.map(str::to_ascii_lowercase),
        })
    }

    /// Turns the master's job spec into a validated one. An upload is decoded, checked against
    /// its sha256 and written into `upload_dir` (which the caller owns and removes).
    pub fn from_wire(
        spec: &pyti_wire::job::PackageSpec,
        upload_dir: &Path,
    ) -> Result<PackageSpec, PackageError> {
        use pyti_wire::job::PackageSpec as Wire;
        match spec {
            Wire::Pypi { name, version } => PackageSpec::requirement(&format!("{name}=={version}")),
            Wire::Url { url, sha256 } => PackageSpec::url(url, sha256.as_deref()),
            Wire::Upload {
                filename,
                sha256,
                content_hex,
            } => {
                DistFile::parse(filename)?;
                let corrupt = |reason: &str| PackageError::CorruptUpload {
                    filename: filename.clone(),
                    reason: reason.to_string(),
                };
                if content_hex.len() as u64 > 2 * MAX_PACKAGE_FILE_BYTES {
                    return Err(corrupt("it is larger than the package file limit"));
                }
                let bytes = decode_hex(content_hex).ok_or_else(|| corrupt("invalid hex"))?;
                let actual = hex::encode(Sha256::digest(&bytes));
                if !actual.eq_ignore_ascii_case(sha256) {
                    return Err(corrupt(&format!(
                        "sha256 is {actual}, the job says {sha256}"
                    )));
                }
                let path = upload_dir.join(filename);
                std::fs::write(&path, &bytes).map_err(|source| PackageError::Unreadable {
                    path: path.clone(),
                    source,
                })?;
                PackageSpec::local(&path)
            }
        }
    }

    /// The PEP 503 normalised distribution name, as far as the spec tells it (a file's name
    /// comes from its file name; the resolver confirms it from the metadata).
    pub fn dist_name(&self) -> String {
        match self {
            PackageSpec::Pypi { name, .. } => normalize_name(name),
            PackageSpec::Local { .. } | PackageSpec::Url { .. } => self
                .filename()
                .and_then(|f| DistFile::parse(&f).ok())
                .map(|f| f.dist_name)
                .unwrap_or_default(),
        }
    }

    /// The package file's name for file and URL specs (`None` for a PyPI release).
    pub fn filename(&self) -> Option<String> {
        match self {
            PackageSpec::Pypi { .. } => None,
            PackageSpec::Local { path } => path
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_string),
            PackageSpec::Url { url, .. } => {
                let path = url.split(['?', '#']).next().unwrap_or(url);
                path.rsplit('/').next().map(str::to_string)
            }
        }
    }
}

impl fmt::Display for PackageSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PackageSpec::Pypi { name, version } => write!(f, "{name}=={version}"),
            PackageSpec::Local { path } => write!(f, "{}", path.display()),
            PackageSpec::Url { url, .. } => write!(f, "{url}"),
        }
    }
}

/// Whether a package file is built (wheel) or source (sdist, built inside the guest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DistKind {
    Wheel,
    Sdist,
}

/// A validated wheel or sdist file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistFile {
    pub kind: DistKind,
    /// PEP 503 normalised.
    pub dist_name: String,
    pub version: String,
    /// Wheel tags (`python`, `abi`, `platform`), each possibly a `.`-separated set; empty for
    /// sdists.
    pub python_tag: String,
    pub abi_tag: String,
    pub platform_tag: String,
}

impl DistFile {
    /// Parses and validates a file name: no path separators or odd characters, a valid name and
    /// version, and (wheels) five or six `-`-separated fields.
    pub fn parse(filename: &str) -> Result<DistFile, PackageError> {
        let invalid = |reason: &str| PackageError::InvalidFilename {
            filename: truncate_for_message(filename),
            reason: reason.to_string(),
        };
        if filename.is_empty() || filename.len() > MAX_FILENAME_BYTES {
            return Err(invalid("empty or longer than 255 bytes"));
        }
        if filename.starts_with('.') {
            return Err(invalid("it starts with a dot"));
        }
        if !filename
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+!".contains(&b))
        {
            return Err(invalid(
                "only ASCII letters, digits and `._-+!` may appear (no paths, spaces or quotes)",
            ));
        }
        if let Some(stem) = filename.strip_suffix(".whl") {
            let parts: Vec<&str> = stem.split('-').collect();
            if parts.len() != 5 && parts.len() != 6 {
                return Err(invalid(
                    "a wheel name has 5 or 6 `-`-separated fields (name, version, optional build, python, abi, platform)",
                ));
            }
            validate_dist_name(parts[0]).map_err(|r| invalid(&r))?;
            validate_version(parts[1]).map_err(|r| invalid(&r))?;
            if parts.len() == 6 && !parts[2].starts_with(|c: char| c.is_ascii_digit()) {
                return Err(invalid("a wheel's build tag must start with a digit"));
            }
            let tags = &parts[parts.len() - 3..];
            if tags.iter().any(|t| t.is_empty()) {
                return Err(invalid("a wheel tag is empty"));
            }
            return Ok(DistFile {
                kind: DistKind::Wheel,
                dist_name: normalize_name(parts[0]),
                version: parts[1].to_string(),
                python_tag: tags[0].to_string(),
                abi_tag: tags[1].to_string(),
                platform_tag: tags[2].to_string(),
            });
        }
        let lower = filename.to_ascii_lowercase();
        let stem_len = if lower.ends_with(".tar.gz") {
            filename.len() - ".tar.gz".len()
        } else if lower.ends_with(".zip") {
            filename.len() - ".zip".len()
        } else {
            return Err(invalid("not a .whl, .tar.gz or .zip file"));
        };
        let stem = &filename[..stem_len];
        // Old sdists put dashes in the name (`python-dateutil-2.8.2`): the version starts after
        // the last dash.
        let Some((name, version)) = stem.rsplit_once('-') else {
            return Err(invalid("an sdist name is `name-version`"));
        };
        validate_dist_name(name).map_err(|r| invalid(&r))?;
        validate_version(version).map_err(|r| invalid(&r))?;
        Ok(DistFile {
            kind: DistKind::Sdist,
            dist_name: normalize_name(name),
            version: version.to_string(),
            python_tag: String::new(),
            abi_tag: String::new(),
            platform_tag: String::new(),
        })
    }
}

/// PEP 508 names: ASCII letters and digits, with `.`, `_`, `-` inside.
pub fn validate_dist_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the package name is empty".into());
    }
    if name.len() > MAX_DIST_NAME_CHARS {
        return Err(format!(
            "the package name is longer than {MAX_DIST_NAME_CHARS} characters"
        ));
    }
    let valid_inner = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    let ends_ok = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !valid_inner || !ends_ok {
        return Err(format!(
            "`{}` is not a valid package name (ASCII letters, digits and `._-`, starting and ending with a letter or digit)",
            truncate_for_message(name)
        ));
    }
    Ok(())
}

/// A PEP 440 version (public part with optional local label), in any of its accepted
/// spellings (`1.0`, `v1.0rc1`, `2!1.0.post2.dev3+ubuntu.1`).
pub fn validate_version(version: &str) -> Result<(), String> {
    let err = || {
        Err(format!(
            "`{}` is not a valid PEP 440 version (e.g. `1.16.0`, `2.0rc1`, `1.0.post1`)",
            truncate_for_message(version)
        ))
    };
    if version.is_empty() || version.len() > MAX_VERSION_CHARS {
        return err();
    }
    let lower = version.to_ascii_lowercase();
    let (public, local) = match lower.split_once('+') {
        Some((public, local)) => (public, Some(local)),
        None => (lower.as_str(), None),
    };
    if let Some(local) = local {
        let ok = !local.is_empty()
            && local
                .split(['.', '-', '_'])
                .all(|seg| !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_alphanumeric()));
        if !ok {
            return err();
        }
    }
    let mut rest = public.strip_prefix('v').unwrap_or(public);
    // Epoch.
    if let Some((epoch, after)) = rest.split_once('!') {
        if epoch.is_empty() || !epoch.bytes().all(|b| b.is_ascii_digit()) {
            return err();
        }
        rest = after;
    }
    // Release: N(.N)*, stopping before a dot that is not followed by a digit (`1.0.post1`).
    let bytes = rest.as_bytes();
    let mut end = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
    if end == 0 {
        return err();
    }
    while end + 1 < bytes.len() && bytes[end] == b'.' && bytes[end + 1].is_ascii_digit() {
        end += 1;
        end += bytes[end..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
    }
    let mut rest = &rest[end..];
    // Pre, post, dev segments, in that order, each optional.
    const PRE: &[&str] = &["alpha", "beta", "preview", "pre", "rc", "a", "b", "c"];
    const POST: &[&str] = &["post", "rev", "r"];
    let mut stage = 0;
    while !rest.is_empty() {
        if stage < 2 {
            if let Some(after) = rest.strip_prefix('-') {
                // `1.0-1` is an implicit post release.
                let digits = after.bytes().take_while(u8::is_ascii_digit).count();
                if digits > 0 {
                    rest = &after[digits..];
                    stage = 2;
                    continue;
                }
            }
        }
        let unsep = rest.trim_start_matches(['.', '-', '_']);
        if rest.len() - unsep.len() > 1 {
            return err();
        }
        let (next_stage, words): (usize, &[&str]) =
            if stage < 1 && PRE.iter().any(|w| unsep.starts_with(w)) {
                (1, PRE)
            } else if stage < 2 && POST.iter().any(|w| unsep.starts_with(w)) {
                (2, POST)
            } else if stage < 3 && unsep.starts_with("dev") {
                (3, &["dev"])
            } else {
                return err();
            };
        let word = words
            .iter()
            .find(|w| unsep.starts_with(**w))
            .map_or(0, |w| w.len());
        let after = &unsep[word..];
        let after_sep = after.strip_prefix(['.', '-', '_']).unwrap_or(after);
        let digits = after_sep.bytes().take_while(u8::is_ascii_digit).count();
        rest = if digits > 0 {
            &after_sep[digits..]
        } else {
            after
        };
        stage = next_stage;
    }
    Ok(())
}

/// Cuts untrusted text quoted in an error message to a readable length.
fn truncate_for_message(text: &str) -> String {
    const MAX: usize = 200;
    if text.len() <= MAX {
        return text.to_string();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(spec: &str) -> String {
        PackageSpec::parse(spec).unwrap_err().to_string()
    }

    #[test]
    fn exact_releases_parse() {
        assert_eq!(
            PackageSpec::parse("six==1.16.0").unwrap(),
            PackageSpec::Pypi {
                name: "six".into(),
                version: "1.16.0".into()
            }
        );
        let spec = PackageSpec::parse(" Charset_Normalizer == 3.3.2 ").unwrap();
        assert_eq!(spec.dist_name(), "charset-normalizer");
        assert_eq!(spec.to_string(), "Charset_Normalizer==3.3.2");
        for ok in [
            "a==1",
            "zope.interface==6.0",
            "pkg==1.0rc1",
            "pkg==2!1.0.post2.dev3",
            "pkg==1.0+ubuntu.1",
            "pkg==1.0-1",
            "pkg==v1.2",
            "pkg==1.0.dev0",
            "pkg==1.0a1.post1",
        ] {
            assert!(PackageSpec::parse(ok).is_ok(), "{ok} should parse");
        }
    }

    #[test]
    fn everything_but_an_exact_release_is_rejected_with_the_reason() {
        assert!(reason("").contains("empty"));
        assert!(reason("six").contains("no exact version"));
        assert!(reason("six>=1.0").contains("no exact version"));
        assert!(reason("six~=1.0").contains("no exact version"));
        assert!(reason("six===1.0").contains("arbitrary equality"));
        assert!(reason("six==1.*").contains("wildcard"));
        assert!(reason("six==1.0,==2.0").contains("exactly one"));
        assert!(reason("six[extra]==1.0").contains("extras"));
        assert!(reason("six==1.0; python_version>'3'").contains("markers"));
        assert!(reason("six @ git+https://x/y").contains("only http"));
        assert!(reason("-six==1.0").contains("not a valid package name"));
        assert!(reason("six_==1.0").contains("not a valid package name"));
        assert!(reason("si x==1.0").contains("not a valid package name"));
        assert!(reason("==1.0").contains("empty"));
        assert!(reason("six==").contains("PEP 440"));
        assert!(reason("six==latest").contains("PEP 440"));
        assert!(reason("six==1..0").contains("PEP 440"));
        assert!(reason("six==1.0rc1rc2").contains("PEP 440"));
        assert!(reason("six==1.0+").contains("PEP 440"));
        assert!(reason("ftp://example.org/six-1.0.tar.gz").contains("only http"));
        assert!(reason(&format!("{}==1.0", "a".repeat(200))).contains("longer than"));
        // The message always says what a valid spec looks like.
        assert!(reason("six").contains("`name==version`"));
    }

    #[test]
    fn urls_are_checked_for_scheme_and_file_name() {
        let spec =
            PackageSpec::parse("https://files.example.org/p/six-1.16.0-py2.py3-none-any.whl")
                .unwrap();
        assert_eq!(spec.dist_name(), "six");
        assert_eq!(
            spec.filename().as_deref(),
            Some("six-1.16.0-py2.py3-none-any.whl")
        );
        assert!(PackageSpec::parse("https://example.org/pkg-1.0.tar.gz?x=1#frag").is_ok());
        assert!(reason("https://example.org/").contains("file name"));
        assert!(reason("https://example.org/readme.txt").contains("not a .whl"));
        assert!(reason("https:///pkg-1.0.tar.gz").contains("no host"));
        assert!(reason("https://example.org").contains("no path"));
        assert!(PackageSpec::url("https://e.org/pkg-1.0.zip", Some("xyz"))
            .unwrap_err()
            .to_string()
            .contains("64 hex"));
        let long = format!("https://e.org/{}/pkg-1.0.zip", "a".repeat(MAX_URL_CHARS));
        assert!(reason(&long).contains("too long"));
    }

    #[test]
    fn local_files_must_exist_be_files_and_be_small() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("pkg-1.0.tar.gz");
        std::fs::write(&good, b"x").unwrap();
        assert_eq!(
            PackageSpec::parse(good.to_str().unwrap()).unwrap(),
            PackageSpec::Local { path: good.clone() }
        );
        let missing = dir.path().join("other-1.0.tar.gz");
        assert!(reason(missing.to_str().unwrap()).contains("cannot read"));
        let directory = dir.path().join("dir-1.0.zip");
        std::fs::create_dir(&directory).unwrap();
        assert!(reason(directory.to_str().unwrap()).contains("not a regular file"));
        let big = dir.path().join("big-1.0-py3-none-any.whl");
        let file = std::fs::File::create(&big).unwrap();
        file.set_len(MAX_PACKAGE_FILE_BYTES + 1).unwrap();
        assert!(reason(big.to_str().unwrap()).contains("limit"));
        let badname = dir.path().join("notapackage.tar.gz");
        std::fs::write(&badname, b"x").unwrap();
        assert!(reason(badname.to_str().unwrap()).contains("name-version"));
    }

    #[test]
    fn wheel_names_are_split_into_name_version_and_tags() {
        let f = DistFile::parse(
            "charset_normalizer-3.3.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
        )
        .unwrap();
        assert_eq!(f.kind, DistKind::Wheel);
        assert_eq!(f.dist_name, "charset-normalizer");
        assert_eq!(f.version, "3.3.2");
        assert_eq!(f.python_tag, "cp311");
        assert_eq!(f.abi_tag, "cp311");
        assert!(f.platform_tag.contains("manylinux2014_x86_64"));
        let built = DistFile::parse("pkg-1.0-1build-py3-none-any.whl").unwrap();
        assert_eq!(built.abi_tag, "none");
        for bad in [
            "pkg-1.0-py3-none.whl",
            "pkg-1.0-x-py3-none-any.whl",
            "pkg-1.0-py3--any.whl",
            "pkg-1.0-a-b-c-d-e.whl",
            "../pkg-1.0-py3-none-any.whl",
            "pkg 1.0-py3-none-any.whl",
            ".pkg-1.0-py3-none-any.whl",
            "pkg-one-py3-none-any.whl",
        ] {
            assert!(DistFile::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn sdist_names_take_the_version_after_the_last_dash() {
        let f = DistFile::parse("python-dateutil-2.8.2.tar.gz").unwrap();
        assert_eq!(f.kind, DistKind::Sdist);
        assert_eq!(f.dist_name, "python-dateutil");
        assert_eq!(f.version, "2.8.2");
        let z = DistFile::parse("Pkg_Name-1.0.zip").unwrap();
        assert_eq!(z.dist_name, "pkg-name");
        for bad in [
            "pkg.tar.gz",
            "pkg-.tar.gz",
            "-1.0.tar.gz",
            "pkg-1.0.tar.bz2",
            "pkg-1.0.tar",
            "pkg-1.0/../x.tar.gz",
            "pkg-1.0.tar.gz\n",
            "",
        ] {
            assert!(DistFile::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(DistFile::parse(&format!("{}-1.0.tar.gz", "a".repeat(300))).is_err());
    }

    #[test]
    fn uploads_are_checked_against_their_hash() {
        let dir = tempfile::tempdir().unwrap();
        let content = b"not really a tarball";
        let sha = hex::encode(Sha256::digest(content));
        let wire = pyti_wire::job::PackageSpec::upload("pkg-1.0.tar.gz", &sha, content);
        let spec = PackageSpec::from_wire(&wire, dir.path()).unwrap();
        assert_eq!(
            spec,
            PackageSpec::Local {
                path: dir.path().join("pkg-1.0.tar.gz")
            }
        );
        let wrong = pyti_wire::job::PackageSpec::upload("pkg-1.0.tar.gz", &"0".repeat(64), content);
        let err = PackageSpec::from_wire(&wrong, dir.path()).unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{err}");
        let traversal = pyti_wire::job::PackageSpec::upload("../x-1.0.tar.gz", &sha, content);
        assert!(PackageSpec::from_wire(&traversal, dir.path()).is_err());
        let pypi = pyti_wire::job::PackageSpec::pypi("six==1.16.0").unwrap();
        assert_eq!(
            PackageSpec::from_wire(&pypi, dir.path())
                .unwrap()
                .to_string(),
            "six==1.16.0"
        );
    }
}
