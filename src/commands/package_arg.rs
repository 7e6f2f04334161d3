//! Turning the PACKAGE argument (`name==version`, a local file, or a URL) into a job's spec.

use anyhow::{bail, Context};
use pyti_wire::job::{PackageSpec, MAX_UPLOAD_BYTES};
use sha2::{Digest, Sha256};
use std::path::Path;

/// Parses PACKAGE: a URL, an existing local sdist/wheel (uploaded with the job), or `name==version`.
pub fn package_spec(argument: &str) -> anyhow::Result<PackageSpec> {
    if argument.starts_with("https://") || argument.starts_with("http://") {
        return Ok(PackageSpec::Url {
            url: argument.to_string(),
            sha256: None,
        });
    }
    let path = Path::new(argument);
    if path.is_file() {
        let filename = path
            .file_name()
            .and_then(|n| n.to_str())
            .context("the package file's name is not UTF-8")?;
        let size = path.metadata()?.len();
        if size > MAX_UPLOAD_BYTES as u64 {
            bail!(
                "{argument} is {size} bytes; uploads are limited to {MAX_UPLOAD_BYTES} bytes (publish it and pass a URL instead)"
            );
        }
        let content = std::fs::read(path).with_context(|| format!("reading {argument}"))?;
        let sha256 = hex::encode(Sha256::digest(&content));
        return Ok(PackageSpec::upload(filename, &sha256, &content));
    }
    if let Some(spec) = PackageSpec::pypi(argument) {
        return Ok(spec);
    }
    if argument.ends_with(".whl") || argument.ends_with(".tar.gz") || argument.ends_with(".zip") {
        bail!("package file {argument} does not exist");
    }
    bail!("`{argument}` is not a package: give `name==version` (from PyPI), a path to an sdist or wheel, or an http(s) URL")
}
