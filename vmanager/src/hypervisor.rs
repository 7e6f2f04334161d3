//! One libvirt connection shared by every slot of a process, with the accelerator decided once.

use crate::accel::{self, AccelDecision, ResolvedAccel};
use crate::VmError;
use pyti_wire::recipe::Accel;
use std::sync::{Arc, Mutex};
use virt::connect::Connect;

/// A libvirt connection plus the cached accelerator probe. Cheap to share (`Arc`); every method
/// blocks, so call them off the async executor.
pub struct Hypervisor {
    connect: Connect,
    uri: String,
    probed: Mutex<Option<AccelDecision>>,
}

impl std::fmt::Debug for Hypervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hypervisor")
            .field("uri", &self.uri)
            .finish()
    }
}

impl Hypervisor {
    /// Connects to libvirt at `uri` (`qemu:///system` for slaves, `test:///default` in unit tests).
    pub fn open(uri: &str) -> Result<Arc<Hypervisor>, VmError> {
        quiet_libvirt();
        let connect = Connect::open(Some(uri)).map_err(|e| VmError::LibvirtUnreachable {
            uri: uri.to_string(),
            detail: e.message().to_string(),
        })?;
        Ok(Arc::new(Hypervisor {
            connect,
            uri: uri.to_string(),
            probed: Mutex::new(None),
        }))
    }

    /// The underlying connection. The test driver keeps its state per connection, so tests share
    /// one `Hypervisor` between the slot and their own checks.
    pub fn connect(&self) -> &Connect {
        &self.connect
    }

    /// The URI this connection was opened with.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// Resolves a recipe's accelerator request: `Auto` probes once per connection (the probe boots
    /// a throw-away guest, ~0.3–2 s) and caches the decision; `Kvm` fails if the probe says no.
    pub fn accel_for(&self, requested: Accel) -> Result<AccelDecision, VmError> {
        if requested == Accel::Tcg {
            return Ok(AccelDecision {
                accel: ResolvedAccel::Tcg,
                reason: "the recipe asks for TCG".to_string(),
            });
        }
        let decision = {
            let mut probed = self.probed.lock().unwrap_or_else(|p| p.into_inner());
            match &*probed {
                Some(d) => d.clone(),
                None => {
                    let d = accel::probe_accel_on(&self.connect);
                    tracing::info!(uri = %self.uri, accel = ?d.accel, reason = %d.reason, "accelerator decided");
                    *probed = Some(d.clone());
                    d
                }
            }
        };
        if requested == Accel::Kvm && decision.accel != ResolvedAccel::Kvm {
            return Err(VmError::KvmUnavailable {
                reason: decision.reason,
            });
        }
        Ok(decision)
    }
}

/// libvirt prints every error to stderr by default; vmanager returns each one as a [`VmError`]
/// (and expects some, like "domain not found" during recovery), so the printing is turned off.
pub(crate) fn quiet_libvirt() {
    virt::error::clear_error_callback();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_libvirtd_says_how_to_start_it() {
        let err = Hypervisor::open("qemu:///system?socket=/nonexistent/libvirt-sock").unwrap_err();
        assert!(matches!(err, VmError::LibvirtUnreachable { .. }), "{err}");
        assert!(err.to_string().contains("scripts/setup-host.sh"), "{err}");
    }

    #[test]
    fn tcg_recipes_skip_the_probe_and_kvm_recipes_fail_without_kvm() {
        let hypervisor = Hypervisor::open("test:///default").unwrap();
        assert_eq!(
            hypervisor.accel_for(Accel::Tcg).unwrap().accel,
            ResolvedAccel::Tcg
        );
        let err = hypervisor.accel_for(Accel::Kvm).unwrap_err();
        assert!(err.to_string().contains("accel = \"auto\""), "{err}");
    }
}
