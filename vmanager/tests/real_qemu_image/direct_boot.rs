//! Boots a [`GuestImage`] straight with `qemu-system-x86_64 -accel tcg` (no libvirt: that is
//! vmanager's job, tested there) and reads the agent's channel, for the image test and bench.

use pyti_vmanager::image::GuestImage;
use pyti_wire::agent_protocol::{AgentMessage, CHANNEL_NAME};
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running guest and its agent channel.
pub struct DirectBoot {
    qemu: Child,
    qmp: PathBuf,
    hotplugged: usize,
    channel: BufReader<UnixStream>,
    pub started: Instant,
    pub console_log: PathBuf,
}

impl DirectBoot {
    /// Boots `image` with `system_disk` (an overlay or the image's disk opened snapshot=on) and
    /// an optional raw I/O disk; returns once the agent channel is connected.
    pub fn start(
        image: &GuestImage,
        system_disk: &Path,
        snapshot: bool,
        io_disk: Option<&Path>,
        dir: &Path,
    ) -> DirectBoot {
        let socket = dir.join("agent.sock");
        let qmp = dir.join("qmp.sock");
        let console_log = dir.join("console.log");
        let _ = std::fs::remove_file(&socket);
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args([
            "-accel",
            "tcg",
            "-m",
            "1024",
            "-smp",
            "1",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-nic",
            "none",
        ])
        .arg("-kernel")
        .arg(&image.kernel)
        .arg("-initrd")
        .arg(&image.initrd)
        .arg("-append")
        .arg(&image.kernel_cmdline)
        .arg("-drive")
        .arg(format!(
            "file={},if=virtio,format=qcow2{}",
            system_disk.display(),
            if snapshot { ",snapshot=on" } else { "" }
        ))
        .arg("-serial")
        .arg(format!("file:{}", console_log.display()))
        .args(["-device", "virtio-serial-pci"])
        .arg("-chardev")
        .arg(format!(
            "socket,id=agent,path={},server=on,wait=off",
            socket.display()
        ))
        .arg("-device")
        .arg(format!("virtserialport,chardev=agent,name={CHANNEL_NAME}"))
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", qmp.display()));
        if let Some(io) = io_disk {
            cmd.arg("-drive")
                .arg(format!("file={},if=virtio,format=raw", io.display()));
        }
        let started = Instant::now();
        let qemu = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("qemu-system-x86_64 starts (install qemu-system-x86)");
        let deadline = Instant::now() + Duration::from_secs(20);
        let stream = loop {
            match UnixStream::connect(&socket) {
                Ok(s) => break s,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!(
                    "cannot connect to the agent channel {}: {e}",
                    socket.display()
                ),
            }
        };
        DirectBoot {
            qemu,
            qmp,
            hotplugged: 0,
            channel: BufReader::new(stream),
            started,
            console_log,
        }
    }

    /// The next agent message, or a panic with the console log after `timeout`.
    pub fn next_message(&mut self, timeout: Duration) -> AgentMessage {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "no agent message within {timeout:?}; console:\n{}",
                    self.console()
                );
            }
            self.channel.get_ref().set_read_timeout(Some(left)).unwrap();
            let mut line = String::new();
            match self.channel.read_line(&mut line) {
                Ok(0) => panic!("agent channel closed; console:\n{}", self.console()),
                Ok(_) => {
                    if line.trim().is_empty() {
                        continue;
                    }
                    return AgentMessage::parse_line(&line)
                        .unwrap_or_else(|e| panic!("{e}: {line}"));
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => panic!("reading agent channel: {e}"),
            }
        }
    }

    /// Hot-plugs `image` (raw) as a new virtio disk through QMP, as vmanager does after a revert.
    pub fn hotplug_disk(&mut self, image: &Path) {
        self.hotplugged += 1;
        let n = self.hotplugged;
        let stream = UnixStream::connect(&self.qmp).expect("QMP socket");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        let mut line = String::new();
        reader.read_line(&mut line).expect("QMP greeting");
        let commands = [
            serde_json::json!({"execute": "qmp_capabilities"}),
            serde_json::json!({"execute": "blockdev-add", "arguments": {
                "node-name": format!("io{n}"), "driver": "raw",
                "file": {"driver": "file", "filename": image.to_string_lossy()}}}),
            serde_json::json!({"execute": "device_add", "arguments": {
                "driver": "virtio-blk-pci", "drive": format!("io{n}"), "id": format!("iodisk{n}")}}),
        ];
        for command in commands {
            use std::io::Write;
            writeln!(writer, "{command}").unwrap();
            loop {
                line.clear();
                reader.read_line(&mut line).expect("QMP reply");
                let reply: serde_json::Value = serde_json::from_str(&line).expect("QMP JSON");
                if let Some(error) = reply.get("error") {
                    panic!("QMP {command} failed: {error}");
                }
                if reply.get("return").is_some() {
                    break;
                }
            }
        }
    }

    /// The guest's console output so far (for failure messages).
    pub fn console(&self) -> String {
        let text = std::fs::read_to_string(&self.console_log).unwrap_or_default();
        let skip = text.len().saturating_sub(8000);
        text.get(skip..).unwrap_or(&text).to_string()
    }

    /// Stops QEMU (SIGTERM lets it flush its disks) and waits for it.
    pub fn stop(mut self) {
        // SAFETY: plain kill of our own child.
        unsafe { libc::kill(self.qemu.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.qemu.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
    }
}

impl Drop for DirectBoot {
    fn drop(&mut self) {
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
    }
}
