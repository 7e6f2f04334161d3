//! One resolution: the package and its runtime dependencies, then what the guest needs to build
//! every sdist among them offline, all downloaded into the file cache and listed in a manifest.
//!
//! A package without a wheel for the guest is offered to the resolver as its sdist *file*:
//! uv reads a file's static metadata (PKG-INFO 2.2+, no dynamic dependencies) without building
//! it, and refuses, naming the package, when it would have to run the build backend.

use super::blob_store::BlobStore;
use super::helper;
use super::manifest::{FileRole, Manifest, ManifestFile};
use super::resolver::{Compiled, LockedFile, LockedPackage, RemoteFile, Resolver};
use super::{
    check_limits, too_large, GuestTarget, WheelhouseError, WheelhouseLimits, WheelhouseSettings,
    ALWAYS_SHIPPED,
};
use crate::package::{DistFile, DistKind, PackageSpec};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Resolutions of sdist build requirements (an sdist's build backend may itself be an sdist);
/// more rounds than this is a pathological package.
const MAX_BUILD_ROUNDS: usize = 3;
/// Packages without a wheel one resolution may fall back to sdists for: each costs a resolver
/// run, and a tree of dozens of sdist-only packages is better served by publishing wheels.
const MAX_SDIST_FALLBACKS: usize = 16;
/// Build requirements one sdist may list.
const MAX_BUILD_REQUIRES: usize = 64;
/// Length of one build requirement.
const MAX_REQUIREMENT_CHARS: usize = 256;

/// The package file handed in with the spec: file name, sha256, size.
pub(crate) type PackageBlob = (String, String, u64);

/// An sdist the resolver was given as a file because its package has no wheel for the guest.
struct FallbackSdist {
    filename: String,
    sha256: String,
    size: u64,
    path: PathBuf,
}

/// The state of one resolution.
pub(crate) struct Resolution<'a> {
    spec: &'a PackageSpec,
    spec_text: String,
    target: &'a GuestTarget,
    settings: &'a WheelhouseSettings,
    limits: &'a WheelhouseLimits,
    store: &'a BlobStore,
    package_blob: Option<&'a PackageBlob>,
    resolver: Resolver,
    work: PathBuf,
    runs: usize,
    files: BTreeMap<String, ManifestFile>,
    downloaded: u64,
    to_inspect: Vec<(String, PathBuf)>,
    fallbacks: BTreeMap<String, FallbackSdist>,
}

impl<'a> Resolution<'a> {
    /// Resolves `spec` (whose file, if any, is `package_blob` in `store`) and returns the
    /// manifest and the bytes downloaded.
    pub async fn run(
        spec: &'a PackageSpec,
        target: &'a GuestTarget,
        settings: &'a WheelhouseSettings,
        limits: &'a WheelhouseLimits,
        store: &'a BlobStore,
        package_blob: Option<&'a PackageBlob>,
        staging: &Path,
    ) -> Result<(Manifest, u64), WheelhouseError> {
        let resolver = Resolver::ensure(settings).await?;
        let work = staging.join("resolve");
        for dir in [work.join("package"), work.join("sdists")] {
            tokio::fs::create_dir_all(&dir)
                .await
                .map_err(WheelhouseError::io("cannot create", &dir))?;
        }
        let mut resolution = Resolution {
            spec,
            spec_text: spec.to_string(),
            target,
            settings,
            limits,
            store,
            package_blob,
            resolver,
            work,
            runs: 0,
            files: BTreeMap::new(),
            downloaded: 0,
            to_inspect: Vec::new(),
            fallbacks: BTreeMap::new(),
        };
        let (dist_name, version) = resolution.runtime().await?;
        resolution.build_requirements().await?;
        let manifest = Manifest::new(dist_name, version, resolution.files.into_values().collect());
        Ok((manifest, resolution.downloaded))
    }

    /// The package and its runtime dependencies; returns the package's name and version.
    async fn runtime(&mut self) -> Result<(String, String), WheelhouseError> {
        // The release, or the package file under its own name (uv reads name, version and
        // dependencies from the file's static metadata).
        let requirement = match (self.spec, self.package_blob) {
            (PackageSpec::Pypi { name, version }, _) => format!("{name}=={version}"),
            (_, Some((filename, sha, _))) => {
                let path = self.work.join("package").join(filename);
                self.store.link_into(sha, &path).await?;
                path.display().to_string()
            }
            (_, None) => {
                return Err(WheelhouseError::Helper(
                    "a file or URL spec reached the resolver without its file".into(),
                ))
            }
        };
        let locked = self.compile_with_fallbacks(&[requirement]).await?;
        let expected = self.spec.dist_name();
        let root = locked.iter().find(|p| p.name == expected).ok_or_else(|| {
            WheelhouseError::Resolution {
                spec: self.spec_text.clone(),
                message: format!(
                    "the resolver's result does not contain `{expected}`; is the file name the package's real name?"
                ),
            }
        })?;
        let (name, version) = (root.name.clone(), root.version.clone());
        self.add_locked(&locked, FileRole::Dependency, Some(&expected))
            .await?;
        Ok((name, version))
    }

    /// setuptools and wheel always, plus each sdist's `[build-system] requires`, each set
    /// resolved on its own (two sdists may pin conflicting backends; pip picks per build from
    /// the one wheelhouse).
    async fn build_requirements(&mut self) -> Result<(), WheelhouseError> {
        let mut sets: BTreeSet<Vec<String>> = BTreeSet::new();
        sets.insert(ALWAYS_SHIPPED.iter().map(|s| s.to_string()).collect());
        let mut resolved: BTreeSet<Vec<String>> = BTreeSet::new();
        for round in 1..=MAX_BUILD_ROUNDS + 1 {
            for (filename, path) in std::mem::take(&mut self.to_inspect) {
                let requires = helper::build_requires(self.settings, &path, &filename).await?;
                let requires = validate_build_requires(&self.spec_text, &filename, requires)?;
                if !requires.is_empty() {
                    sets.insert(requires);
                }
            }
            let pending: Vec<Vec<String>> = sets.difference(&resolved).cloned().collect();
            if pending.is_empty() {
                return Ok(());
            }
            if round > MAX_BUILD_ROUNDS {
                break;
            }
            for set in pending {
                let locked = self.compile_with_fallbacks(&set).await?;
                self.add_locked(&locked, FileRole::Build, None).await?;
                resolved.insert(set);
            }
        }
        Err(WheelhouseError::Resolution {
            spec: self.spec_text.clone(),
            message: format!(
                "the build requirements of its sdists still need more sdists built after {MAX_BUILD_ROUNDS} rounds"
            ),
        })
    }

    /// Runs the resolver; when it names packages without a wheel, offers their sdists as files
    /// and runs it again.
    async fn compile_with_fallbacks(
        &mut self,
        requirements: &[String],
    ) -> Result<Vec<LockedPackage>, WheelhouseError> {
        let mut offered: Vec<String> = Vec::new();
        loop {
            let mut input = requirements.to_vec();
            input.extend(
                offered
                    .iter()
                    .filter_map(|name| self.fallbacks.get(name))
                    .map(|sdist| sdist.path.display().to_string()),
            );
            self.runs += 1;
            let work = self.work.join(format!("run-{}", self.runs));
            let compiled = self
                .resolver
                .compile(&self.spec_text, &input, self.target, self.settings, &work)
                .await?;
            let (packages, message) = match compiled {
                Compiled::Locked(locked) => return Ok(locked),
                Compiled::NeedsSdists { packages, message } => (packages, message),
            };
            for (name, version) in packages {
                if offered.contains(&name) || offered.len() >= MAX_SDIST_FALLBACKS {
                    return Err(WheelhouseError::Resolution {
                        spec: self.spec_text.clone(),
                        message,
                    });
                }
                if !self.fallbacks.contains_key(&name) {
                    self.fetch_fallback(&name, version.as_deref(), &message)
                        .await?;
                }
                offered.push(name);
            }
        }
    }

    /// Downloads the sdist of `name` (the pinned `version`, or the newest final release) and
    /// stages it under its own file name for the resolver.
    async fn fetch_fallback(
        &mut self,
        name: &str,
        version: Option<&str>,
        message: &str,
    ) -> Result<(), WheelhouseError> {
        let listed = helper::index_sdists(self.settings, name).await?;
        let chosen = choose_sdist(name, version, &listed).ok_or_else(|| {
            WheelhouseError::Resolution {
                spec: self.spec_text.clone(),
                message: format!(
                    "{message}\n(`{name}` has no wheel for the guest, and the index has no usable sdist of {} either)",
                    version.map_or("any release".to_string(), |v| format!("version {v}"))
                ),
            }
        })?;
        let fetched = self
            .store
            .fetch_locked(self.settings, &[&chosen], self.limits.max_package_bytes)
            .await?;
        let (sha, size, bytes) = fetched.into_iter().next().ok_or_else(|| {
            WheelhouseError::Helper("the download of an sdist returned nothing".into())
        })?;
        self.downloaded += bytes;
        let path = self.work.join("sdists").join(&chosen.filename);
        self.store.link_into(&sha, &path).await?;
        tracing::info!(package = name, file = %chosen.filename, "no wheel for the guest: shipping the sdist");
        self.fallbacks.insert(
            name.to_string(),
            FallbackSdist {
                filename: chosen.filename,
                sha256: sha,
                size,
                path,
            },
        );
        Ok(())
    }

    /// Downloads the locked files the store lacks and lists them in the manifest.
    async fn add_locked(
        &mut self,
        locked: &[LockedPackage],
        role: FileRole,
        root: Option<&str>,
    ) -> Result<(), WheelhouseError> {
        let remote: Vec<&RemoteFile> = locked
            .iter()
            .filter_map(|p| match &p.file {
                LockedFile::Remote(remote) if !self.files.contains_key(&remote.filename) => {
                    Some(remote)
                }
                _ => None,
            })
            .collect();
        let mut entries = Vec::new();
        for package in locked {
            if package.file != LockedFile::Local {
                continue;
            }
            if let Some(sdist) = self.fallbacks.get(&package.name) {
                entries.push((
                    sdist.filename.clone(),
                    sdist.sha256.clone(),
                    sdist.size,
                    role,
                ));
            } else if let (Some(blob), Some(root)) = (self.package_blob, root) {
                if package.name != root {
                    return Err(self.unexpected_local(&package.name));
                }
                entries.push((blob.0.clone(), blob.1.clone(), blob.2, FileRole::Package));
            } else {
                return Err(self.unexpected_local(&package.name));
            }
        }
        // Bounds first, on the sizes the index announces: nothing is downloaded for a wheelhouse
        // that would be refused anyway.
        let announced = self.files.values().map(|f| f.size).sum::<u64>()
            + entries.iter().map(|e| e.2).sum::<u64>()
            + remote.iter().filter_map(|r| r.size).sum::<u64>();
        let count = self.files.len() + entries.len() + remote.len();
        if announced > self.limits.max_total_bytes || count > self.limits.max_files {
            return Err(too_large(self.spec, announced, count, self.limits));
        }
        let fetched = self
            .store
            .fetch_locked(self.settings, &remote, self.limits.max_total_bytes)
            .await?;
        for (file, (sha, size, bytes)) in remote.iter().zip(fetched) {
            self.downloaded += bytes;
            entries.push((file.filename.clone(), sha, size, role));
        }
        for (filename, sha256, size, role) in entries {
            if self.files.contains_key(&filename) {
                continue;
            }
            if DistFile::parse(&filename)?.kind == DistKind::Sdist {
                self.to_inspect
                    .push((filename.clone(), self.store.path_of(&sha256)));
            }
            self.files.insert(
                filename.clone(),
                ManifestFile {
                    filename,
                    sha256,
                    size,
                    role,
                },
            );
        }
        let files: Vec<ManifestFile> = self.files.values().cloned().collect();
        check_limits(self.spec, &files, self.limits)
    }

    fn unexpected_local(&self, name: &str) -> WheelhouseError {
        WheelhouseError::Resolution {
            spec: self.spec_text.clone(),
            message: format!("`{name}` resolved to a local file the slave did not provide"),
        }
    }
}

/// The sdist to offer for `name`: the file of `version` if uv pinned one, else the newest final
/// release (versions that are plain dotted numbers; pre-releases are never chosen implicitly).
fn choose_sdist(
    name: &str,
    version: Option<&str>,
    listed: &[helper::IndexSdist],
) -> Option<RemoteFile> {
    let candidates = listed.iter().filter_map(|sdist| {
        let dist = DistFile::parse(&sdist.filename).ok()?;
        let sha256 = sdist.sha256.clone()?;
        let usable = dist.kind == DistKind::Sdist
            && dist.dist_name == name
            && !sdist.yanked
            && sha256.len() == 64
            && (sdist.url.starts_with("https://") || sdist.url.starts_with("http://"));
        usable.then(|| {
            (
                dist.version,
                RemoteFile {
                    url: sdist.url.clone(),
                    filename: sdist.filename.clone(),
                    sha256: sha256.to_ascii_lowercase(),
                    size: sdist.size,
                    kind: DistKind::Sdist,
                },
            )
        })
    });
    match version {
        Some(wanted) => {
            let wanted_release = release_numbers(wanted);
            candidates
                .filter(|(v, _)| {
                    v == wanted
                        || (wanted_release.is_some() && release_numbers(v) == wanted_release)
                })
                .map(|(_, file)| file)
                .next()
        }
        None => candidates
            .filter_map(|(v, file)| Some((release_numbers(&v)?, file)))
            .max_by(|a, b| a.0.cmp(&b.0))
            .map(|(_, file)| file),
    }
}

/// `1.10.2` → `[1, 10, 2]` with trailing zeros dropped (`1.0` == `1`); `None` for anything but
/// a plain final release.
fn release_numbers(version: &str) -> Option<Vec<u64>> {
    let mut numbers = version
        .split('.')
        .map(|part| part.parse::<u64>().ok())
        .collect::<Option<Vec<u64>>>()?;
    while numbers.len() > 1 && numbers.last() == Some(&0) {
        numbers.pop();
    }
    Some(numbers)
}

/// Rejects build requirements that are not plain PEP 508 requirements: they come from an
/// untrusted pyproject.toml and go into the resolver's requirements file, where `-r`,
/// `--index-url` or a `name @ file:///...` line would change what the resolver reads.
fn validate_build_requires(
    spec: &str,
    sdist: &str,
    requires: Vec<String>,
) -> Result<Vec<String>, WheelhouseError> {
    if requires.len() > MAX_BUILD_REQUIRES {
        return Err(WheelhouseError::Resolution {
            spec: spec.to_string(),
            message: format!("{sdist} lists more than {MAX_BUILD_REQUIRES} build requirements"),
        });
    }
    let mut out = Vec::new();
    for requirement in requires {
        let requirement = requirement.trim().to_string();
        let plain = !requirement.is_empty()
            && requirement.len() <= MAX_REQUIREMENT_CHARS
            && requirement.starts_with(|c: char| c.is_ascii_alphanumeric())
            && !requirement.contains('@')
            && !requirement.chars().any(|c| c.is_control());
        if !plain {
            return Err(WheelhouseError::Resolution {
                spec: spec.to_string(),
                message: format!(
                    "{sdist} has a build requirement that is not a plain `name[extras] version-spec; marker` requirement: `{}`",
                    requirement.chars().take(MAX_REQUIREMENT_CHARS).collect::<String>()
                ),
            });
        }
        out.push(requirement);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_requirements_must_be_plain_requirements() {
        let ok = validate_build_requires(
            "x",
            "x-1.tar.gz",
            vec![
                "setuptools>=61".into(),
                "wheel".into(),
                "cython; python_version<'3.12'".into(),
                "wheel".into(),
            ],
        )
        .unwrap();
        assert_eq!(ok.len(), 3);
        for bad in [
            "-r /etc/passwd",
            "--index-url http://evil.example/simple",
            "evil @ file:///etc/shadow",
            "a\nb",
            "",
        ] {
            let err = validate_build_requires("x", "x-1.tar.gz", vec![bad.into()]).unwrap_err();
            assert!(err.is_package_fault());
            assert!(err.to_string().contains("plain"), "{err}");
        }
        let many = (0..100).map(|i| format!("p{i}")).collect();
        assert!(validate_build_requires("x", "x-1.tar.gz", many).is_err());
    }

    fn listed(filename: &str, yanked: bool) -> helper::IndexSdist {
        helper::IndexSdist {
            filename: filename.into(),
            url: format!("https://files.example/{filename}"),
            sha256: Some("ab".repeat(32)),
            size: Some(100),
            yanked,
        }
    }

    #[test]
    fn the_pinned_or_newest_final_sdist_is_chosen() {
        let files = [
            listed("docopt-0.6.2.tar.gz", false),
            listed("docopt-0.10.0.tar.gz", false),
            listed("docopt-0.11.0.tar.gz", true),
            listed("docopt-1.0rc1.tar.gz", false),
            listed("docopt-0.6.1-py3-none-any.whl", false),
            listed("other-9.0.tar.gz", false),
        ];
        let newest = choose_sdist("docopt", None, &files).unwrap();
        assert_eq!(newest.filename, "docopt-0.10.0.tar.gz");
        let pinned = choose_sdist("docopt", Some("0.6.2"), &files).unwrap();
        assert_eq!(pinned.filename, "docopt-0.6.2.tar.gz");
        let spelled = choose_sdist("docopt", Some("0.6.2.0"), &files).unwrap();
        assert_eq!(spelled.filename, "docopt-0.6.2.tar.gz");
        assert!(
            choose_sdist("docopt", Some("0.11.0"), &files).is_none(),
            "yanked"
        );
        assert!(choose_sdist("docopt", Some("0.5"), &files).is_none());
        assert!(choose_sdist("absent", None, &files).is_none());
        let unhashed = [helper::IndexSdist {
            sha256: None,
            ..listed("docopt-0.6.2.tar.gz", false)
        }];
        assert!(choose_sdist("docopt", None, &unhashed).is_none());
    }
}
