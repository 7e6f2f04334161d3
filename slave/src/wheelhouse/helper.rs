//! The Python side of the wheelhouse: `helper.py`, run with the host's interpreter in isolated
//! mode, downloads files and reads sdist metadata using only the standard library.

use super::host_command::{message_tail, run_tool};
use super::{WheelhouseError, WheelhouseSettings};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::Command;

const SCRIPT: &str = include_str!("helper.py");
/// Largest PKG-INFO or pyproject.toml read from an sdist (real ones are a few KiB; PKG-INFO
/// carries the long description).
const MAX_METADATA_MEMBER_BYTES: u64 = 1024 * 1024;
/// Longest the helper may take to read an sdist's metadata (it decompresses the archive).
const INSPECT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Deserialize)]
struct HelperError {
    kind: String,
    message: String,
}

#[derive(Deserialize)]
struct Fetched {
    results: Vec<FetchResult>,
}

#[derive(Deserialize)]
struct FetchResult {
    size: Option<u64>,
    failed: Option<HelperError>,
}

#[derive(Deserialize)]
struct Inspected {
    build_requires: Option<Vec<String>>,
}

/// Writes the script once per content (its name carries its hash, so versions never mix).
async fn script_path(settings: &WheelhouseSettings) -> Result<PathBuf, WheelhouseError> {
    let digest = hex::encode(Sha256::digest(SCRIPT.as_bytes()));
    let dir = settings.tools_dir.clone();
    let path = dir.join(format!("helper-{}.py", &digest[..16]));
    if tokio::fs::metadata(&path).await.is_ok() {
        return Ok(path);
    }
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(WheelhouseError::io("cannot create", &dir))?;
    let partial = dir.join(format!(
        ".helper-{}.{}.tmp",
        &digest[..16],
        std::process::id()
    ));
    tokio::fs::write(&partial, SCRIPT)
        .await
        .map_err(WheelhouseError::io("cannot write", &partial))?;
    tokio::fs::rename(&partial, &path)
        .await
        .map_err(WheelhouseError::io("cannot write", &path))?;
    Ok(path)
}

async fn call<T: for<'de> Deserialize<'de>>(
    settings: &WheelhouseSettings,
    command_name: &str,
    request: serde_json::Value,
    timeout: Duration,
) -> Result<Result<T, HelperError>, WheelhouseError> {
    let script = script_path(settings).await?;
    let mut command = Command::new(&settings.python);
    // -I: ignore PYTHON* variables and the user site; -S: no site-packages at all.
    command.arg("-I").arg("-S").arg(&script).arg(command_name);
    let output = run_tool(command, request.to_string().as_bytes(), timeout)
        .await?
        .ok_or_else(|| WheelhouseError::Helper(format!("{command_name} timed out")))?;
    let unexpected = || {
        WheelhouseError::Helper(format!(
            "{command_name}: {}",
            message_tail(&output.stderr, 2000)
        ))
    };
    let mut reply: serde_json::Value =
        serde_json::from_str(output.stdout.trim()).map_err(|_| unexpected())?;
    if let Some(error) = reply.get_mut("error") {
        let error: HelperError = serde_json::from_value(error.take()).map_err(|_| unexpected())?;
        return Ok(Err(error));
    }
    if !output.success {
        return Err(unexpected());
    }
    serde_json::from_value(reply)
        .map(Ok)
        .map_err(|_| unexpected())
}

/// Downloads running at once: PyPI serves many parallel connections; a few hide latency
/// without hogging the slave's bandwidth.
const PARALLEL_DOWNLOADS: usize = 4;

/// One file to download: to `dest` (which must not exist), at most `max_bytes`.
pub(crate) struct FetchRequest<'a> {
    pub url: &'a str,
    pub dest: &'a Path,
    pub max_bytes: u64,
}

/// Downloads every requested file (a few at a time, one helper process); one result per
/// request, in order: the size, or why it failed. `package_url` marks failures as the package's
/// fault (a user's URL answering 4xx) rather than the network's.
pub(crate) async fn fetch(
    settings: &WheelhouseSettings,
    requests: &[FetchRequest<'_>],
    package_url: bool,
) -> Result<Vec<Result<u64, WheelhouseError>>, WheelhouseError> {
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    let files: Vec<serde_json::Value> = requests
        .iter()
        .map(|r| serde_json::json!({"url": r.url, "dest": r.dest, "max_bytes": r.max_bytes}))
        .collect();
    let request = serde_json::json!({
        "files": files,
        "timeout_secs": settings.download_timeout.as_secs(),
        "parallel": PARALLEL_DOWNLOADS,
    });
    // The helper's socket timeout bounds each read; this bounds the whole batch.
    let rounds = requests.len().div_ceil(PARALLEL_DOWNLOADS) as u32;
    let overall = settings.download_timeout * (rounds + 1);
    let fetched = match call::<Fetched>(settings, "fetch", request, overall).await? {
        Ok(fetched) if fetched.results.len() == requests.len() => fetched,
        Ok(_) => {
            return Err(WheelhouseError::Helper(
                "fetch: the helper answered for a different number of files".into(),
            ))
        }
        Err(error) => return Err(WheelhouseError::Helper(error.message)),
    };
    Ok(fetched
        .results
        .into_iter()
        .zip(requests)
        .map(|(result, request)| match (result.size, result.failed) {
            (Some(size), None) => Ok(size),
            (_, failed) => {
                let error = failed.unwrap_or(HelperError {
                    kind: "unknown".into(),
                    message: "no result".into(),
                });
                Err(WheelhouseError::Download {
                    url: request.url.to_string(),
                    permanent: error.kind == "too_large"
                        || (package_url
                            && error.kind == "http"
                            && error.message.starts_with("HTTP 4")),
                    message: error.message,
                })
            }
        })
        .collect())
}

/// The `[build-system] requires` of an sdist (empty when it has no pyproject.toml or no such
/// table: then setuptools and wheel, which are always shipped, are its backend).
pub(crate) async fn build_requires(
    settings: &WheelhouseSettings,
    sdist: &Path,
    filename: &str,
) -> Result<Vec<String>, WheelhouseError> {
    let request = serde_json::json!({
        "path": sdist,
        "max_member_bytes": MAX_METADATA_MEMBER_BYTES,
        // The store names blobs by hash; the helper picks the archive format by extension.
        "format": if filename.ends_with(".zip") { "zip" } else { "tar" },
    });
    match call::<Inspected>(settings, "inspect", request, INSPECT_TIMEOUT).await? {
        Ok(inspected) => Ok(inspected.build_requires.unwrap_or_default()),
        Err(error) => Err(WheelhouseError::Resolution {
            spec: filename.to_string(),
            message: format!("{} ({})", error.message, error.kind),
        }),
    }
}

/// Largest project page read from the index (PyPI's biggest JSON pages are a few MiB).
const MAX_INDEX_PAGE_BYTES: u64 = 32 * 1024 * 1024;

/// An sdist the index lists for a project.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct IndexSdist {
    pub filename: String,
    pub url: String,
    pub sha256: Option<String>,
    pub size: Option<u64>,
    pub yanked: bool,
}

#[derive(Deserialize)]
struct IndexSdists {
    files: Vec<IndexSdist>,
}

/// The sdists the index lists for project `name` (PEP 691 JSON API).
pub(crate) async fn index_sdists(
    settings: &WheelhouseSettings,
    name: &str,
) -> Result<Vec<IndexSdist>, WheelhouseError> {
    let request = serde_json::json!({
        "index_url": settings.index_url,
        "name": name,
        "timeout_secs": settings.download_timeout.as_secs(),
        "max_bytes": MAX_INDEX_PAGE_BYTES,
    });
    let overall = settings.download_timeout * 2;
    match call::<IndexSdists>(settings, "sdists", request, overall).await? {
        Ok(listed) => Ok(listed.files),
        Err(error) if error.kind == "network" => Err(WheelhouseError::Network {
            spec: name.to_string(),
            message: error.message,
        }),
        Err(error) => Err(WheelhouseError::Resolution {
            spec: name.to_string(),
            message: format!("cannot list the sdists of `{name}`: {}", error.message),
        }),
    }
}
