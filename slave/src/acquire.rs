//! Getting a claimed task's package and dependencies onto the host, ready to inject.
//!
//! Joins the master's package spec to the wheelhouse builder (no package code runs on the
//! host) and says whose fault a failure is: the package's (`error`) or the host's (`tmpfail`).

use crate::cycle::TaskInput;
use crate::package::PackageSpec;
use crate::task_plan::PackageArgument;
use crate::wheelhouse::{
    prepare_wheelhouse, GuestTarget, Wheelhouse, WheelhouseLimits, WheelhouseSettings,
};
use pyti_diskhandler::PayloadFile;
use pyti_wire::recipe::Recipe;
use std::path::PathBuf;

/// Why a package could not be acquired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcquireError {
    /// The package or a dependency is at fault (no such release, no wheel and no usable sdist,
    /// too big, corrupt upload): the task ends as `error`.
    Package(String),
    /// The host or the network failed: the task is retried.
    Infrastructure(String),
}

/// A package staged for one task; its files stay on disk as long as this lives.
pub struct AcquiredPackage {
    pub input: TaskInput,
    pub wheelhouse: Wheelhouse,
    _upload_dir: tempfile::TempDir,
}

/// Fetches packages and dependencies for tasks, with one shared cache.
#[derive(Debug, Clone)]
pub struct PackageAcquirer {
    settings: WheelhouseSettings,
    limits: WheelhouseLimits,
}

impl PackageAcquirer {
    /// An acquirer caching under `cache_dir`, with default limits.
    pub fn new(cache_dir: PathBuf) -> PackageAcquirer {
        PackageAcquirer {
            settings: WheelhouseSettings::new(cache_dir),
            limits: WheelhouseLimits::default(),
        }
    }

    /// The interpreter and platform a recipe's guest has, which wheels must fit.
    fn target(recipe: &Recipe) -> Result<GuestTarget, AcquireError> {
        match recipe.guest.distribution.as_str() {
            "debian-12" => Ok(GuestTarget::debian_12()),
            other => Err(AcquireError::Infrastructure(format!(
                "this slave does not know the Python platform of distribution `{other}`"
            ))),
        }
    }

    /// Resolves and stages `spec` for `recipe`'s guest.
    pub async fn acquire(
        &self,
        spec: &pyti_wire::job::PackageSpec,
        recipe: &Recipe,
    ) -> Result<AcquiredPackage, AcquireError> {
        let target = Self::target(recipe)?;
        let upload_dir = tempfile::tempdir().map_err(|e| {
            AcquireError::Infrastructure(format!("cannot create a temporary directory: {e}"))
        })?;
        let spec = PackageSpec::from_wire(spec, upload_dir.path())
            .map_err(|e| AcquireError::Package(e.to_string()))?;
        let wheelhouse = prepare_wheelhouse(&spec, &target, &self.settings, &self.limits)
            .await
            .map_err(|e| {
                if e.is_package_fault() {
                    AcquireError::Package(e.to_string())
                } else {
                    AcquireError::Infrastructure(e.to_string())
                }
            })?;
        let package = match &wheelhouse.package_file {
            Some(path) => PackageArgument::File(
                path.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
            None => PackageArgument::Requirement(format!(
                "{}=={}",
                wheelhouse.dist_name, wheelhouse.version
            )),
        };
        let input = TaskInput {
            package,
            dist: wheelhouse.dist_name.clone(),
            package_files: wheelhouse
                .package_file
                .iter()
                .filter_map(|p| PayloadFile::from_path(p.clone()))
                .collect(),
            wheelhouse_files: wheelhouse
                .files
                .iter()
                .map(|f| PayloadFile {
                    name: f.name.clone(),
                    source: wheelhouse.dir.join(&f.name),
                })
                .collect(),
        };
        Ok(AcquiredPackage {
            input,
            wheelhouse,
            _upload_dir: upload_dir,
        })
    }
}
