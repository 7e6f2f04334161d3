//! The files a slot owns, all in its own directory `<state_dir>/pyti-<slave>-<slot>/`.

use std::path::{Path, PathBuf};

/// Paths of one slot's files. Crash recovery deletes exactly these, nothing else.
#[derive(Debug, Clone)]
pub struct SlotPaths {
    pub dir: PathBuf,
    /// Warm mode: overlay over the image's system disk; holds the warm snapshot.
    pub warm_overlay: PathBuf,
    /// Cold mode: overlay the prepare boot wrote; the clean base of every task.
    pub prepared_overlay: PathBuf,
    /// Cold mode: this task's throw-away overlay over `prepared_overlay`.
    pub task_overlay: PathBuf,
    /// The agent channel's unix socket (QEMU listens).
    pub agent_socket: PathBuf,
    /// The serial console, written by QEMU (recreated at each start).
    pub console_log: PathBuf,
}

impl SlotPaths {
    /// The paths of slot `name` under `state_dir`.
    pub fn new(state_dir: &Path, name: &str) -> SlotPaths {
        let dir = state_dir.join(name);
        SlotPaths {
            warm_overlay: dir.join("warm.qcow2"),
            prepared_overlay: dir.join("prepared.qcow2"),
            task_overlay: dir.join("task.qcow2"),
            agent_socket: dir.join("agent.sock"),
            console_log: dir.join("console.log"),
            dir,
        }
    }

    /// Every file the slot may have left behind.
    pub fn files(&self) -> [&Path; 5] {
        [
            &self.warm_overlay,
            &self.prepared_overlay,
            &self.task_overlay,
            &self.agent_socket,
            &self.console_log,
        ]
    }
}
