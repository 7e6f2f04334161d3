//! Guest images built from the host's installed distribution packages, cached per user.
//!
//! An image is three files: a kernel (the uncompressed `vmlinux` when it can be extracted), a
//! minimal initrd, and a qcow2 system disk whose `/init` is the pyti agent. [`build`] makes one
//! for a [`Recipe`](pyti_wire::recipe::Recipe) and an agent binary; images live in an
//! [`ImageCache`] under a key hashing everything that goes into them, so a second build with
//! nothing changed returns the cached [`GuestImage`] at once.
//!
//! # Layout
//! - [`cache`]: [`ImageCache`] (where images live) and the cache key.
//! - [`guest_image`]: [`GuestImage`], a built image and its manifest.
//! - [`build`](mod@build): [`build()`] and its progress events ([`BuildPhase`]).
//! - [`agent_binary`]: finding the `pyti-agent` binary to bake in.
//! - `supermin`, `kernel`, `kernel_modules`, `guest_files`: the build's phases; `host_tool`: running
//!   host programs with errors that name the Debian package to install.
//!
//! Everything here blocks (child processes, big files): call it off the async executor.

pub mod agent_binary;
pub mod build;
pub mod cache;
mod error;
mod guest_files;
pub mod guest_image;
mod host_tool;
pub mod kernel;
mod kernel_modules;
mod supermin;

pub use agent_binary::agent_binary_path;
pub use build::{build, BuildPhase, HostFiles, Phase};
pub use cache::{ImageCache, PrunedImages};
pub use error::ImageError;
pub use guest_files::GUEST_AGENT_PATH;
pub use guest_image::GuestImage;
pub use kernel::{find_host_kernel, HostKernel};
