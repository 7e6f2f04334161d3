//! Inject: wipe the previous task's files and write this task's input onto a slot's I/O disk.

use crate::appliance::Appliance;
use crate::capacity::{self, CapacityError};
use crate::infrastructure::InfrastructureError;
use crate::io_disk::{self, IoDisk};
use crate::payload::{CheckedPayload, PayloadError};
use pyti_wire::io_layout::{PACKAGE_DIR, TASK_FILE, WHEELHOUSE_DIR};
use pyti_wire::result_region;
use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Why a task's input could not be put on its I/O disk. The disk stays held (the VM must not
/// start); see [`InjectError::is_infrastructure`] for how to report the task.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error(transparent)]
    Infrastructure(#[from] InfrastructureError),
    #[error("invalid payload: {0}")]
    Payload(#[from] PayloadError),
    #[error(transparent)]
    Capacity(#[from] CapacityError),
    #[error("disk of slot {slot} does not belong to this session")]
    ForeignDisk { slot: usize },
    #[error("writing the task input to slot {slot} failed: {detail}")]
    Write { slot: usize, detail: String },
}

impl InjectError {
    /// True when the machinery failed (report the task `tmpfail`, retry it); false when the task's
    /// own input is at fault (it cannot succeed as it is).
    pub fn is_infrastructure(&self) -> bool {
        matches!(
            self,
            InjectError::Infrastructure(_)
                | InjectError::Write { .. }
                | InjectError::ForeignDisk { .. }
        )
    }
}

/// Limits inject checks against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InjectSizing {
    pub(crate) disk_bytes: u64,
    pub(crate) max_disk_bytes: u64,
    pub(crate) output_reserve: u64,
}

/// Refuses a payload no allowed disk could hold, before the appliance is touched.
pub(crate) fn precheck(
    payload: &CheckedPayload,
    sizing: InjectSizing,
) -> Result<u64, CapacityError> {
    let needed = capacity::required_free_bytes(
        payload.content_bytes(),
        payload.file_count(),
        sizing.output_reserve,
    );
    if capacity::disk_bytes_for(needed) > sizing.max_disk_bytes {
        return Err(CapacityError::PayloadTooLarge {
            needed,
            reserve: sizing.output_reserve,
            max_disk: sizing.max_disk_bytes,
        });
    }
    Ok(needed)
}

/// Host method: rebuilds the slot's filesystem from a staging directory with `mkfs.ext4 -d`.
/// The disk is held (neither the guest nor the appliance has it mounted), so rewriting the image
/// under nbdkit is safe; the appliance's next mount drops its stale buffers.
pub(crate) fn inject_on_host(
    disk: &IoDisk,
    payload: &CheckedPayload,
    needed: u64,
    sizing: InjectSizing,
) -> Result<(), InjectError> {
    let fits = capacity::disk_bytes_for(needed);
    if fits > sizing.disk_bytes {
        return Err(CapacityError::DiskTooSmall {
            slot: disk.slot,
            needed,
            available: sizing.disk_bytes.saturating_sub(fits - needed),
            disk: sizing.disk_bytes,
            max_disk: sizing.max_disk_bytes,
            suggested: fits.min(sizing.max_disk_bytes),
        }
        .into());
    }
    let staging = disk
        .image_path
        .with_file_name(format!("staging-slot-{}", disk.slot));
    let staged = stage(&staging, payload);
    let formatted = staged.and_then(|()| io_disk::format_image(&disk.image_path, Some(&staging)));
    let _ = std::fs::remove_dir_all(&staging);
    Ok(formatted?)
}

/// Lays the payload out as it will appear on the disk; copies are world-readable so the guest's
/// unprivileged steps can read them whatever the host file's mode.
fn stage(staging: &Path, payload: &CheckedPayload) -> Result<(), InfrastructureError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| InfrastructureError::CreateImage { path, source }
    };
    if staging.exists() {
        std::fs::remove_dir_all(staging).map_err(io(staging))?;
    }
    for dir in [PACKAGE_DIR, WHEELHOUSE_DIR] {
        let dir = staging.join(dir);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    }
    for (dir, file, _) in &payload.files {
        let target = staging.join(dir).join(&file.name);
        std::fs::copy(&file.source, &target).map_err(|source| {
            InfrastructureError::PayloadRead {
                path: file.source.clone(),
                source,
            }
        })?;
        std::fs::set_permissions(&target, Permissions::from_mode(0o644)).map_err(io(&target))?;
    }
    let task = staging.join(TASK_FILE);
    std::fs::write(&task, &payload.task_json).map_err(io(&task))?;
    Ok(())
}

/// Appliance method: mounts the slot (reformatting it if the guest left it unmountable), wipes it, checks free
/// space, writes the payload and unmounts. On return the filesystem is never mounted, whatever
/// happened (if unmounting fails the caller must discard the appliance).
pub(crate) fn inject_through_appliance(
    appliance: &Appliance,
    slot: usize,
    payload: &CheckedPayload,
    needed: u64,
    sizing: InjectSizing,
) -> Result<(), InjectError> {
    let write_err = |during: &'static str, e: &guestfs::Error| -> InjectError {
        match appliance.diagnose(during, e) {
            Ok(detail) => InjectError::Write { slot, detail },
            Err(dead) => dead.into(),
        }
    };
    if let Err(e) = appliance.mount_fresh(slot, false) {
        let detail = appliance.diagnose("inject mount", &e)?;
        tracing::warn!(slot, %detail, "I/O disk not mountable (left damaged by a guest?); reformatting");
        appliance
            .reformat(slot, sizing.disk_bytes)
            .map_err(|e| write_err("inject reformat", &e))?;
        appliance
            .mount_fresh(slot, false)
            .map_err(|e| write_err("inject mount", &e))?;
    }
    let written = write_payload(appliance, slot, payload, needed, sizing);
    let unmounted = appliance
        .unmount()
        .map_err(|e| write_err("inject unmount", &e));
    written?;
    unmounted?;
    // The previous task's result must not be taken for this one's.
    if let Some(region) = result_region::region_offset(sizing.disk_bytes) {
        appliance
            .write_raw(slot, &[0u8; result_region::HEADER_BYTES as usize], region)
            .map_err(|e| write_err("inject wipe result header", &e))?;
    }
    Ok(())
}

fn write_payload(
    appliance: &Appliance,
    slot: usize,
    payload: &CheckedPayload,
    needed: u64,
    sizing: InjectSizing,
) -> Result<(), InjectError> {
    let g = appliance.handle();
    let fail = |during: &'static str| {
        move |e: guestfs::Error| -> InjectError {
            match appliance.diagnose(during, &e) {
                Ok(detail) => InjectError::Write { slot, detail },
                Err(dead) => dead.into(),
            }
        }
    };
    wipe(appliance, slot, sizing.disk_bytes)?;
    let vfs = g.statvfs("/").map_err(fail("inject statvfs"))?;
    let available = u64::try_from(vfs.bavail.saturating_mul(vfs.frsize)).unwrap_or(0);
    if needed > available {
        return Err(CapacityError::DiskTooSmall {
            slot,
            needed,
            available,
            disk: sizing.disk_bytes,
            max_disk: sizing.max_disk_bytes,
            suggested: capacity::disk_bytes_for(needed).min(sizing.max_disk_bytes),
        }
        .into());
    }
    g.mkdir(&format!("/{PACKAGE_DIR}"))
        .map_err(fail("inject mkdir"))?;
    g.mkdir(&format!("/{WHEELHOUSE_DIR}"))
        .map_err(fail("inject mkdir"))?;
    for (dir, file, _) in &payload.files {
        let source = file.source.to_str().ok_or_else(|| {
            InjectError::Payload(PayloadError::BadName {
                name: file.source.display().to_string(),
                reason: "host path is not UTF-8",
            })
        })?;
        g.upload(source, &format!("/{dir}/{}", file.name))
            .map_err(fail("inject upload"))?;
    }
    // task.json last: an agent that finds it knows the rest is complete.
    g.write(&format!("/{TASK_FILE}"), &payload.task_json)
        .map_err(fail("inject write task.json"))?;
    Ok(())
}

/// Removes everything the previous task (and its guest) left, keeping `lost+found`. If the guest
/// made files impossible to remove (immutable attributes, corrupted directories), the slot is
/// reformatted instead.
fn wipe(appliance: &Appliance, slot: usize, disk_bytes: u64) -> Result<(), InjectError> {
    let g = appliance.handle();
    let attempt = || -> Result<(), guestfs::Error> {
        for name in g.ls("/")? {
            if name != "lost+found" {
                g.rm_rf(&format!("/{name}"))?;
            }
        }
        Ok(())
    };
    if let Err(e) = attempt() {
        let detail = appliance.diagnose("inject wipe", &e)?;
        tracing::warn!(slot, %detail, "cannot wipe the I/O disk; reformatting it");
        let redo = || -> Result<(), guestfs::Error> {
            appliance.unmount()?;
            appliance.reformat(slot, disk_bytes)?;
            appliance.mount_fresh(slot, false)
        };
        redo().map_err(|e| match appliance.diagnose("inject reformat", &e) {
            Ok(detail) => InjectError::Write { slot, detail },
            Err(dead) => dead.into(),
        })?;
    }
    Ok(())
}
