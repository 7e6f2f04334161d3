//! The warm snapshot: the running guest, prepared and waiting for an I/O disk, saved with its
//! memory inside the slot's qcow2 overlay, and the two ways back into it.
//!
//! libvirt 9.0 reverts a running domain by killing QEMU and starting a new one with `-loadvm`
//! (measured here: ~2.0–2.5 s, most of it waiting for the old QEMU to be reaped). Loading the
//! snapshot inside the running QEMU with the monitor's `loadvm` takes ~0.2 s and keeps QEMU
//! alive, so that is the fast path; libvirt marks the domain "tainted: custom-monitor", which
//! is harmless here. It needs the live hardware to equal the snapshot's: the I/O disk is
//! detached first. When QEMU is not running (overrun, crash) libvirt's revert is the way back.

use crate::slot_domain::SlotDomain;
use crate::VmError;

/// Name of the warm snapshot in the slot's overlay and in libvirt's metadata.
pub const WARM_SNAPSHOT: &str = "pyti-warm";
/// `VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP`: the command is human-monitor syntax.
const MONITOR_HMP: u32 = 1;
/// `VIR_DOMAIN_SNAPSHOT_REVERT_PAUSED`: come back with vCPUs stopped, so the agent channel of the
/// new QEMU is connected before the guest runs.
const REVERT_PAUSED: u32 = 2;

/// How a revert got the guest back to the warm state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevertPath {
    /// `loadvm` in the running QEMU: the guest runs on at once, the channel stays connected.
    InPlace,
    /// libvirt started a new QEMU from the snapshot, paused: connect the channel, then resume.
    Restarted,
}

/// Takes the warm snapshot of the running guest (memory and system disk, internal).
pub fn take(slot: &SlotDomain) -> Result<(), VmError> {
    let xml = format!(
        "<domainsnapshot><name>{WARM_SNAPSHOT}</name>\
         <description>pyti warm state: agent ready, no I/O disk</description>\
         <memory snapshot='internal'/></domainsnapshot>"
    );
    slot.domain()
        .create_snapshot_xml(&xml, 0)
        .map_err(|e| refused(slot.name(), e.message()))?;
    Ok(())
}

/// Whether the warm snapshot exists (in libvirt's metadata).
pub fn exists(slot: &SlotDomain) -> bool {
    virt::domain::Domain::lookup_snapshot_by_name(slot.domain(), WARM_SNAPSHOT, 0).is_ok()
}

/// Returns the guest to the warm state, in place when QEMU runs without an I/O disk.
pub fn revert(slot: &SlotDomain) -> Result<RevertPath, VmError> {
    if slot.is_running()? {
        if !slot.has_io_disk()? {
            match slot
                .domain()
                .qemu_monitor_command(&format!("loadvm {WARM_SNAPSHOT}"), MONITOR_HMP)
            {
                // HMP reports errors as text with a successful call; silence is success.
                Ok(output) if output.trim().is_empty() => return Ok(RevertPath::InPlace),
                Ok(output) => tracing::warn!(
                    domain = slot.name(),
                    "in-place loadvm failed, restarting QEMU: {}",
                    output.trim()
                ),
                Err(e) => tracing::debug!(
                    domain = slot.name(),
                    "in-place loadvm unavailable, restarting QEMU: {}",
                    e.message()
                ),
            }
        }
        // The live hardware no longer matches the snapshot: start over from a new QEMU.
        slot.destroy()?;
    }
    revert_restarting(slot)?;
    Ok(RevertPath::Restarted)
}

/// libvirt's own revert: (kills QEMU if it runs and) starts a new one from the snapshot, paused.
/// The way back after an overrun or crash, and the benchmark's baseline for the in-place path.
pub fn revert_restarting(slot: &SlotDomain) -> Result<(), VmError> {
    let snapshot = virt::domain::Domain::lookup_snapshot_by_name(slot.domain(), WARM_SNAPSHOT, 0)
        .map_err(|e| VmError::libvirt("find the warm snapshot of", slot.name(), e))?;
    snapshot
        .revert(REVERT_PAUSED)
        .map_err(|e| VmError::libvirt("revert to the warm snapshot", slot.name(), e))
}

fn refused(domain: &str, detail: &str) -> VmError {
    let hint = if detail.contains("all disks") {
        "Internal snapshots need every disk included: the I/O disk must be detached when the warm snapshot is taken."
    } else if detail.contains("qcow2") || detail.contains("support") {
        "Internal snapshots need a qcow2 system disk; the slot's overlay is qcow2, so check the image's system disk format."
    } else {
        "Try cold mode for this slot, or look at the domain log under /var/log/libvirt/qemu/."
    };
    VmError::SnapshotRefused {
        domain: domain.to_string(),
        detail: detail.to_string(),
        hint,
    }
}
