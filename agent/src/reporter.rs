//! Telling the host what happens: JSON lines on the virtio-serial port, echoed to the console.
//!
//! Writes to a virtio-serial port block while the host has no reader connected, so a writer
//! thread owns the port and the agent never stalls on it. The console echo (prefixed
//! [`CONSOLE_MARKER`]) is for people reading the guest's console log.

use pyti_wire::agent_protocol::{AgentMessage, CHANNEL_NAME, CONSOLE_MARKER};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Where virtio-serial ports describe themselves (no udev in the guest to make the
/// `/dev/virtio-ports/<name>` links).
const PORTS_SYSFS: &str = "/sys/class/virtio-ports";
/// How long the writer waits for the port to appear (the module loads in the initrd; this
/// covers a slow probe). Without a port the agent still reports on the console.
const PORT_WAIT: Duration = Duration::from_secs(10);

/// Sends [`AgentMessage`]s to the host.
pub struct Reporter {
    console: Option<File>,
    port: mpsc::Sender<String>,
}

impl Reporter {
    /// A reporter writing to `/dev/console` and (from a background thread) the agent's port.
    pub fn new() -> Reporter {
        let console = OpenOptions::new().write(true).open("/dev/console").ok();
        let (port, lines) = mpsc::channel::<String>();
        std::thread::spawn(move || port_writer(lines));
        Reporter { console, port }
    }

    /// Sends one message (never blocks on the host).
    pub fn send(&mut self, message: &AgentMessage) {
        let line = serde_json::to_string(message).unwrap_or_else(|e| format!("{{\"event\":\"failed\",\"task_id\":null,\"detail\":\"cannot encode message: {e}\"}}"));
        self.console_line(&format!("{CONSOLE_MARKER}{line}"));
        let _ = self.port.send(line);
    }

    /// A free-form line on the console (diagnostics for people, never parsed).
    pub fn log(&mut self, text: &str) {
        self.console_line(&format!("pyti-agent: {text}"));
    }

    fn console_line(&mut self, line: &str) {
        match self.console.as_mut() {
            Some(console) => {
                let _ = writeln!(console, "{line}");
            }
            None => eprintln!("{line}"),
        }
    }
}

/// Finds the port named [`CHANNEL_NAME`] and writes every line to it, in order.
fn port_writer(lines: mpsc::Receiver<String>) {
    let started = Instant::now();
    let mut port = None;
    while port.is_none() && started.elapsed() < PORT_WAIT {
        port = find_port().and_then(|p| OpenOptions::new().write(true).open(p).ok());
        if port.is_none() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    for line in lines {
        if let Some(p) = port.as_mut() {
            let _ = p.write_all(format!("{line}\n").as_bytes());
            let _ = p.flush();
        }
    }
}

/// `/dev/vportNpM` of the port whose sysfs `name` is [`CHANNEL_NAME`].
fn find_port() -> Option<PathBuf> {
    let linked = PathBuf::from("/dev/virtio-ports").join(CHANNEL_NAME);
    if linked.exists() {
        return Some(linked);
    }
    for entry in std::fs::read_dir(PORTS_SYSFS).ok()?.filter_map(|e| e.ok()) {
        let name = std::fs::read_to_string(entry.path().join("name")).unwrap_or_default();
        if name.trim() == CHANNEL_NAME {
            let dev = PathBuf::from("/dev").join(entry.file_name());
            if dev.exists() {
                return Some(dev);
            }
        }
    }
    None
}
