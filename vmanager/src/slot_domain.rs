//! Blocking lifecycle operations on one slot's libvirt domain: define, start, destroy, undefine,
//! attach and detach the I/O disk. The async [`crate::VmSlot`] calls these off the executor.

use crate::domain_xml::DomainSpec;
use crate::io_disk::{IoDiskSource, IO_DISK_TARGET};
use crate::VmError;
use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::ErrorNumber;

/// `VIR_DOMAIN_START_PAUSED`: start QEMU with its vCPUs stopped, so the agent channel is
/// connected before the guest can write to it (QEMU drops bytes nobody is connected to).
const START_PAUSED: u32 = 1;
/// `VIR_DOMAIN_AFFECT_LIVE`: device changes apply to the running guest only, never to the
/// definition, so a destroyed guest comes back without the I/O disk.
const AFFECT_LIVE: u32 = 1;
/// `VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA`.
const UNDEFINE_EVERYTHING: u32 = 1 | 2;

/// A defined slot domain.
#[derive(Debug, Clone)]
pub struct SlotDomain {
    domain: Domain,
    name: String,
}

impl SlotDomain {
    /// Defines the domain from `spec`, replacing an inactive definition of the same name
    /// (cold mode redefines per task: a new overlay and I/O disk each time).
    pub fn define(connect: &Connect, spec: &DomainSpec) -> Result<SlotDomain, VmError> {
        let xml = spec.to_xml()?;
        if let Some(old) = SlotDomain::lookup(connect, &spec.name)? {
            old.destroy()?;
            old.undefine()?;
        }
        let domain = connect
            .define_domain_xml(&xml)
            .map_err(|e| VmError::libvirt("define", &spec.name, e))?;
        Ok(SlotDomain {
            domain,
            name: spec.name.clone(),
        })
    }

    /// The domain called exactly `name`, if one is defined or running.
    pub fn lookup(connect: &Connect, name: &str) -> Result<Option<SlotDomain>, VmError> {
        match connect.lookup_domain_by_name(name) {
            Ok(domain) => Ok(Some(SlotDomain {
                domain,
                name: name.to_string(),
            })),
            Err(e) if e.code().is(ErrorNumber::NoDomain) => Ok(None),
            Err(e) => Err(VmError::libvirt("look up", name, e)),
        }
    }

    /// The domain's name (`pyti-<slave>-<slot>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The libvirt handle, for snapshot operations.
    pub fn domain(&self) -> &Domain {
        &self.domain
    }

    /// Starts QEMU with the guest paused; call [`SlotDomain::resume`] once the channel is open.
    pub fn start_paused(&self) -> Result<(), VmError> {
        match self.domain.create_with_flags(START_PAUSED) {
            Ok(_) => Ok(()),
            // libvirt's test driver has no paused start; it runs no guest, so pausing after
            // the start is equivalent there.
            Err(e) if e.message().contains("unsupported flags") => {
                self.domain
                    .create()
                    .map_err(|e| VmError::libvirt("start", &self.name, e))?;
                self.domain
                    .suspend()
                    .map_err(|e| VmError::libvirt("pause", &self.name, e))
            }
            Err(e) => Err(VmError::libvirt("start", &self.name, e)),
        }
    }

    /// Lets the guest's vCPUs run.
    pub fn resume(&self) -> Result<(), VmError> {
        self.domain
            .resume()
            .map_err(|e| VmError::libvirt("resume", &self.name, e))
    }

    /// Stops QEMU at once (no guest shutdown); a stopped domain is left as it is.
    pub fn destroy(&self) -> Result<(), VmError> {
        if !self.is_running()? {
            return Ok(());
        }
        match self.domain.destroy() {
            Ok(()) => Ok(()),
            // It stopped on its own between the check and the call.
            Err(e) if e.code().is(ErrorNumber::OperationInvalid) => Ok(()),
            Err(e) => Err(VmError::libvirt("destroy", &self.name, e)),
        }
    }

    /// Removes the definition and its snapshot metadata (the domain must be stopped).
    pub fn undefine(&self) -> Result<(), VmError> {
        match self.domain.undefine_flags(UNDEFINE_EVERYTHING) {
            Ok(()) => Ok(()),
            Err(e) if e.code().is(ErrorNumber::NoDomain) => Ok(()),
            Err(e) => Err(VmError::libvirt("undefine", &self.name, e)),
        }
    }

    /// Whether QEMU is running (paused counts as running).
    pub fn is_running(&self) -> Result<bool, VmError> {
        self.domain
            .is_active()
            .map_err(|e| VmError::libvirt("query the state of", &self.name, e))
    }

    /// libvirt's id of the running QEMU process; it changes whenever QEMU is restarted.
    pub fn qemu_id(&self) -> Option<u32> {
        self.domain.id()
    }

    /// Hot-plugs the I/O disk into the running guest.
    pub fn attach_io_disk(&self, io: &IoDiskSource) -> Result<(), VmError> {
        self.domain
            .attach_device_flags(&io.disk_xml()?, AFFECT_LIVE)
            .map_err(|e| VmError::libvirt("attach the I/O disk to", &self.name, e))
    }

    /// Unplugs the I/O disk (a SCSI LUN goes at once, without the guest's consent); returns
    /// whether it is really gone.
    pub fn detach_io_disk(&self, io: &IoDiskSource) -> Result<bool, VmError> {
        self.domain
            .detach_device_flags(&io.disk_xml()?, AFFECT_LIVE)
            .map_err(|e| VmError::libvirt("detach the I/O disk from", &self.name, e))?;
        Ok(!self.has_io_disk()?)
    }

    /// Whether the running guest has an I/O disk attached.
    pub fn has_io_disk(&self) -> Result<bool, VmError> {
        let xml = self
            .domain
            .xml_desc(0)
            .map_err(|e| VmError::libvirt("read the definition of", &self.name, e))?;
        Ok(xml.contains(&format!("dev='{IO_DISK_TARGET}'")))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::accel::ResolvedAccel;
    use crate::warm_snapshot::{self, RevertPath};

    /// A spec for libvirt's test driver, which checks the XML but runs nothing.
    pub(crate) fn test_spec(name: &str) -> DomainSpec {
        DomainSpec {
            name: name.into(),
            accel: ResolvedAccel::Tcg,
            memory_mib: 256,
            vcpus: 1,
            kernel: "/nonexistent/vmlinux".into(),
            initrd: None,
            kernel_cmdline: "console=ttyS0".into(),
            system_disk: "/nonexistent/system.qcow2".into(),
            io_disk: None,
            console_log: "/nonexistent/console.log".into(),
            agent_socket: "/nonexistent/agent.sock".into(),
        }
    }

    #[test]
    fn define_start_destroy_undefine_on_the_test_driver() {
        let connect = Connect::open(Some("test:///default")).unwrap();
        let slot = SlotDomain::define(&connect, &test_spec("pyti-vmtest-life-0")).unwrap();
        assert!(!slot.is_running().unwrap());
        slot.start_paused().unwrap();
        assert!(slot.is_running().unwrap());
        slot.resume().unwrap();
        // Redefining a running slot (cold mode, next task) stops and replaces it.
        let slot = SlotDomain::define(&connect, &test_spec("pyti-vmtest-life-0")).unwrap();
        assert!(!slot.is_running().unwrap());
        slot.start_paused().unwrap();
        slot.destroy().unwrap();
        slot.destroy().unwrap(); // destroying a stopped domain is not an error
        slot.undefine().unwrap();
        assert!(SlotDomain::lookup(&connect, "pyti-vmtest-life-0")
            .unwrap()
            .is_none());
    }

    #[test]
    fn warm_snapshot_and_revert_on_the_test_driver() {
        let connect = Connect::open(Some("test:///default")).unwrap();
        let slot = SlotDomain::define(&connect, &test_spec("pyti-vmtest-snap-0")).unwrap();
        slot.start_paused().unwrap();
        slot.resume().unwrap();
        assert!(!warm_snapshot::exists(&slot));
        warm_snapshot::take(&slot).unwrap();
        assert!(warm_snapshot::exists(&slot));
        // The test driver has no QEMU monitor: the revert falls back to libvirt's own, which
        // comes back paused for the channel to be connected.
        assert_eq!(warm_snapshot::revert(&slot).unwrap(), RevertPath::Restarted);
        assert!(slot.is_running().unwrap());
        slot.resume().unwrap();
        // After a destroy (overrun), the snapshot brings the guest back.
        slot.destroy().unwrap();
        assert_eq!(warm_snapshot::revert(&slot).unwrap(), RevertPath::Restarted);
        assert!(slot.is_running().unwrap());
        slot.destroy().unwrap();
        slot.undefine().unwrap();
        assert!(SlotDomain::lookup(&connect, "pyti-vmtest-snap-0")
            .unwrap()
            .is_none());
    }
}
