//! [`build()`]: one guest image from a recipe, with progress for each phase.

use super::cache::{cache_key, file_sha256};
use super::guest_image::MANIFEST_FILE;
use super::host_tool::{DEPMOD, QEMU_IMG, SUPERMIN, TAR, XZ};
use super::{guest_files, kernel, kernel_modules, supermin, GuestImage, ImageCache, ImageError};
use pyti_wire::recipe::{GuestTool, Recipe};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Kernel arguments besides `root=`: serial console for the agent's echo, no boot chatter (a
/// serial byte is slow under TCG), and no timer/mitigation work a throw-away guest does not need.
const KERNEL_ARGS: &str =
    "console=ttyS0 quiet loglevel=3 mitigations=off no_timer_check tsc=reliable";

/// dpkg's record of the host's installed packages, which an image copies.
const DPKG_STATUS: &str = "/var/lib/dpkg/status";
/// Build directories older than this are left over from a killed build and are removed.
const STALE_BUILD_AGE: Duration = Duration::from_secs(6 * 60 * 60);

/// A step of an image build, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Hashing the agent and recipe, looking the key up in the cache.
    CacheLookup,
    /// Checking host programs, the kernel and that every package is installed.
    CheckHost,
    /// `supermin --prepare`: resolving the package closure.
    ResolvePackages,
    /// Adding the agent, the step user, the prepare plan and bytecode.
    AddGuestFiles,
    /// Selecting the kernel modules the initrd loads (a module tree of the few a guest needs).
    Initrd,
    /// `supermin --build`: writing the ext2 root filesystem and the initrd.
    RootFilesystem,
    /// Extracting the uncompressed kernel.
    Kernel,
    /// Converting the root filesystem to the qcow2 system disk.
    SystemDisk,
    /// Writing the manifest and moving the image into the cache.
    Publish,
}

impl Phase {
    /// A short name for progress output.
    pub fn name(self) -> &'static str {
        match self {
            Phase::CacheLookup => "cache lookup",
            Phase::CheckHost => "check host",
            Phase::ResolvePackages => "resolve packages",
            Phase::AddGuestFiles => "add guest files",
            Phase::RootFilesystem => "root filesystem",
            Phase::Kernel => "kernel",
            Phase::Initrd => "initrd",
            Phase::SystemDisk => "system disk",
            Phase::Publish => "publish",
        }
    }
}

/// Progress of [`build()`], reported as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildPhase {
    /// `phase` started.
    Started { phase: Phase },
    /// `phase` finished after `elapsed`.
    Finished { phase: Phase, elapsed: Duration },
    /// The image was already in the cache; nothing was built.
    CacheHit { key: String },
}

/// The host's programs an image bakes in: the agent always, and the tools its recipe names.
#[derive(Debug, Clone)]
pub struct HostFiles {
    /// The `pyti-agent` binary ([`super::agent_binary_path`]).
    pub agent: PathBuf,
    /// uv, for recipes with `tools = ["uv"]`.
    pub uv: Option<PathBuf>,
}

impl HostFiles {
    /// Just the agent: for recipes that name no tools.
    pub fn agent_only(agent: impl Into<PathBuf>) -> HostFiles {
        HostFiles {
            agent: agent.into(),
            uv: None,
        }
    }

    /// The host file for `tool`, if given.
    fn tool(&self, tool: GuestTool) -> Option<&Path> {
        match tool {
            GuestTool::Uv => self.uv.as_deref(),
        }
    }

    /// Each of `recipe`'s tools with its host file and sha256, or why one cannot be had.
    fn recipe_tools(
        &self,
        recipe: &Recipe,
    ) -> Result<Vec<(GuestTool, PathBuf, String)>, ImageError> {
        recipe
            .guest
            .tools
            .iter()
            .map(|&tool| {
                let missing = |detail: String| ImageError::ToolNotFound {
                    recipe: recipe.name.clone(),
                    tool: tool.name(),
                    detail,
                };
                let path = self
                    .tool(tool)
                    .ok_or_else(|| missing("no host file was given for it".into()))?;
                let sha256 = file_sha256(path)
                    .map_err(|_| missing(format!("{} cannot be read", path.display())))?;
                Ok((tool, path.to_path_buf(), sha256))
            })
            .collect()
    }
}

/// Builds (or finds in `cache`) the guest image for `recipe` with the agent and the recipe's
/// tools from `files` baked in.
///
/// The image is built in a temporary directory inside the cache and renamed into place when
/// complete, so the cache never holds half an image. Blocking: ~5–15 s for a cold build.
pub fn build(
    recipe: &Recipe,
    files: &HostFiles,
    cache: &ImageCache,
    progress: &mut dyn FnMut(BuildPhase),
) -> Result<GuestImage, ImageError> {
    let mut phases = Phases { progress };
    let agent_binary = files.agent.as_path();

    let (key, host_kernel, agent_sha256, tools) = phases.run(Phase::CacheLookup, || {
        let host_kernel = kernel::find_host_kernel()?;
        let agent_sha256 = file_sha256(agent_binary).map_err(|_| ImageError::AgentNotFound {
            detail: format!("cannot read {}", agent_binary.display()),
        })?;
        let tools = files.recipe_tools(recipe)?;
        // dpkg's database changes whenever a host package is installed, removed or upgraded.
        let packages = file_sha256(Path::new(DPKG_STATUS)).unwrap_or_default();
        let host_state = format!("{} {packages}", host_kernel.release);
        let tool_sums: Vec<(&str, &str)> = tools
            .iter()
            .map(|(tool, _, sha256)| (tool.name(), sha256.as_str()))
            .collect();
        let key = cache_key(recipe, &host_state, &agent_sha256, &tool_sums);
        Ok((key, host_kernel, agent_sha256, tools))
    })?;
    let final_dir = cache.image_dir(&key);
    if final_dir.join(MANIFEST_FILE).is_file() {
        if let Ok(image) = GuestImage::load(&final_dir) {
            if let Err(e) = image.mark_used() {
                tracing::warn!("{e}; the image may be pruned while in use");
            }
            (phases.progress)(BuildPhase::CacheHit { key });
            return Ok(image);
        }
        tracing::warn!(dir = %final_dir.display(), "cached image is incomplete or damaged; rebuilding");
        fs::remove_dir_all(&final_dir)
            .map_err(ImageError::io("remove damaged image", &final_dir))?;
    }

    let packages = phases.run(Phase::CheckHost, || {
        let host = supermin::host_distribution();
        if recipe.guest.distribution != host {
            return Err(ImageError::WrongDistribution {
                found: recipe.guest.distribution.clone(),
                host,
            });
        }
        for tool in [SUPERMIN, QEMU_IMG, XZ, DEPMOD, TAR] {
            tool.check()?;
        }
        let mut packages: Vec<String> = supermin::BASE_PACKAGES
            .iter()
            .map(|p| p.to_string())
            .collect();
        for p in &recipe.guest.packages {
            if !packages.contains(p) {
                packages.push(p.clone());
            }
        }
        supermin::check_installed(&packages)?;
        Ok(packages)
    })?;

    fs::create_dir_all(cache.root()).map_err(ImageError::io("create image cache", cache.root()))?;
    remove_stale_builds(cache.root());
    let temp = tempfile::Builder::new()
        .prefix(".build-")
        .tempdir_in(cache.root())
        .map_err(ImageError::io("create a build directory in", cache.root()))?;
    let work = temp.path().join("work");
    let out = temp.path().join("image");
    for dir in [&work, &out] {
        fs::create_dir_all(dir).map_err(ImageError::io("create", dir))?;
    }
    let appliance = work.join("appliance");
    let supermin_out = work.join("supermin");

    phases.run(Phase::ResolvePackages, || {
        supermin::prepare(&packages, &appliance)
    })?;
    phases.run(Phase::AddGuestFiles, || {
        let plan = guest_files::prepare_plan(recipe, &key)?;
        let tools: Vec<(&str, &Path)> = tools
            .iter()
            .map(|(tool, path, _)| (tool.guest_path(), path.as_path()))
            .collect();
        guest_files::add_to_appliance(&appliance, &work, agent_binary, &tools, &plan)
    })?;
    let modules = phases.run(Phase::Initrd, || {
        kernel_modules::guest_module_tree(&host_kernel, &work)
    })?;
    phases.run(Phase::RootFilesystem, || {
        supermin::build_ext2(&appliance, &host_kernel, &modules, &supermin_out)
    })?;
    let initrd_path = out.join("initrd");
    fs::rename(supermin_out.join("initrd"), &initrd_path)
        .map_err(ImageError::io("move initrd to", &initrd_path))?;
    let kernel_path = phases.run(Phase::Kernel, || kernel::install_kernel(&host_kernel, &out))?;
    let root = supermin_out.join("root");
    let system_disk = out.join("system.qcow2");
    let uuid = phases.run(Phase::SystemDisk, || {
        let uuid = supermin::ext_uuid(&root)?;
        QEMU_IMG.run(
            QEMU_IMG
                .command()
                .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
                .arg(&root)
                .arg(&system_disk),
        )?;
        Ok(uuid)
    })?;

    phases.run(Phase::Publish, || {
        let image = GuestImage {
            key: key.clone(),
            dir: out.clone(),
            kernel: kernel_path.clone(),
            initrd: initrd_path.clone(),
            system_disk: system_disk.clone(),
            kernel_cmdline: format!("root=UUID={uuid} {KERNEL_ARGS}"),
            recipe: recipe.name.clone(),
            agent_sha256: agent_sha256.clone(),
            kernel_release: host_kernel.release.clone(),
        };
        let manifest_path = out.join(MANIFEST_FILE);
        let manifest = serde_json::to_vec_pretty(&image.manifest()).unwrap_or_default();
        fs::write(&manifest_path, manifest).map_err(ImageError::io("write", &manifest_path))?;
        for file in [&kernel_path, &initrd_path, &system_disk, &manifest_path] {
            fs::File::open(file)
                .and_then(|f| f.sync_all())
                .map_err(ImageError::io("sync", file))?;
        }
        match fs::rename(&out, &final_dir) {
            Ok(()) => {}
            // A concurrent build of the same key won the race; its image is as good as ours.
            Err(_) if final_dir.join(MANIFEST_FILE).is_file() => {}
            Err(e) => return Err(ImageError::io("move the image into", &final_dir)(e)),
        }
        if let Ok(dir) = fs::File::open(cache.root()) {
            let _ = dir.sync_all();
        }
        GuestImage::load(&final_dir)
    })
}

/// Removes `.build-*` directories a killed build left behind (a live build is younger).
fn remove_stale_builds(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let stale = entry.file_name().to_string_lossy().starts_with(".build-")
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_BUILD_AGE);
        if stale {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Runs phases, reporting start and end of each.
struct Phases<'a> {
    progress: &'a mut dyn FnMut(BuildPhase),
}

impl Phases<'_> {
    fn run<T>(
        &mut self,
        phase: Phase,
        f: impl FnOnce() -> Result<T, ImageError>,
    ) -> Result<T, ImageError> {
        (self.progress)(BuildPhase::Started { phase });
        let start = Instant::now();
        let result = f()?;
        (self.progress)(BuildPhase::Finished {
            phase,
            elapsed: start.elapsed(),
        });
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_package_is_named_before_any_work() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes/debian-12.toml");
        let mut recipe = Recipe::load(&path).unwrap_or_else(|e| panic!("{e}"));
        recipe.guest.packages.push("pyti-no-such-package".into());
        let temp = tempfile::tempdir().unwrap();
        let cache = ImageCache::new(temp.path().join("images"));
        let mut phases = Vec::new();
        // Any file serves as the agent and uv here: the build stops at the host check.
        let files = HostFiles {
            agent: "/bin/sh".into(),
            uv: Some("/bin/sh".into()),
        };
        let err = build(&recipe, &files, &cache, &mut |p| phases.push(p)).unwrap_err();
        match &err {
            ImageError::PackageNotInstalled { names } => {
                assert_eq!(names, &["pyti-no-such-package"])
            }
            other => panic!("unexpected error: {other}"),
        }
        assert!(
            err.to_string()
                .contains("apt-get install pyti-no-such-package"),
            "{err}"
        );
        assert!(!phases.iter().any(|p| matches!(
            p,
            BuildPhase::Started {
                phase: Phase::ResolvePackages
            }
        )));
        assert!(!cache.root().exists(), "nothing written to the cache");
    }

    #[test]
    fn missing_agent_says_how_to_build_it() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes/debian-12.toml");
        let recipe = Recipe::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let temp = tempfile::tempdir().unwrap();
        let err = build(
            &recipe,
            &HostFiles::agent_only(temp.path().join("nope")),
            &ImageCache::new(temp.path().into()),
            &mut |_| {},
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("cargo build -p pyti-agent"),
            "{err}"
        );
    }

    #[test]
    fn a_tool_the_recipe_names_must_be_given_and_readable() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes/debian-12.toml");
        let recipe = Recipe::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(recipe.guest.tools, [GuestTool::Uv]);
        let temp = tempfile::tempdir().unwrap();
        let cache = ImageCache::new(temp.path().join("images"));
        let err = build(
            &recipe,
            &HostFiles::agent_only("/bin/sh"),
            &cache,
            &mut |_| {},
        )
        .unwrap_err();
        assert!(
            matches!(&err, ImageError::ToolNotFound { tool: "uv", .. }),
            "{err}"
        );
        assert!(err.to_string().contains("no host file was given"), "{err}");
        let unreadable = HostFiles {
            agent: "/bin/sh".into(),
            uv: Some(temp.path().join("no-uv")),
        };
        let err = build(&recipe, &unreadable, &cache, &mut |_| {}).unwrap_err();
        assert!(err.to_string().contains("no-uv cannot be read"), "{err}");
        assert!(!cache.root().exists(), "nothing written to the cache");
    }
}
