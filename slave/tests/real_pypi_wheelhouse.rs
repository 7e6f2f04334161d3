//! Wheelhouses built against the real PyPI for a Debian 12 guest (CPython 3.11, glibc 2.36):
//! wheels for the guest's platform, sdists shipped unbuilt, nothing executed on the host, and a
//! second resolution served from the cache without the network.

use pyti_slave::package::{DistFile, PackageSpec};
use pyti_slave::wheelhouse::{
    prepare_wheelhouse, GuestTarget, Wheelhouse, WheelhouseError, WheelhouseLimits,
    WheelhouseSettings,
};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

const SIX_WHEEL_URL: &str = "https://files.pythonhosted.org/packages/d9/5a/e7c31adbe875f2abbb91bd84cf2dc52d792b5a01506781dbcf25c91daf11/six-1.16.0-py2.py3-none-any.whl";
const SIX_WHEEL_SHA256: &str = "8abb2f1d86890a2dfb989f9a77cfcfd3e47c2a354b01111771326f8aa26e0254";
/// setuptools and wheel are always shipped; `packaging` is wheel's own dependency.
const BUILD_TOOLS: &[&str] = &["setuptools", "wheel", "packaging"];

/// Settings for a fresh cache whose resolver comes from a tools directory shared by these tests
/// (uv is installed once per test run, not once per test).
fn settings_for(cache: &Path) -> WheelhouseSettings {
    WheelhouseSettings {
        tools_dir: std::env::temp_dir().join("pyti-slave-test-tools"),
        ..WheelhouseSettings::new(cache)
    }
}

async fn prepare(
    spec: &PackageSpec,
    settings: &WheelhouseSettings,
) -> Result<Wheelhouse, WheelhouseError> {
    prepare_wheelhouse(
        spec,
        &GuestTarget::debian_12(),
        settings,
        &WheelhouseLimits::default(),
    )
    .await
}

fn dist_names(wheelhouse: &Wheelhouse) -> BTreeSet<String> {
    wheelhouse
        .files
        .iter()
        .map(|f| DistFile::parse(&f.name).unwrap().dist_name)
        .collect()
}

/// Every listed file is staged with the listed size and hash, and nothing else is staged.
fn assert_staged_as_listed(wheelhouse: &Wheelhouse) {
    let staged: BTreeSet<String> = std::fs::read_dir(&wheelhouse.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let listed: BTreeSet<String> = wheelhouse.files.iter().map(|f| f.name.clone()).collect();
    assert_eq!(staged, listed);
    let mut total = 0;
    for file in wheelhouse.files.iter().chain(wheelhouse.package.iter()) {
        let path = if Some(file) == wheelhouse.package.as_ref() {
            wheelhouse.package_file.clone().unwrap()
        } else {
            wheelhouse.dir.join(&file.name)
        };
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len() as u64, file.size, "{}", file.name);
        assert_eq!(
            hex::encode(Sha256::digest(&bytes)),
            file.sha256,
            "{}",
            file.name
        );
        total += file.size;
    }
    assert_eq!(total, wheelhouse.total_bytes);
}

/// Installs `requirement` from the wheelhouse alone (`--no-index`) into a fresh venv of the
/// host's CPython, which matches the guest's (Debian 12: CPython 3.11, glibc 2.36), and runs
/// `check` there. Only wheels are installed: no package code runs during the install.
fn assert_installs_offline(wheelhouse: &Wheelhouse, requirement: &str, check: &str) {
    let version = std::process::Command::new("python3")
        .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        .output()
        .unwrap();
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    if version != GuestTarget::debian_12().python_version {
        eprintln!(
            "offline install check skipped: the host's python3 is {version}, not the guest's"
        );
        return;
    }
    let venv = tempfile::tempdir().unwrap();
    let run = |program: &Path, args: &[&str]| {
        let output = std::process::Command::new(program)
            .args(args)
            .env("PIP_CONFIG_FILE", "/dev/null")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{program:?} {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    run(
        Path::new("python3"),
        &["-m", "venv", venv.path().to_str().unwrap()],
    );
    let python = venv.path().join("bin/python");
    run(
        &python,
        &[
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-index",
            "--only-binary=:all:",
            "--find-links",
            wheelhouse.dir.to_str().unwrap(),
            requirement,
        ],
    );
    run(&python, &["-c", check]);
}

#[tokio::test]
async fn real_pypi_six_is_exactly_the_six_wheel_plus_build_tools_and_cached_offline() {
    let cache = tempfile::tempdir().unwrap();
    let settings = WheelhouseSettings::new(cache.path());
    let spec = PackageSpec::parse("six==1.16.0").unwrap();

    let cold = prepare(&spec, &settings).await.unwrap();
    assert_eq!(
        (cold.dist_name.as_str(), cold.version.as_str()),
        ("six", "1.16.0")
    );
    assert!(
        cold.package_file.is_none(),
        "a PyPI release installs by name"
    );
    assert!(!cold.from_cache);
    assert!(cold.downloaded_bytes > 0);
    let six: Vec<_> = cold
        .files
        .iter()
        .filter(|f| f.name.starts_with("six-"))
        .collect();
    assert_eq!(six.len(), 1);
    assert_eq!(six[0].name, "six-1.16.0-py2.py3-none-any.whl");
    assert_eq!(six[0].sha256, SIX_WHEEL_SHA256);
    let others: BTreeSet<String> = dist_names(&cold)
        .into_iter()
        .filter(|n| n != "six")
        .collect();
    assert!(
        others.contains("setuptools") && others.contains("wheel"),
        "{others:?}"
    );
    assert!(
        others.iter().all(|n| BUILD_TOOLS.contains(&n.as_str())),
        "only six and the build tools: {others:?}"
    );
    assert!(cold.files.iter().all(|f| f.name.ends_with(".whl")));
    assert_staged_as_listed(&cold);

    // Offline: anything but the cache would fail.
    let offline = WheelhouseSettings {
        offline: true,
        index_url: "http://127.0.0.1:9/simple".into(),
        ..settings.clone()
    };
    let warm = prepare(&spec, &offline).await;
    // A different index is a different cache key: the offline slave must refuse, not guess.
    assert!(
        matches!(warm, Err(WheelhouseError::NotCached { .. })),
        "{warm:?}"
    );
    let offline = WheelhouseSettings {
        offline: true,
        ..settings.clone()
    };
    let started = Instant::now();
    let warm = prepare(&spec, &offline).await.unwrap();
    let warm_time = started.elapsed();
    assert!(warm.from_cache);
    assert_eq!(warm.downloaded_bytes, 0);
    assert_eq!(warm.files, cold.files);
    assert_staged_as_listed(&warm);
    // Both staged wheelhouses live side by side (each task gets its own).
    assert_ne!(warm.dir, cold.dir);
    eprintln!(
        "six==1.16.0: cold incl. installing uv {:?} ({} files, {} bytes, {} downloaded), cached {:?}",
        cold.elapsed,
        cold.files.len(),
        cold.total_bytes,
        cold.downloaded_bytes,
        warm_time
    );
    // Dropping a wheelhouse removes its staging directory, never the cache.
    let dir = cold.dir.clone();
    drop(cold);
    assert!(!dir.exists());
    assert_staged_as_listed(&warm);

    let missing = PackageSpec::parse("six==1.15.0").unwrap();
    let err = prepare(&missing, &offline).await.unwrap_err();
    assert!(matches!(err, WheelhouseError::NotCached { .. }), "{err}");
    assert!(!err.is_package_fault());
}

#[tokio::test]
async fn real_pypi_requests_gets_every_dependency_as_a_wheel_for_the_guest() {
    let cache = tempfile::tempdir().unwrap();
    let settings = settings_for(cache.path());
    let spec = PackageSpec::parse("requests==2.31.0").unwrap();
    let cold = prepare(&spec, &settings).await.unwrap();
    let names = dist_names(&cold);
    for wanted in [
        "requests",
        "certifi",
        "charset-normalizer",
        "idna",
        "urllib3",
    ] {
        assert!(names.contains(wanted), "{wanted} missing from {names:?}");
    }
    let charset = cold
        .files
        .iter()
        .find(|f| f.name.starts_with("charset_normalizer-"))
        .unwrap();
    // The compiled wheel for the guest's CPython 3.11 on manylinux x86-64, not the host's and
    // not the pure-Python fallback.
    let file = DistFile::parse(&charset.name).unwrap();
    assert_eq!(file.abi_tag, "cp311", "{}", charset.name);
    assert!(file.platform_tag.contains("manylinux"), "{}", charset.name);
    assert!(file.platform_tag.contains("x86_64"), "{}", charset.name);
    assert!(cold.files.iter().all(|f| f.name.ends_with(".whl")));
    assert_staged_as_listed(&cold);
    assert_installs_offline(
        &cold,
        "requests==2.31.0",
        "import requests, charset_normalizer.md",
    );

    // A second resolution (even one that may run the resolver again after the cache entry
    // expired) downloads nothing: the files are in the content-addressed cache.
    let expired = WheelhouseSettings {
        resolution_ttl: std::time::Duration::ZERO,
        ..settings.clone()
    };
    let again = prepare(&spec, &expired).await.unwrap();
    assert!(!again.from_cache);
    assert_eq!(again.downloaded_bytes, 0);
    assert_eq!(again.files, cold.files);
    let cached = prepare(&spec, &settings).await.unwrap();
    assert!(cached.from_cache);
    // A second slave (its own empty file cache) downloads everything again.
    let second_slave = tempfile::tempdir().unwrap();
    let second = prepare(&spec, &settings_for(second_slave.path()))
        .await
        .unwrap();
    assert_eq!(second.downloaded_bytes, cold.total_bytes);
    assert_eq!(second.files, cold.files);
    eprintln!(
        "requests==2.31.0: cold {:?} and {:?} ({} files, {} bytes), re-resolved with cached files {:?}, cached resolution {:?}",
        cold.elapsed,
        second.elapsed,
        cold.files.len(),
        cold.total_bytes,
        again.elapsed,
        cached.elapsed
    );

    // The same package over a tiny bound: refused before anything is downloaded.
    let tiny = WheelhouseLimits {
        max_total_bytes: 100 * 1024,
        ..WheelhouseLimits::default()
    };
    let fresh = tempfile::tempdir().unwrap();
    let err = prepare_wheelhouse(
        &spec,
        &GuestTarget::debian_12(),
        &settings_for(fresh.path()),
        &tiny,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, WheelhouseError::TooLarge { .. }), "{err}");
    assert!(err.is_package_fault());
    assert!(err.to_string().contains("limit"), "{err}");
}

#[tokio::test]
async fn real_pypi_nonexistent_version_reports_the_resolvers_message() {
    let cache = tempfile::tempdir().unwrap();
    let settings = settings_for(cache.path());
    let spec = PackageSpec::parse("six==99.0.0").unwrap();
    let err = prepare(&spec, &settings).await.unwrap_err();
    assert!(matches!(err, WheelhouseError::Resolution { .. }), "{err}");
    assert!(err.is_package_fault(), "status `error`, not a retry");
    let message = err.to_string();
    assert!(message.contains("six==99.0.0"), "{message}");
    assert!(
        message.contains("no version of six"),
        "the resolver's own words: {message}"
    );
    assert!(message.len() < 6000);

    let unknown = PackageSpec::parse("pyti-no-such-package-x7q==1.0").unwrap();
    let err = prepare(&unknown, &settings).await.unwrap_err();
    assert!(err.is_package_fault(), "{err}");
    assert!(err.to_string().contains("not found"), "{err}");

    // A release with no wheel at all is fetched as its sdist; docopt 0.6.2's PKG-INFO is
    // Metadata-Version 1.1, so its dependencies are only known by running setup.py: refused.
    let sdist_only = PackageSpec::parse("docopt==0.6.2").unwrap();
    let err = prepare(&sdist_only, &settings).await.unwrap_err();
    assert!(
        matches!(err, WheelhouseError::DynamicMetadata { .. }),
        "{err}"
    );
    assert!(err.is_package_fault());
    assert!(err.to_string().contains("publish a wheel"), "{err}");
    assert!(
        !err.to_string().contains("/staging/"),
        "temporary paths are trimmed: {err}"
    );
    eprintln!("docopt==0.6.2: {err}");
}

/// Writes `name-1.0.tar.gz` whose setup.py would create `marker` if anything ran it.
fn write_sdist(
    dir: &Path,
    name: &str,
    metadata_version: &str,
    requires: &str,
    marker: &Path,
) -> std::path::PathBuf {
    let root = dir.join(format!("{name}-1.0"));
    std::fs::create_dir_all(root.join(name)).unwrap();
    std::fs::write(
        root.join("setup.py"),
        format!(
            "open({:?}, 'w').write('setup.py ran')\nfrom setuptools import setup\nsetup()\n",
            marker.display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(
        root.join("PKG-INFO"),
        format!(
            "Metadata-Version: {metadata_version}\nName: {name}\nVersion: 1.0\nRequires-Dist: {requires}\n\nA package that must only ever be built in the guest.\n"
        ),
    )
    .unwrap();
    std::fs::write(
        root.join("pyproject.toml"),
        "[build-system]\nrequires = [\"setuptools>=61\", \"flit_core>=3.2\"]\nbuild-backend = \"setuptools.build_meta\"\n",
    )
    .unwrap();
    std::fs::write(root.join(name).join("__init__.py"), "").unwrap();
    let archive = dir.join(format!("{name}-1.0.tar.gz"));
    let status = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .arg("-C")
        .arg(dir)
        .arg(format!("{name}-1.0"))
        .status()
        .unwrap();
    assert!(status.success());
    archive
}

#[tokio::test]
async fn real_pypi_local_sdist_is_shipped_unbuilt_and_its_setup_py_never_runs_on_the_host() {
    let cache = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let marker = work.path().join("MARKER-setup-py-ran-on-host");
    let settings = settings_for(cache.path());

    let sdist = write_sdist(work.path(), "markpkg", "2.2", "six==1.16.0", &marker);
    let spec = PackageSpec::parse(sdist.to_str().unwrap()).unwrap();
    let wheelhouse = prepare(&spec, &settings).await.unwrap();
    assert!(!marker.exists(), "setup.py ran on the host");
    assert_eq!(
        (wheelhouse.dist_name.as_str(), wheelhouse.version.as_str()),
        ("markpkg", "1.0")
    );
    let package_file = wheelhouse.package_file.clone().unwrap();
    assert_eq!(package_file.file_name().unwrap(), "markpkg-1.0.tar.gz");
    assert_eq!(
        std::fs::read(&package_file).unwrap(),
        std::fs::read(&sdist).unwrap()
    );
    let names = dist_names(&wheelhouse);
    // Its static dependency, and what the guest needs to build it offline: setuptools, wheel
    // and the build backends its pyproject.toml asks for.
    for wanted in ["six", "setuptools", "wheel", "flit-core"] {
        assert!(names.contains(wanted), "{wanted} missing from {names:?}");
    }
    assert!(
        !names.contains("markpkg"),
        "the package itself is not in the wheelhouse"
    );
    assert_staged_as_listed(&wheelhouse);

    // Without static metadata the resolver would have to run setup.py: refused, clearly.
    let dynamic_dir = work.path().join("dynamic");
    std::fs::create_dir(&dynamic_dir).unwrap();
    let dynamic = write_sdist(&dynamic_dir, "dynpkg", "2.1", "six==1.16.0", &marker);
    let spec = PackageSpec::parse(dynamic.to_str().unwrap()).unwrap();
    let err = prepare(&spec, &settings).await.unwrap_err();
    assert!(
        matches!(err, WheelhouseError::DynamicMetadata { .. }),
        "{err}"
    );
    assert!(err.is_package_fault());
    assert!(err.to_string().contains("never runs package code"), "{err}");
    assert!(!marker.exists(), "setup.py ran on the host");

    // A dependency without any wheel (docopt is sdist-only on PyPI) is fetched as its sdist and
    // offered to the resolver as a file; its PKG-INFO is Metadata-Version 1.1 (no static
    // dependencies), so resolving it would mean running its setup.py: refused, naming it.
    let sdist_dep_dir = work.path().join("sdist-dep");
    std::fs::create_dir(&sdist_dep_dir).unwrap();
    let needs_docopt = write_sdist(&sdist_dep_dir, "needsdocopt", "2.2", "docopt>=0.6", &marker);
    let spec = PackageSpec::parse(needs_docopt.to_str().unwrap()).unwrap();
    let err = prepare(&spec, &settings).await.unwrap_err();
    assert!(
        matches!(err, WheelhouseError::DynamicMetadata { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("docopt"), "{err}");
    assert!(!marker.exists(), "setup.py ran on the host");
}

#[tokio::test]
async fn real_pypi_wheel_url_is_downloaded_checked_and_cached() {
    let cache = tempfile::tempdir().unwrap();
    let settings = settings_for(cache.path());
    let spec = PackageSpec::url(SIX_WHEEL_URL, Some(SIX_WHEEL_SHA256)).unwrap();
    let cold = prepare(&spec, &settings).await.unwrap();
    assert_eq!(cold.dist_name, "six");
    let package = cold.package.clone().unwrap();
    assert_eq!(package.name, "six-1.16.0-py2.py3-none-any.whl");
    assert_eq!(package.sha256, SIX_WHEEL_SHA256);
    assert!(cold.files.iter().all(|f| !f.name.starts_with("six-")));
    assert_staged_as_listed(&cold);

    let offline = WheelhouseSettings {
        offline: true,
        ..settings.clone()
    };
    let warm = prepare(&spec, &offline).await.unwrap();
    assert!(warm.from_cache);
    assert_eq!(warm.downloaded_bytes, 0);

    // A URL whose content does not match the promised hash is refused.
    let fresh = tempfile::tempdir().unwrap();
    let wrong = PackageSpec::url(SIX_WHEEL_URL, Some(&"0".repeat(64))).unwrap();
    let err = prepare(&wrong, &settings_for(fresh.path()))
        .await
        .unwrap_err();
    assert!(matches!(err, WheelhouseError::HashMismatch { .. }), "{err}");
    // A URL that does not exist is the package's fault.
    let missing = PackageSpec::url(
        "https://files.pythonhosted.org/packages/00/00/pyti_missing-1.0-py3-none-any.whl",
        None,
    )
    .unwrap();
    let err = prepare(&missing, &settings_for(fresh.path()))
        .await
        .unwrap_err();
    assert!(matches!(err, WheelhouseError::Download { .. }), "{err}");
    assert!(err.is_package_fault(), "{err}");
}
