//! The wheelhouse: the package under test and every dependency, as files the offline guest
//! installs from (the shipped recipe runs `uv pip install --offline --no-index --find-links
//! wheelhouse ...` with the same pinned uv baked into the image, see [`uv_binary`]).
//!
//! Resolution happens on the host for the *guest's* interpreter and platform, and never runs
//! package code: the resolver reads wheel metadata (PEP 658) and the static metadata of sdists
//! (PKG-INFO 2.2+ without `Dynamic: Requires-Dist`); an sdist is shipped as is and built inside the
//! guest, with setuptools, wheel and its `[build-system] requires` shipped as wheels so the PEP 517
//! build works offline.
//!
//! # Why uv and not `pip download`
//! `pip download --only-binary=:all: --platform ... --abi cp311` resolves for a foreign platform,
//! but only over wheels: a dependency without a wheel is a resolution failure, and without
//! `--only-binary` pip builds sdists to read their metadata, i.e. runs `setup.py` on the host.
//! `uv pip compile --no-build --python-platform x86_64-manylinux_2_36 --python-version 3.11`
//! resolves the same set from wheel metadata and writes a PEP 751 `pylock.toml` with every file's
//! URL, size and sha256, which the slave downloads itself (in parallel) into a content-addressed
//! cache. uv also reads the static metadata of an sdist *file* it is given without building it,
//! and refuses with a clear message when it would have to build; so a package without a wheel
//! (uv's `--no-build` failure names it) is fetched as its sdist from the index (PEP 691 JSON) and
//! offered to the next uv run as a file. uv is a static binary installed from PyPI (pinned, with
//! `pip install --only-binary=:all: --target`) into the tools directory, so the host's
//! site-packages are never touched.
//!
//! Measured here (2 cores, shared with TCG guests) for `requests==2.31.0` + setuptools + wheel:
//! `pip download` 2.1 s cold and 2.1 s again with a warm pip cache (it re-fetches index pages);
//! `uv pip compile` alone 0.5 s cold, 0.6 s warm. The whole [`prepare_wheelhouse`]: 1.5 s cold
//! (8 files, 1.7 MB; up to 3.8 s while guests load the cores; plus 2.6-20 s once per tools
//! directory to install uv), 1.0 s when the resolution has expired but every file is cached
//! (nothing downloaded), under 1 ms when the cached resolution is reused
//! ([`Wheelhouse::from_cache`]: no resolver, no network).
//!
//! # Layout
//! - [`GuestTarget`]: the interpreter and platform the wheelhouse is for.
//! - [`WheelhouseSettings`] and [`WheelhouseLimits`]: where the cache lives, the index, bounds.
//! - [`prepare_wheelhouse`] → [`Wheelhouse`]: the staged files, ready for the I/O disk.
//! - [`prune_cache`]: keeps the shared cache under a size (least recently used files first).
//! - `resolution` (package, dependencies, sdist fallbacks, build requirements), `resolver` (uv),
//!   `blob_store` (content-addressed cache), `helper` (downloads, index listings and sdist
//!   inspection in a standard-library-only Python script), `manifest` (cached resolutions).

mod blob_store;
mod error;
mod helper;
mod host_command;
mod manifest;
mod prune;
mod resolution;
mod resolver;

pub use error::WheelhouseError;
pub use prune::{prune_cache, PruneReport, DEFAULT_MAX_CACHE_BYTES};

use crate::package::{PackageSpec, MAX_PACKAGE_FILE_BYTES};
use blob_store::BlobStore;
use manifest::{FileRole, Manifest, ManifestFile};
use resolution::Resolution;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Default bound on everything copied onto the I/O disk for one task: a few large scientific
/// wheels fit, a runaway dependency tree does not.
pub const DEFAULT_MAX_WHEELHOUSE_BYTES: u64 = 512 * 1024 * 1024;
/// Default bound on the number of files (dependencies) in one wheelhouse.
pub const DEFAULT_MAX_WHEELHOUSE_FILES: usize = 512;
/// The index the resolver and downloads use unless configured otherwise.
pub const DEFAULT_INDEX_URL: &str = "https://pypi.org/simple";
/// How long a cached resolution of a spec is reused before it is resolved again (new
/// dependency releases are picked up daily; within a day repeated tasks are reproducible).
pub const DEFAULT_RESOLUTION_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Longest a resolver run may take: PyPI answers in seconds; minutes mean a hung connection.
pub const DEFAULT_RESOLVER_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest one file download may take (a 64 MiB wheel at a slow 1 MiB/s).
pub const DEFAULT_DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// Bytes of the resolver's own message kept in an error (its explanation is at the end).
pub const MAX_RESOLVER_MESSAGE_BYTES: usize = 4 * 1024;
/// Always shipped so PEP 517 builds of sdists (and legacy setup.py projects) work offline.
pub(crate) const ALWAYS_SHIPPED: &[&str] = &["setuptools", "wheel"];

/// The guest's interpreter and platform, which the wheelhouse is resolved for (not the host's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestTarget {
    /// `major.minor` of the guest's CPython, e.g. `3.11`.
    pub python_version: String,
    /// CPU architecture as in wheel platform tags, e.g. `x86_64`.
    pub arch: String,
    /// glibc `(major, minor)` of the guest: wheels tagged `manylinux_X_Y` with X.Y at most this
    /// install there.
    pub glibc: (u32, u32),
}

impl GuestTarget {
    /// Debian 12 (bookworm) on x86-64: CPython 3.11, glibc 2.36.
    pub fn debian_12() -> GuestTarget {
        GuestTarget {
            python_version: "3.11".into(),
            arch: "x86_64".into(),
            glibc: (2, 36),
        }
    }

    /// The CPython ABI tag (`cp311`).
    pub fn abi_tag(&self) -> String {
        format!("cp{}", self.python_version.replace('.', ""))
    }

    /// The resolver's name for the platform (`x86_64-manylinux_2_36`).
    fn resolver_platform(&self) -> String {
        format!("{}-manylinux_{}_{}", self.arch, self.glibc.0, self.glibc.1)
    }

    fn cache_key(&self) -> String {
        format!(
            "python={} platform={}",
            self.python_version,
            self.resolver_platform()
        )
    }
}

/// Where and how wheelhouses are built; one per slave, shared by its slots.
#[derive(Debug, Clone)]
pub struct WheelhouseSettings {
    /// Holds the resolver binary, its cache, the content-addressed file cache and cached
    /// resolutions. Staged wheelhouses are created under it too (same filesystem: hard links).
    pub cache_dir: PathBuf,
    /// Where uv and the helper script are installed (default `<cache_dir>/tools`); several
    /// caches may share one.
    pub tools_dir: PathBuf,
    /// The host interpreter used to install uv (`-m pip`) and to run the download helper.
    pub python: PathBuf,
    /// Simple-API index URL.
    pub index_url: String,
    /// Never touch the network: serve cached resolutions only (fails with
    /// [`WheelhouseError::NotCached`] otherwise). For slaves whose index is unreachable.
    pub offline: bool,
    pub resolution_ttl: Duration,
    pub resolver_timeout: Duration,
    pub download_timeout: Duration,
}

impl WheelhouseSettings {
    /// Defaults: `python3` from `PATH`, PyPI, online, the `DEFAULT_*` durations.
    pub fn new(cache_dir: impl Into<PathBuf>) -> WheelhouseSettings {
        let cache_dir = cache_dir.into();
        WheelhouseSettings {
            tools_dir: cache_dir.join("tools"),
            cache_dir,
            python: PathBuf::from("python3"),
            index_url: DEFAULT_INDEX_URL.to_string(),
            offline: false,
            resolution_ttl: DEFAULT_RESOLUTION_TTL,
            resolver_timeout: DEFAULT_RESOLVER_TIMEOUT,
            download_timeout: DEFAULT_DOWNLOAD_TIMEOUT,
        }
    }
}

/// Bounds on one wheelhouse (checked against the index's announced sizes before downloading,
/// and against the real files after).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WheelhouseLimits {
    /// Package file plus wheelhouse, in bytes.
    pub max_total_bytes: u64,
    pub max_files: usize,
    /// The package under test itself (local file or URL download).
    pub max_package_bytes: u64,
}

impl Default for WheelhouseLimits {
    fn default() -> Self {
        WheelhouseLimits {
            max_total_bytes: DEFAULT_MAX_WHEELHOUSE_BYTES,
            max_files: DEFAULT_MAX_WHEELHOUSE_FILES,
            max_package_bytes: MAX_PACKAGE_FILE_BYTES,
        }
    }
}

/// One file of a wheelhouse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WheelhouseFile {
    pub name: String,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
}

/// A staged wheelhouse, ready to copy onto a task's I/O disk: `dir` becomes
/// [`pyti_wire::io_layout::WHEELHOUSE_DIR`], `package_file` goes into
/// [`pyti_wire::io_layout::PACKAGE_DIR`]. The staging directory is removed when this is dropped.
#[derive(Debug)]
pub struct Wheelhouse {
    /// The dependency files (wheels, and sdists to build in the guest), flat.
    pub dir: PathBuf,
    /// The package under test when it is a file (local or URL spec); `None` for a PyPI release,
    /// which is installed by `name==version` from `dir`.
    pub package_file: Option<PathBuf>,
    /// PEP 503 normalised distribution name, from the resolver's metadata.
    pub dist_name: String,
    pub version: String,
    /// Files in `dir`, sorted by name (the package file is not among them).
    pub files: Vec<WheelhouseFile>,
    /// The package file, if any.
    pub package: Option<WheelhouseFile>,
    /// Everything staged: `files` plus `package`.
    pub total_bytes: u64,
    /// The resolution was reused from the cache: no resolver ran, nothing was downloaded.
    pub from_cache: bool,
    /// Bytes fetched from the network for this wheelhouse (0 when every file was cached).
    pub downloaded_bytes: u64,
    /// Wall time of [`prepare_wheelhouse`].
    pub elapsed: Duration,
    _staging: tempfile::TempDir,
}

/// The slave's pinned uv ([`pyti_wire::recipe::UV_VERSION`]), installed under
/// `settings.tools_dir` on first use: the resolver here, and the offline installer images bake
/// in for recipes with `tools = ["uv"]`.
pub async fn uv_binary(settings: &WheelhouseSettings) -> Result<PathBuf, WheelhouseError> {
    Ok(resolver::Resolver::ensure(settings)
        .await?
        .uv()
        .to_path_buf())
}

/// Resolves `spec` and its dependencies for `target`, downloads what the cache lacks, and stages
/// the wheelhouse. No package code runs on the host (see the module documentation).
pub async fn prepare_wheelhouse(
    spec: &PackageSpec,
    target: &GuestTarget,
    settings: &WheelhouseSettings,
    limits: &WheelhouseLimits,
) -> Result<Wheelhouse, WheelhouseError> {
    let started = Instant::now();
    let store = BlobStore::open(&settings.cache_dir).await?;
    let staging_root = settings.cache_dir.join("staging");
    tokio::fs::create_dir_all(&staging_root)
        .await
        .map_err(WheelhouseError::io("cannot create", &staging_root))?;
    let staging = tempfile::Builder::new()
        .prefix("wheelhouse-")
        .tempdir_in(&staging_root)
        .map_err(WheelhouseError::io(
            "cannot create a directory in",
            &staging_root,
        ))?;
    let mut downloaded_bytes = 0;

    // The package file (local or URL) goes into the store first: its hash is part of the key.
    let package_blob = match spec {
        PackageSpec::Pypi { .. } => None,
        PackageSpec::Local { path } => {
            let (sha, size) = store.ingest_local(path, limits.max_package_bytes).await?;
            Some((spec.filename().unwrap_or_default(), sha, size))
        }
        PackageSpec::Url { url, sha256 } => {
            let filename = spec.filename().unwrap_or_default();
            let cached = manifest::url_package(&settings.cache_dir, url, sha256.as_deref()).await;
            match cached {
                Some((sha, size)) if store.contains(&sha) => Some((filename, sha, size)),
                _ if settings.offline => {
                    return Err(WheelhouseError::NotCached {
                        spec: spec.to_string(),
                    })
                }
                _ => {
                    let (sha, size) = store
                        .download(
                            settings,
                            url,
                            sha256.as_deref(),
                            limits.max_package_bytes,
                            true,
                        )
                        .await?;
                    downloaded_bytes += size;
                    manifest::remember_url_package(
                        &settings.cache_dir,
                        url,
                        sha256.as_deref(),
                        &sha,
                        size,
                    )
                    .await?;
                    Some((filename, sha, size))
                }
            }
        }
    };
    let spec_key = match (&spec, &package_blob) {
        (PackageSpec::Pypi { name, version }, _) => {
            format!("pypi:{}=={version}", pyti_wire::job::normalize_name(name))
        }
        (_, Some((filename, sha, _))) => format!("file:{filename}:{sha}"),
        (_, None) => unreachable!("file and URL specs always have a package file"),
    };
    let key = manifest::key(&spec_key, &target.cache_key(), &settings.index_url);

    let cached = Manifest::load(&settings.cache_dir, &key).await;
    let usable = cached.filter(|m| {
        (settings.offline || m.is_fresh(settings.resolution_ttl))
            && m.files.iter().all(|f| store.contains(&f.sha256))
    });
    let (manifest, from_cache) = match usable {
        Some(manifest) => (manifest, true),
        None if settings.offline => {
            return Err(WheelhouseError::NotCached {
                spec: spec.to_string(),
            })
        }
        None => {
            let (manifest, fetched) = Resolution::run(
                spec,
                target,
                settings,
                limits,
                &store,
                package_blob.as_ref(),
                staging.path(),
            )
            .await?;
            downloaded_bytes += fetched;
            manifest.save(&settings.cache_dir, &key).await?;
            (manifest, false)
        }
    };

    check_limits(spec, &manifest.files, limits)?;
    let dir = staging.path().join(pyti_wire::io_layout::WHEELHOUSE_DIR);
    let package_dir = staging.path().join(pyti_wire::io_layout::PACKAGE_DIR);
    for d in [&dir, &package_dir] {
        tokio::fs::create_dir_all(d)
            .await
            .map_err(WheelhouseError::io("cannot create", d))?;
    }
    let mut files = Vec::new();
    let mut package = None;
    let mut package_file = None;
    for file in &manifest.files {
        let entry = WheelhouseFile {
            name: file.filename.clone(),
            size: file.size,
            sha256: file.sha256.clone(),
        };
        if file.role == FileRole::Package {
            let dest = package_dir.join(&file.filename);
            store.link_into(&file.sha256, &dest).await?;
            package_file = Some(dest);
            package = Some(entry);
        } else {
            store
                .link_into(&file.sha256, &dir.join(&file.filename))
                .await?;
            files.push(entry);
        }
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    let total_bytes = manifest.files.iter().map(|f| f.size).sum();
    tracing::info!(
        spec = %spec,
        files = files.len(),
        total_bytes,
        downloaded_bytes,
        from_cache,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "wheelhouse ready"
    );
    Ok(Wheelhouse {
        dir,
        package_file,
        dist_name: manifest.dist_name,
        version: manifest.version,
        files,
        package,
        total_bytes,
        from_cache,
        downloaded_bytes,
        elapsed: started.elapsed(),
        _staging: staging,
    })
}

pub(crate) fn check_limits(
    spec: &PackageSpec,
    files: &[ManifestFile],
    limits: &WheelhouseLimits,
) -> Result<(), WheelhouseError> {
    let bytes: u64 = files.iter().map(|f| f.size).sum();
    if bytes > limits.max_total_bytes || files.len() > limits.max_files {
        return Err(too_large(spec, bytes, files.len(), limits));
    }
    Ok(())
}

pub(crate) fn too_large(
    spec: &PackageSpec,
    bytes: u64,
    files: usize,
    limits: &WheelhouseLimits,
) -> WheelhouseError {
    WheelhouseError::TooLarge {
        spec: spec.to_string(),
        bytes,
        files,
        max_bytes: limits.max_total_bytes,
        max_files: limits.max_files,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_debian_12_target_names_its_abi_and_platform() {
        let target = GuestTarget::debian_12();
        assert_eq!(target.abi_tag(), "cp311");
        assert_eq!(target.resolver_platform(), "x86_64-manylinux_2_36");
    }

    #[test]
    fn limits_count_bytes_and_files() {
        let spec = PackageSpec::parse("six==1.16.0").unwrap();
        let file = |n: &str, size| ManifestFile {
            filename: n.into(),
            sha256: "0".repeat(64),
            size,
            role: FileRole::Dependency,
        };
        let limits = WheelhouseLimits {
            max_total_bytes: 100,
            max_files: 2,
            max_package_bytes: 100,
        };
        assert!(check_limits(&spec, &[file("a", 50), file("b", 50)], &limits).is_ok());
        let err = check_limits(&spec, &[file("a", 50), file("b", 51)], &limits).unwrap_err();
        assert!(err.to_string().contains("101 bytes"), "{err}");
        assert!(err.is_package_fault());
        let err =
            check_limits(&spec, &[file("a", 1), file("b", 1), file("c", 1)], &limits).unwrap_err();
        assert!(err.to_string().contains("3 files"), "{err}");
    }
}
