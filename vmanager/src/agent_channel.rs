//! The host end of the agent's virtio-serial channel: a unix socket QEMU listens on.
//!
//! A reader thread turns the byte stream into [`ChannelEvent`]s. The guest is untrusted: lines
//! are bounded by [`MAX_AGENT_MESSAGE_BYTES`], and garbage becomes an event, never a panic. The
//! bounded queue pushes back on a guest that floods the channel.

use crate::VmError;
use pyti_wire::agent_protocol::AgentMessage;
use pyti_wire::limits::MAX_AGENT_MESSAGE_BYTES;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Events queued between the reader thread and the slot; a full queue stalls the guest's writes.
const CHANNEL_QUEUE: usize = 64;
/// How often `connect` retries while QEMU creates the socket.
const CONNECT_RETRY: Duration = Duration::from_millis(10);

/// What arrived on the channel.
#[derive(Debug, Clone, PartialEq)]
pub enum ChannelEvent {
    /// A well-formed agent message.
    Message(AgentMessage),
    /// A line that is not a valid message (too long, not UTF-8, bad JSON), with why.
    Invalid(String),
    /// QEMU closed the socket: the guest is gone.
    Closed,
}

/// A connected agent channel.
#[derive(Debug)]
pub struct AgentChannel {
    events: mpsc::Receiver<ChannelEvent>,
    stream: UnixStream,
    closed: bool,
}

impl AgentChannel {
    /// Connects to the channel socket at `path`, retrying until `deadline` while QEMU creates it.
    /// Blocking: call it off the executor.
    pub fn connect(domain: &str, path: &Path, deadline: Instant) -> Result<AgentChannel, VmError> {
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(stream) => break stream,
                Err(e) if Instant::now() >= deadline => {
                    return Err(VmError::Channel {
                        domain: domain.to_string(),
                        path: path.to_path_buf(),
                        detail: e.to_string(),
                    })
                }
                Err(_) => std::thread::sleep(CONNECT_RETRY),
            }
        };
        let reader = stream.try_clone().map_err(|e| VmError::Channel {
            domain: domain.to_string(),
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        let (tx, events) = mpsc::channel(CHANNEL_QUEUE);
        let name = format!("agent-channel-{domain}");
        let path_for_thread: PathBuf = path.to_path_buf();
        std::thread::Builder::new()
            .name(name)
            .spawn(move || read_events(reader, tx, &path_for_thread))
            .map_err(VmError::io("cannot start the reader thread for", path))?;
        Ok(AgentChannel {
            events,
            stream,
            closed: false,
        })
    }

    /// The next event, or `None` if nothing arrived before `deadline`.
    pub async fn next_before(&mut self, deadline: tokio::time::Instant) -> Option<ChannelEvent> {
        if self.closed {
            return Some(ChannelEvent::Closed);
        }
        match tokio::time::timeout_at(deadline, self.events.recv()).await {
            Ok(Some(event)) => {
                if event == ChannelEvent::Closed {
                    self.closed = true;
                }
                Some(event)
            }
            Ok(None) => {
                self.closed = true;
                Some(ChannelEvent::Closed)
            }
            Err(_) => None,
        }
    }

    /// Discards queued events (left over from a task the guest has been reverted out of).
    pub fn drain(&mut self) -> usize {
        let mut n = 0;
        while let Ok(event) = self.events.try_recv() {
            if event == ChannelEvent::Closed {
                self.closed = true;
            }
            n += 1;
        }
        n
    }
}

impl Drop for AgentChannel {
    fn drop(&mut self) {
        // Ends the reader thread's blocking read.
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

fn read_events(mut stream: UnixStream, tx: mpsc::Sender<ChannelEvent>, path: &Path) {
    let mut lines = LineSplitter::default();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::debug!(path = %path.display(), "agent channel read failed: {e}");
                break;
            }
        };
        for event in lines.push(&chunk[..n]) {
            if tx.blocking_send(event).is_err() {
                return; // the slot dropped the channel
            }
        }
    }
    let _ = tx.blocking_send(ChannelEvent::Closed);
}

/// Splits a byte stream into bounded lines and parses each as an [`AgentMessage`].
#[derive(Debug, Default)]
struct LineSplitter {
    line: Vec<u8>,
    /// Skipping the rest of a line that already exceeded the bound.
    overlong: bool,
}

impl LineSplitter {
    fn push(&mut self, bytes: &[u8]) -> Vec<ChannelEvent> {
        let mut events = Vec::new();
        for &byte in bytes {
            if byte == b'\n' {
                if self.overlong {
                    events.push(ChannelEvent::Invalid(format!(
                        "agent line longer than {MAX_AGENT_MESSAGE_BYTES} bytes dropped"
                    )));
                } else if let Some(event) = parse(&self.line) {
                    events.push(event);
                }
                self.line.clear();
                self.overlong = false;
            } else if self.line.len() >= MAX_AGENT_MESSAGE_BYTES {
                self.overlong = true;
                self.line.clear();
            } else if !self.overlong {
                self.line.push(byte);
            }
        }
        events
    }
}

fn parse(line: &[u8]) -> Option<ChannelEvent> {
    let text = match std::str::from_utf8(line) {
        Ok(text) => text.trim(),
        Err(_) => return Some(ChannelEvent::Invalid("agent line is not UTF-8".into())),
    };
    if text.is_empty() {
        return None;
    }
    Some(match AgentMessage::parse_line(text) {
        Ok(message) => ChannelEvent::Message(message),
        Err(why) => ChannelEvent::Invalid(why.chars().take(200).collect()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn messages_split_across_reads_are_reassembled() {
        let mut s = LineSplitter::default();
        assert!(s.push(br#"{"event":"done","task"#).is_empty());
        let events = s.push(b"_id\":\"t1\"}\n\n");
        assert_eq!(
            events,
            [ChannelEvent::Message(AgentMessage::Done {
                task_id: "t1".into()
            })]
        );
    }

    #[test]
    fn overlong_and_garbage_lines_are_reported_not_parsed() {
        let mut s = LineSplitter::default();
        let long = vec![b'x'; MAX_AGENT_MESSAGE_BYTES + 10];
        let mut events = s.push(&long);
        events.extend(s.push(b"\nnot json\n\xff\xfe\n"));
        assert_eq!(events.len(), 3);
        assert!(events.iter().all(|e| matches!(e, ChannelEvent::Invalid(_))));
    }

    #[tokio::test]
    async fn channel_reads_messages_then_reports_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let writer = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            conn.write_all(b"{\"event\":\"started\",\"task_id\":\"a\"}\n")
                .unwrap();
        });
        let p = path.clone();
        let mut channel = tokio::task::spawn_blocking(move || {
            AgentChannel::connect(
                "pyti-vmtest-chan",
                &p,
                Instant::now() + Duration::from_secs(5),
            )
        })
        .await
        .unwrap()
        .unwrap();
        writer.join().unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        assert_eq!(
            channel.next_before(deadline).await,
            Some(ChannelEvent::Message(AgentMessage::Started {
                task_id: "a".into()
            }))
        );
        assert_eq!(
            channel.next_before(deadline).await,
            Some(ChannelEvent::Closed)
        );
    }
}
