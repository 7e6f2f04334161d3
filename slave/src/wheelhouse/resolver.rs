//! The resolver: uv, installed from PyPI into the cache directory, run as
//! `uv pip compile --no-build` for the guest's interpreter and platform, its `pylock.toml` parsed
//! into the files to download.

use super::host_command::{message_tail, run_tool};
use super::{GuestTarget, WheelhouseError, WheelhouseSettings, MAX_RESOLVER_MESSAGE_BYTES};
use crate::package::{DistFile, DistKind};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use tokio::process::Command;

/// The uv release the slave installs (its version is part of no resolution cache key because a
/// pinned release resolves the same way).
pub(crate) use pyti_wire::recipe::UV_VERSION;
/// Longest the one-time `pip install uv` may take.
const TOOL_INSTALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);
/// Phrases in uv's message meaning the index could not be reached (retry) rather than that the
/// package cannot be resolved (the package's fault).
const NETWORK_PHRASES: &[&str] = &[
    "Failed to fetch",
    "error sending request",
    "dns error",
    "Connection refused",
    "connection closed",
    "operation timed out",
    "Request failed after",
    "tcp connect error",
];

/// Serialises installs of uv within this process; across processes the install is atomic (a
/// rename of a complete directory).
static INSTALL_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A ready-to-run uv.
pub(crate) struct Resolver {
    uv: PathBuf,
    cache: PathBuf,
}

/// One package of a resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LockedPackage {
    /// PEP 503 normalised.
    pub name: String,
    pub version: String,
    pub file: LockedFile,
}

/// Where a locked package's file comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LockedFile {
    /// A file the slave gave the resolver (the package under test, or an sdist fetched because
    /// a package has no wheel for the guest).
    Local,
    Remote(RemoteFile),
}

/// What one resolver run found.
#[derive(Debug)]
pub(crate) enum Compiled {
    Locked(Vec<LockedPackage>),
    /// These packages (PEP 503 names, with the exact version uv wanted when it said so) have no
    /// wheel for the guest: the caller may offer their sdists as files, whose static metadata
    /// uv reads without building.
    NeedsSdists {
        packages: Vec<(String, Option<String>)>,
        message: String,
    },
}

/// A wheel or sdist on the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RemoteFile {
    pub url: String,
    pub filename: String,
    pub sha256: String,
    /// As announced by the index (checked again after download).
    pub size: Option<u64>,
    pub kind: DistKind,
}

impl Resolver {
    /// Installs uv into `<cache>/tools/uv-<version>` on first use.
    pub async fn ensure(settings: &WheelhouseSettings) -> Result<Resolver, WheelhouseError> {
        let tools = settings.tools_dir.clone();
        let home = tools.join(format!("uv-{UV_VERSION}"));
        let uv = home.join("bin").join("uv");
        let resolver = Resolver {
            uv: uv.clone(),
            cache: settings.cache_dir.join("uv-cache"),
        };
        if tokio::fs::metadata(&uv).await.is_ok() {
            return Ok(resolver);
        }
        let _guard = INSTALL_LOCK.lock().await;
        if tokio::fs::metadata(&uv).await.is_ok() {
            return Ok(resolver);
        }
        tokio::fs::create_dir_all(&tools)
            .await
            .map_err(WheelhouseError::io("cannot create", &tools))?;
        let partial = tempfile::Builder::new()
            .prefix(".uv-install-")
            .tempdir_in(&tools)
            .map_err(WheelhouseError::io("cannot create a directory in", &tools))?;
        let mut command = Command::new(&settings.python);
        command
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "--quiet",
                // A wheel only: installing the resolver must not build anything either.
                "--only-binary=:all:",
                "--no-deps",
                "--index-url",
                &settings.index_url,
                "--target",
            ])
            .arg(partial.path())
            .arg(format!("uv=={UV_VERSION}"))
            .env("PIP_NO_CACHE_DIR", "1")
            // The host's pip configuration (extra indexes, `no-binary`) must not apply.
            .env("PIP_CONFIG_FILE", "/dev/null");
        let python = settings.python.display().to_string();
        let output = run_tool(command, b"", TOOL_INSTALL_TIMEOUT)
            .await?
            .ok_or_else(|| WheelhouseError::ToolInstall {
                python: python.clone(),
                message: "pip did not finish in time".into(),
            })?;
        if !output.success
            || tokio::fs::metadata(partial.path().join("bin/uv"))
                .await
                .is_err()
        {
            return Err(WheelhouseError::ToolInstall {
                python,
                message: message_tail(&output.stderr, MAX_RESOLVER_MESSAGE_BYTES),
            });
        }
        let partial = partial.keep();
        match tokio::fs::rename(&partial, &home).await {
            Ok(()) => {}
            // Another slave process installed it meanwhile.
            Err(_) if tokio::fs::metadata(&uv).await.is_ok() => {
                let _ = tokio::fs::remove_dir_all(&partial).await;
            }
            Err(source) => {
                return Err(WheelhouseError::Io {
                    action: "cannot move the resolver into",
                    path: home,
                    source,
                })
            }
        }
        Ok(resolver)
    }

    /// The uv binary.
    pub fn uv(&self) -> &Path {
        &self.uv
    }

    /// Resolves `requirements` for `target` without building anything; `work` receives the
    /// requirements and lock files.
    pub async fn compile(
        &self,
        spec: &str,
        requirements: &[String],
        target: &GuestTarget,
        settings: &WheelhouseSettings,
        work: &Path,
    ) -> Result<Compiled, WheelhouseError> {
        tokio::fs::create_dir_all(work)
            .await
            .map_err(WheelhouseError::io("cannot create", work))?;
        let input = work.join("requirements.in");
        let lock = work.join("pylock.toml");
        let mut text = requirements.join("\n");
        text.push('\n');
        tokio::fs::write(&input, text)
            .await
            .map_err(WheelhouseError::io("cannot write", &input))?;
        let mut command = Command::new(&self.uv);
        command
            .args(["pip", "compile", "--quiet", "--no-build", "--no-config"])
            .args(["--python-version", &target.python_version])
            .args(["--python-platform", &target.resolver_platform()])
            .args(["--default-index", &settings.index_url])
            .arg("--cache-dir")
            .arg(&self.cache)
            .arg("--output-file")
            .arg(&lock)
            .arg(&input)
            .current_dir(work);
        // Only the flags above configure the resolver: an inherited `UV_EXTRA_INDEX_URL` or
        // `UV_NO_BUILD_ISOLATION` would change where packages come from or what runs.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("UV_") {
                command.env_remove(key);
            }
        }
        let output = run_tool(command, b"", settings.resolver_timeout)
            .await?
            .ok_or_else(|| WheelhouseError::Timeout {
                spec: spec.to_string(),
                secs: settings.resolver_timeout.as_secs(),
            })?;
        if !output.success {
            // Files the slave staged appear in uv's message as long temporary paths; the file
            // name is what the user needs.
            let mut stderr = output.stderr;
            if let Some(root) = work.parent() {
                let root = root.display().to_string();
                stderr = stderr
                    .replace(&format!("file://{root}/"), "")
                    .replace(&format!("{root}/"), "");
            }
            let packages = packages_without_wheels(&stderr);
            if !packages.is_empty() {
                return Ok(Compiled::NeedsSdists {
                    packages,
                    message: message_tail(&stderr, MAX_RESOLVER_MESSAGE_BYTES),
                });
            }
            return Err(classify_failure(spec, &stderr));
        }
        let text = tokio::fs::read_to_string(&lock)
            .await
            .map_err(WheelhouseError::io(
                "cannot read the resolver's output",
                &lock,
            ))?;
        parse_lock(spec, &text, &target.abi_tag()).map(Compiled::Locked)
    }
}

/// The packages uv's `--no-build` failure names as needing a wheel ("Wheels are required for
/// `docopt` ..."), each with the version uv wanted if it pinned one ("docopt==0.6.2 has no usable
/// wheels").
fn packages_without_wheels(stderr: &str) -> Vec<(String, Option<String>)> {
    const HINT: &str = "Wheels are required for `";
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    for (index, _) in stderr.match_indices(HINT) {
        let rest = &stderr[index + HINT.len()..];
        let Some(end) = rest.find('`') else { continue };
        let name = &rest[..end];
        if crate::package::validate_dist_name(name).is_err() {
            continue;
        }
        let pinned = format!("{name}==");
        let version = stderr.match_indices(&pinned).find_map(|(at, _)| {
            let after = &stderr[at + pinned.len()..];
            let version = after.split(' ').next()?;
            after[version.len()..]
                .starts_with(" has no usable wheels")
                .then(|| version.to_string())
        });
        let name = pyti_wire::job::normalize_name(name);
        if !out.iter().any(|(n, _)| *n == name) {
            out.push((name, version));
        }
    }
    out
}

/// Turns uv's failure message into the right error (package fault or network trouble).
fn classify_failure(spec: &str, stderr: &str) -> WheelhouseError {
    let message = message_tail(stderr, MAX_RESOLVER_MESSAGE_BYTES);
    let spec = spec.to_string();
    if stderr.contains("Building source distributions") && stderr.contains("is disabled") {
        WheelhouseError::DynamicMetadata { spec, message }
    } else if NETWORK_PHRASES.iter().any(|p| stderr.contains(p)) {
        WheelhouseError::Network { spec, message }
    } else {
        WheelhouseError::Resolution { spec, message }
    }
}

#[derive(Deserialize)]
struct Lock {
    #[serde(default)]
    packages: Vec<LockEntry>,
}

#[derive(Deserialize)]
struct LockEntry {
    name: String,
    version: Option<String>,
    #[serde(default)]
    wheels: Vec<LockFile>,
    sdist: Option<LockFile>,
    archive: Option<LockFile>,
    vcs: Option<toml::Value>,
    directory: Option<toml::Value>,
}

#[derive(Deserialize)]
struct LockFile {
    url: Option<String>,
    path: Option<String>,
    name: Option<String>,
    size: Option<u64>,
    #[serde(default)]
    hashes: std::collections::BTreeMap<String, String>,
}

/// Parses a PEP 751 lock file as uv writes it, choosing one wheel per package (the most specific
/// to the guest's ABI: `cp311`, then `abi3`, then pure Python) or else its sdist.
fn parse_lock(spec: &str, text: &str, abi: &str) -> Result<Vec<LockedPackage>, WheelhouseError> {
    let bad = |message: String| WheelhouseError::Resolution {
        spec: spec.to_string(),
        message,
    };
    let lock: Lock = toml::from_str(text).map_err(|e| bad(format!("unreadable lock file: {e}")))?;
    let mut out = Vec::new();
    for entry in lock.packages {
        let name = pyti_wire::job::normalize_name(&entry.name);
        let version = entry.version.clone().unwrap_or_default();
        if entry.vcs.is_some() || entry.directory.is_some() {
            return Err(bad(format!(
                "`{name}` comes from a VCS or a directory; pyti only ships index files"
            )));
        }
        let local = entry
            .archive
            .as_ref()
            .or(entry.sdist.as_ref())
            .into_iter()
            .chain(entry.wheels.iter())
            .any(|f| f.url.is_none() && f.path.is_some());
        if local {
            out.push(LockedPackage {
                name,
                version,
                file: LockedFile::Local,
            });
            continue;
        }
        if entry.archive.is_some() {
            return Err(bad(format!(
                "`{name}` is a direct URL dependency; pyti only ships index files"
            )));
        }
        let best_wheel = entry
            .wheels
            .iter()
            .filter_map(|w| remote_file(w).ok().map(|r| (wheel_score(&r, abi), r)))
            .filter(|(score, _)| *score > 0)
            .max_by_key(|(score, _)| *score)
            .map(|(_, r)| r);
        let file = match (best_wheel, &entry.sdist) {
            (Some(wheel), _) => wheel,
            (None, Some(sdist)) => remote_file(sdist).map_err(bad)?,
            (None, None) => {
                return Err(bad(format!(
                    "`{name}` {version} has no wheel for the guest and no sdist"
                )))
            }
        };
        out.push(LockedPackage {
            name,
            version,
            file: LockedFile::Remote(file),
        });
    }
    Ok(out)
}

fn remote_file(file: &LockFile) -> Result<RemoteFile, String> {
    let url = file.url.clone().ok_or("a lock entry has no URL")?;
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(format!("unsupported URL `{url}`"));
    }
    let filename = match &file.name {
        Some(name) => name.clone(),
        None => {
            let path = url.split(['?', '#']).next().unwrap_or(&url);
            path.rsplit('/').next().unwrap_or_default().to_string()
        }
    };
    let dist = DistFile::parse(&filename).map_err(|e| e.to_string())?;
    let sha256 = file
        .hashes
        .get("sha256")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| format!("`{filename}` has no sha256 in the lock"))?
        .to_ascii_lowercase();
    Ok(RemoteFile {
        url,
        filename,
        sha256,
        size: file.size,
        kind: dist.kind,
    })
}

/// Higher is more specific to the guest; 0 is not installable there (uv already filtered by
/// platform, this only ranks).
fn wheel_score(file: &RemoteFile, abi: &str) -> u32 {
    let Ok(dist) = DistFile::parse(&file.filename) else {
        return 0;
    };
    let abis: Vec<&str> = dist.abi_tag.split('.').collect();
    if abis.contains(&abi) {
        3
    } else if abis.contains(&"abi3") {
        2
    } else if abis.contains(&"none") {
        1
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCK: &str = r#"
lock-version = "1.0"
created-by = "uv"

[[packages]]
name = "charset-normalizer"
version = "3.5.2"
wheels = [
    { url = "https://f/charset_normalizer-3.5.2-cp37-abi3-manylinux1_x86_64.whl", size = 253276, hashes = { sha256 = "1c50fe28bbc2ced33386f298650d91218076c05420e6cbd790b913adc41659e7" } },
    { url = "https://f/charset_normalizer-3.5.2-cp311-cp311-manylinux2014_x86_64.whl", size = 269972, hashes = { sha256 = "211d5a3eb6af8f513b8d4ca19a8c1b7accab1b5f0d3175f9826b03c1a920dc1f" } },
    { url = "https://f/charset_normalizer-3.5.2-py3-none-any.whl", size = 68872, hashes = { sha256 = "b6b751274acb69d77b3323d6b7dbaa3c7fdfc1eb829b7eb61d262f32e1af9685" } },
]

[[packages]]
name = "Some_Sdist"
version = "1.0"
sdist = { url = "https://f/some_sdist-1.0.tar.gz", size = 10, hashes = { sha256 = "ab7ae7122974553370f0bdb919e1a960b2cd1bc1ef0276416d896db81c14582c" } }

[[packages]]
name = "markpkg"
version = "1.0"
archive = { path = "/tmp/x/markpkg-1.0.tar.gz", hashes = { sha256 = "2bf0410a8a1eea17623efa9896520a95ebfd6e22b5bd215674901b80c20271f7" } }
"#;

    #[test]
    fn the_lock_yields_one_file_per_package_preferring_the_guest_abi() {
        let locked = parse_lock("x", LOCK, "cp311").unwrap();
        assert_eq!(locked.len(), 3);
        let LockedFile::Remote(wheel) = &locked[0].file else {
            panic!("remote expected")
        };
        assert!(wheel.filename.contains("cp311-cp311"), "{}", wheel.filename);
        assert_eq!(wheel.size, Some(269972));
        assert_eq!(locked[1].name, "some-sdist");
        let LockedFile::Remote(sdist) = &locked[1].file else {
            panic!("remote expected")
        };
        assert_eq!(sdist.kind, DistKind::Sdist);
        assert_eq!(locked[2].file, LockedFile::Local);
        // Another interpreter falls back to the abi3 wheel.
        let locked = parse_lock("x", LOCK, "cp312").unwrap();
        let LockedFile::Remote(wheel) = &locked[0].file else {
            panic!("remote expected")
        };
        assert!(wheel.filename.contains("abi3"), "{}", wheel.filename);
    }

    #[test]
    fn vcs_direct_urls_and_missing_hashes_are_refused() {
        let vcs = "[[packages]]\nname = \"a\"\nvcs = { type = \"git\", url = \"https://x\" }\n";
        assert!(parse_lock("x", vcs, "cp311").is_err());
        let direct = "[[packages]]\nname = \"a\"\narchive = { url = \"https://x/a-1.tar.gz\" }\n";
        assert!(parse_lock("x", direct, "cp311").is_err());
        let unhashed = "[[packages]]\nname = \"a\"\nsdist = { url = \"https://x/a-1.0.tar.gz\" }\n";
        let err = parse_lock("x", unhashed, "cp311").unwrap_err();
        assert!(err.to_string().contains("sha256"), "{err}");
        let sneaky = "[[packages]]\nname = \"a\"\nsdist = { url = \"https://x/..%2f.tar.gz\", hashes = { sha256 = \"00\" } }\n";
        assert!(parse_lock("x", sneaky, "cp311").is_err());
    }

    #[test]
    fn packages_without_wheels_are_read_from_uvs_hint() {
        let pinned = "error: No solution found when resolving dependencies\n  cause: Because docopt==0.6.2 has no usable wheels and you require docopt==0.6.2, we can conclude that your requirements are unsatisfiable.\n\nhint: Wheels are required for `docopt` because building from source is disabled for all packages (i.e., with `--no-build`)";
        assert_eq!(
            packages_without_wheels(pinned),
            vec![("docopt".to_string(), Some("0.6.2".to_string()))]
        );
        let ranged = "  cause: Because docopt>=0.6.0 has no usable wheels and markpkg2==1.0 depends on docopt>=0.6, we can conclude that markpkg2==1.0 cannot be used.\nhint: Wheels are required for `docopt` because building from source is disabled";
        assert_eq!(
            packages_without_wheels(ranged),
            vec![("docopt".to_string(), None)]
        );
        assert!(packages_without_wheels("error: no version of six==99").is_empty());
        assert!(packages_without_wheels("Wheels are required for `../x` because").is_empty());
    }

    #[test]
    fn uv_failures_are_classified() {
        let e = classify_failure(
            "a==1",
            "error: No solution found\n  cause: Because there is no version of a==1",
        );
        assert!(matches!(e, WheelhouseError::Resolution { .. }) && e.is_package_fault());
        assert!(e.to_string().contains("there is no version of a==1"));
        let e = classify_failure(
            "a==1",
            "error: Failed to build `a`\n  cause: Building source distributions for `a` is disabled",
        );
        assert!(matches!(e, WheelhouseError::DynamicMetadata { .. }) && e.is_package_fault());
        assert!(e.to_string().contains("never runs package code"));
        let e = classify_failure(
            "a==1",
            "error: Request failed after 3 retries\n  Caused by: dns error",
        );
        assert!(matches!(e, WheelhouseError::Network { .. }) && !e.is_package_fault());
        let long = "x".repeat(100_000);
        assert!(
            classify_failure("a==1", &long).to_string().len() < MAX_RESOLVER_MESSAGE_BYTES + 200
        );
    }
}
