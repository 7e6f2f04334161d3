//! Deciding KVM or TCG: ask libvirt whether KVM exists, then prove it by running a guest.
//!
//! `/dev/kvm` and libvirt's capabilities can both say "KVM" on hosts where KVM guests abort or hang
//! (nested virtualisation: QEMU 7.2 dies with `failed to set MSR 0x10a` for the host CPU model).
//! So the probe boots a throw-away guest with exactly the CPU configuration slots use: a 90-byte
//! multiboot kernel that writes a marker to the serial port. The marker within
//! [`PROBE_DEADLINE`] means KVM works; anything else means TCG, with the evidence as the reason.

use crate::VmError;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};
use virt::connect::Connect;
use virt::domain::Domain;

/// How long the probe guest may take to print its marker. It needs ~20 ms under KVM and
/// ~250 ms under TCG; a guest that prints nothing in 5 s is hung (seen with nested KVM).
pub const PROBE_DEADLINE: Duration = Duration::from_secs(5);
/// How often the probe looks at the guest's serial log.
const PROBE_POLL: Duration = Duration::from_millis(25);
/// What the probe kernel prints on its serial port.
const PROBE_MARKER: &str = "PYTI-ACCEL-PROBE-OK";

/// The accelerator a slot's domain uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolvedAccel {
    /// Hardware virtualisation: `<domain type='kvm'>` with the host's CPU passed through.
    Kvm,
    /// Software emulation: `<domain type='qemu'>`, ~10x slower for CPU work, always available.
    Tcg,
}

impl ResolvedAccel {
    /// The libvirt domain type.
    pub fn domain_type(self) -> &'static str {
        match self {
            ResolvedAccel::Kvm => "kvm",
            ResolvedAccel::Tcg => "qemu",
        }
    }

    /// The `<cpu>` element slots use. The probe boots this same CPU, so a "KVM works" answer
    /// holds for the slots' guests too.
    pub fn cpu_xml(self) -> &'static str {
        match self {
            ResolvedAccel::Kvm => "<cpu mode='host-passthrough' check='none'/>",
            ResolvedAccel::Tcg => "",
        }
    }
}

/// The probe's answer and why, for logs and `pyti doctor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccelDecision {
    pub accel: ResolvedAccel,
    pub reason: String,
}

/// Connects to libvirt at `uri` and decides KVM or TCG (takes under ~7 s; ~2 s on this machine).
pub fn probe_accel(uri: &str) -> Result<AccelDecision, VmError> {
    crate::hypervisor::quiet_libvirt();
    let connect = Connect::open(Some(uri)).map_err(|e| VmError::LibvirtUnreachable {
        uri: uri.to_string(),
        detail: e.message().to_string(),
    })?;
    Ok(probe_accel_on(&connect))
}

/// Decides KVM or TCG on an open connection (see the module documentation).
pub fn probe_accel_on(connect: &Connect) -> AccelDecision {
    let tcg = |reason: String| AccelDecision {
        accel: ResolvedAccel::Tcg,
        reason,
    };
    if !Path::new("/dev/kvm").exists() {
        return tcg(
            "/dev/kvm does not exist (no KVM module loaded, or no hardware virtualisation)".into(),
        );
    }
    if let Err(e) = connect.domain_capabilities(None, Some("x86_64"), None, Some("kvm"), 0) {
        return tcg(format!(
            "libvirt reports no KVM domain support: {}",
            e.message()
        ));
    }
    match boot_probe_guest(connect) {
        Ok(elapsed) => AccelDecision {
            accel: ResolvedAccel::Kvm,
            reason: format!(
                "a KVM test guest (host CPU passed through) ran in {} ms",
                elapsed.as_millis()
            ),
        },
        Err(why) => tcg(format!("KVM is present but a KVM test guest failed: {why}")),
    }
}

/// Boots the probe guest under KVM; Ok(time to marker) or Err(evidence).
fn boot_probe_guest(connect: &Connect) -> Result<Duration, String> {
    let dir = tempfile::Builder::new()
        .prefix("pyti-accel-probe-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let kernel = dir.path().join("probe.bin");
    let log = dir.path().join("serial.log");
    std::fs::write(&kernel, probe_kernel())
        .map_err(|e| format!("cannot write {}: {e}", kernel.display()))?;
    let name = format!("pyti-accel-probe-{}", std::process::id());
    let xml = format!(
        "<domain type='kvm'><name>{name}</name><memory unit='MiB'>32</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64' machine='pc'>hvm</type><kernel>{kernel}</kernel></os>{cpu}\
         <devices><serial type='file'><source path='{log}'/><target port='0'/></serial>\
         <controller type='usb' model='none'/><memballoon model='none'/></devices>{seclabel}</domain>",
        kernel = crate::domain_xml::escape(&kernel.to_string_lossy()),
        log = crate::domain_xml::escape(&log.to_string_lossy()),
        cpu = ResolvedAccel::Kvm.cpu_xml(),
        seclabel = crate::domain_xml::caller_seclabel(),
    );
    let started = Instant::now();
    // Transient: destroying it removes it, and a crash of this process leaves nothing defined.
    let domain = connect
        .create_domain_xml(&xml, 0)
        .map_err(|e| first_error_line(e.message()))?;
    let result = wait_for_marker(&domain, &log, started);
    let _ = domain.destroy();
    result
}

fn wait_for_marker(domain: &Domain, log: &Path, started: Instant) -> Result<Duration, String> {
    loop {
        let mut text = String::new();
        if let Ok(file) = std::fs::File::open(log) {
            let _ = file.take(4096).read_to_string(&mut text);
        }
        if text.contains(PROBE_MARKER) {
            return Ok(started.elapsed());
        }
        if !domain.is_active().unwrap_or(false) {
            return Err("the guest stopped before running its first instructions".into());
        }
        if started.elapsed() > PROBE_DEADLINE {
            return Err(format!(
                "the guest printed nothing within {PROBE_DEADLINE:?} (KVM hangs)"
            ));
        }
        std::thread::sleep(PROBE_POLL);
    }
}

/// QEMU's messages span lines; keep the one that names the problem, bounded.
fn first_error_line(message: &str) -> String {
    let line = message
        .lines()
        .map(|l| l.trim())
        .find(|l| l.contains("error") && !l.is_empty())
        .unwrap_or(message.trim());
    line.chars().take(300).collect()
}

/// A multiboot (v1, "a.out kludge") kernel loaded at 1 MiB: prints [`PROBE_MARKER`] on COM1 and
/// halts. 32-bit code: `mov esi,msg; mov dx,0x3f8; l: lodsb; test al,al; jz d; out dx,al; jmp l;
/// d: cli; hlt; jmp d`.
fn probe_kernel() -> Vec<u8> {
    const MAGIC: u32 = 0x1BAD_B002;
    const FLAGS: u32 = 0x0001_0000; // load addresses are in the header
    const BASE: u32 = 0x0010_0000;
    const CODE: u32 = 0x20;
    const MESSAGE: u32 = 0x35;
    let mut image = Vec::with_capacity(96);
    for word in [
        MAGIC,
        FLAGS,
        MAGIC.wrapping_add(FLAGS).wrapping_neg(),
        BASE,        // header_addr
        BASE,        // load_addr
        0,           // load_end_addr: the whole file
        0,           // bss_end_addr: none
        BASE + CODE, // entry_addr
    ] {
        image.extend_from_slice(&word.to_le_bytes());
    }
    image.push(0xBE);
    image.extend_from_slice(&(BASE + MESSAGE).to_le_bytes());
    image.extend_from_slice(&[
        0x66, 0xBA, 0xF8, 0x03, 0xAC, 0x84, 0xC0, 0x74, 0x03, 0xEE, 0xEB, 0xF8, 0xFA, 0xF4, 0xEB,
        0xFC,
    ]);
    debug_assert_eq!(image.len(), MESSAGE as usize);
    image.extend_from_slice(PROBE_MARKER.as_bytes());
    image.extend_from_slice(b"\n\0");
    image
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_kernel_has_a_valid_multiboot_header() {
        let k = probe_kernel();
        let word = |i: usize| u32::from_le_bytes(k[i * 4..i * 4 + 4].try_into().unwrap());
        assert_eq!(word(0), 0x1BAD_B002);
        assert_eq!(word(0).wrapping_add(word(1)).wrapping_add(word(2)), 0);
        assert!(k.ends_with(b"PYTI-ACCEL-PROBE-OK\n\0"));
    }

    #[test]
    fn test_driver_has_no_kvm_and_probe_says_why() {
        let decision = probe_accel("test:///default").unwrap();
        assert_eq!(decision.accel, ResolvedAccel::Tcg);
        assert!(!decision.reason.is_empty());
    }

    #[test]
    fn qemu_error_is_reduced_to_the_line_that_names_it() {
        let msg = "internal error: qemu unexpectedly closed the monitor: 2026 qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69\nqemu: Assertion failed";
        assert!(first_error_line(msg).contains("MSR 0x10a"));
    }
}
