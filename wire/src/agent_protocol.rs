//! Messages the agent sends the host, one JSON object per line, over a virtio-serial channel.
//!
//! The channel lets the host see "ready" and "done" the moment they happen instead of waiting for
//! the guest to power off or polling the I/O disk. The agent also echoes each line to the serial
//! console prefixed with [`CONSOLE_MARKER`], for people reading the console log.

use serde::{Deserialize, Serialize};

/// Name of the virtio-serial port (`/dev/virtio-ports/<name>` in the guest).
pub const CHANNEL_NAME: &str = "org.pyti.agent.0";
/// Prefix of the agent's lines on the serial console.
pub const CONSOLE_MARKER: &str = "PYTI-AGENT: ";

/// One message from the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case", deny_unknown_fields)]
pub enum AgentMessage {
    /// The agent started and ran the image's `prepare` steps; it now waits for an I/O disk.
    /// A warm snapshot is taken right after this message.
    Ready {
        agent_version: String,
        /// Whether every prepare step succeeded; if not, `detail` says which failed.
        prepared: bool,
        detail: String,
    },
    /// The agent found the I/O disk and started task `task_id`.
    Started { task_id: String },
    /// `result.json` for `task_id` is on the I/O disk, fsynced, and the disk is unmounted.
    Done { task_id: String },
    /// The agent could not run the task (no task.json, bad schema…); nothing to extract.
    Failed {
        task_id: Option<String>,
        detail: String,
    },
}

impl AgentMessage {
    /// Parses one line from the channel, refusing lines over the protocol bound.
    pub fn parse_line(line: &str) -> Result<AgentMessage, String> {
        if line.len() > crate::limits::MAX_AGENT_MESSAGE_BYTES {
            return Err(format!(
                "agent message of {} bytes exceeds the limit",
                line.len()
            ));
        }
        serde_json::from_str(line.trim()).map_err(|e| format!("bad agent message: {e}"))
    }
}
