//! Why an image could not be built or loaded, each with what to do about it.

use std::path::PathBuf;

/// An image build or load failure; the message says how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("`{program}` is not installed or not working ({detail}): install the Debian package `{package}` (`apt-get install {package}`; scripts/setup-host.sh does)")]
    MissingProgram {
        program: String,
        package: String,
        detail: String,
    },
    #[error("no usable kernel: {detail}. Install `linux-image-amd64` (`apt-get install linux-image-amd64`) and make /boot/vmlinuz-* readable")]
    NoKernel { detail: String },
    #[error("Debian package(s) {} not installed on this host: images are built from the host's installed packages, so install them first (`apt-get install {}`) or remove them from the recipe's [guest] packages", .names.join(", "), .names.join(" "))]
    PackageNotInstalled { names: Vec<String> },
    #[error("recipe distribution `{found}` cannot be built on this host (it builds `{host}` guests from its own packages); use a recipe for `{host}` or build on a `{found}` host")]
    WrongDistribution { found: String, host: String },
    #[error("recipe step `{step}` cannot be baked into the image: {detail}")]
    BadPrepareStep { step: String, detail: String },
    #[error("`{command}` failed ({status}): {stderr}")]
    ToolFailed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("the pyti agent binary was not found ({detail}); build it with `cargo build -p pyti-agent` or point $PYTI_AGENT at it")]
    AgentNotFound { detail: String },
    #[error("recipe `{recipe}` asks for the host's `{tool}` in its image ([guest] tools), but {detail}; a slave supplies its own pinned `{tool}` (`pyti image build` and `pyti slave` do this), or drop it from the recipe")]
    ToolNotFound {
        recipe: String,
        tool: &'static str,
        detail: String,
    },
    #[error("{path} is not a usable cached image: {detail}. Remove the directory and build again (`pyti image build`)")]
    BadCachedImage { path: PathBuf, detail: String },
    #[error("no cache directory: neither $XDG_CACHE_HOME nor $HOME is set; set one of them")]
    NoCacheDir,
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ImageError {
    /// Wraps an I/O error with what was being done and to which path.
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> ImageError {
        let path = path.into();
        move |source| ImageError::Io {
            action,
            path,
            source,
        }
    }
}
