//! The libvirt domain definition of a slot's guest.
//!
//! Offline by construction (no NIC), direct kernel boot, serial console to a file, the agent's
//! virtio-serial channel as a unix socket, and every way out of the guest (power-off, reboot,
//! crash) destroys it so a dead guest is seen as "shut off", never as a guest that restarted.

use crate::accel::ResolvedAccel;
use crate::io_disk::IoDiskSource;
use crate::VmError;
use pyti_wire::agent_protocol::CHANNEL_NAME;
use std::path::{Path, PathBuf};

/// Everything that goes into one slot domain's XML.
#[derive(Debug, Clone)]
pub struct DomainSpec {
    /// `pyti-<slave>-<slot>`.
    pub name: String,
    pub accel: ResolvedAccel,
    pub memory_mib: u64,
    pub vcpus: u64,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    /// The image's kernel command line; `panic=-1` is added so a guest panic reboots, and a
    /// reboot destroys the domain (seen at once instead of at the deadline).
    pub kernel_cmdline: String,
    /// The slot's qcow2 overlay (never the cached image itself).
    pub system_disk: PathBuf,
    /// Present at boot in cold mode; hot-plugged after each revert in warm mode.
    pub io_disk: Option<IoDiskSource>,
    pub console_log: PathBuf,
    pub agent_socket: PathBuf,
}

impl DomainSpec {
    /// Renders the domain XML; fails on paths libvirt cannot take (relative, not UTF-8).
    pub fn to_xml(&self) -> Result<String, VmError> {
        let initrd = match &self.initrd {
            Some(path) => format!("<initrd>{}</initrd>", escape_path(path)?),
            None => String::new(),
        };
        let mut cmdline = self.kernel_cmdline.trim().to_string();
        if !cmdline.split_whitespace().any(|w| w.starts_with("panic=")) {
            cmdline.push_str(" panic=-1");
        }
        let io_disk = match &self.io_disk {
            Some(io) => io.disk_xml()?,
            None => String::new(),
        };
        Ok(format!(
            "<domain type='{domain_type}'>\
<name>{name}</name>\
<memory unit='MiB'>{memory}</memory><vcpu>{vcpus}</vcpu>\
<os><type arch='x86_64' machine='pc'>hvm</type><kernel>{kernel}</kernel>{initrd}<cmdline>{cmdline}</cmdline></os>\
<features><acpi/><apic/></features>{cpu}\
<clock offset='utc'/>\
<on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>\
<devices>\
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{system_disk}'/><target dev='vda' bus='virtio'/></disk>\
{io_disk}\
<serial type='file'><source path='{console}'/><target port='0'/></serial>\
<channel type='unix'><source mode='bind' path='{socket}'/><target type='virtio' name='{channel}'/></channel>\
<controller type='scsi' index='0' model='virtio-scsi'/>\
<controller type='usb' model='none'/><memballoon model='none'/>\
</devices>{seclabel}</domain>",
            domain_type = self.accel.domain_type(),
            name = escape(&self.name),
            memory = self.memory_mib,
            vcpus = self.vcpus,
            kernel = escape_path(&self.kernel)?,
            cmdline = escape(&cmdline),
            cpu = self.accel.cpu_xml(),
            system_disk = escape_path(&self.system_disk)?,
            console = escape_path(&self.console_log)?,
            socket = escape_path(&self.agent_socket)?,
            channel = CHANNEL_NAME,
            seclabel = caller_seclabel(),
        ))
    }
}

/// Makes QEMU run as the calling user without relabelling files: as root under qemu:///system it
/// would otherwise run as libvirt-qemu and could not read images under /root.
pub fn caller_seclabel() -> String {
    // SAFETY: getuid/getgid have no preconditions and cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    format!(
        "<seclabel type='static' model='dac' relabel='no'><label>+{uid}:+{gid}</label></seclabel>"
    )
}

/// Escapes text for an XML attribute or element.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// An absolute, UTF-8, control-character-free path, escaped for XML.
pub fn escape_path(path: &Path) -> Result<String, VmError> {
    let bad = |detail: &str| VmError::BadPath {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    };
    let text = path.to_str().ok_or_else(|| bad("not valid UTF-8"))?;
    if !path.is_absolute() {
        return Err(bad("not an absolute path"));
    }
    if text.chars().any(char::is_control) {
        return Err(bad("contains control characters"));
    }
    Ok(escape(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> DomainSpec {
        DomainSpec {
            name: "pyti-vmtest-0".into(),
            accel: ResolvedAccel::Tcg,
            memory_mib: 1024,
            vcpus: 1,
            kernel: "/cache/img/vmlinux".into(),
            initrd: Some("/cache/img/initrd".into()),
            kernel_cmdline: "console=ttyS0 root=/dev/vda".into(),
            system_disk: "/state/pyti-vmtest-0/warm.qcow2".into(),
            io_disk: None,
            console_log: "/state/pyti-vmtest-0/console.log".into(),
            agent_socket: "/state/pyti-vmtest-0/agent.sock".into(),
        }
    }

    #[test]
    fn guest_is_offline_and_dies_on_every_exit() {
        let xml = spec().to_xml().unwrap();
        assert!(xml.starts_with("<domain type='qemu'>"));
        assert!(
            !xml.contains("<interface"),
            "no NIC: the guest must be offline"
        );
        for event in ["on_poweroff", "on_reboot", "on_crash"] {
            assert!(xml.contains(&format!("<{event}>destroy</{event}>")));
        }
        assert!(xml.contains("<cmdline>console=ttyS0 root=/dev/vda panic=-1</cmdline>"));
        assert!(xml.contains("name='org.pyti.agent.0'"));
        assert!(xml.contains("<seclabel type='static' model='dac' relabel='no'>"));
        assert!(
            !xml.contains("dev='sda'"),
            "warm domains are defined without the I/O disk"
        );
    }

    #[test]
    fn kvm_passes_the_host_cpu_through() {
        let xml = DomainSpec {
            accel: ResolvedAccel::Kvm,
            ..spec()
        }
        .to_xml()
        .unwrap();
        assert!(xml.starts_with("<domain type='kvm'>"));
        assert!(xml.contains("host-passthrough"));
    }

    #[test]
    fn cold_domain_has_the_io_disk_at_boot() {
        let xml = DomainSpec {
            io_disk: Some(IoDiskSource::File("/tmp/io.img".into())),
            ..spec()
        }
        .to_xml()
        .unwrap();
        assert!(xml.contains("<source file='/tmp/io.img'/><target dev='sda' bus='scsi'/>"));
        assert!(xml.contains("<controller type='scsi' index='0' model='virtio-scsi'/>"));
    }

    #[test]
    fn relative_kernel_path_is_refused() {
        let err = DomainSpec {
            kernel: "vmlinux".into(),
            ..spec()
        }
        .to_xml()
        .unwrap_err();
        assert!(err.to_string().contains("not an absolute path"));
    }
}
