//! Facts about the guest recorded in every result: agent version, kernel, interpreter, uptime.

use std::process::Command;

/// Longest interpreter version string kept (it is one line).
const MAX_VERSION_CHARS: usize = 200;

/// What the agent reports about its guest with every task.
#[derive(Debug, Clone)]
pub struct GuestInfo {
    pub agent_version: String,
    pub guest_kernel: String,
    pub interpreter_version: String,
}

impl GuestInfo {
    /// Collects the facts once at boot (`interpreter --version` costs ~0.3 s under TCG).
    pub fn collect(interpreter: &str) -> GuestInfo {
        let guest_kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|e| format!("unknown ({e})"));
        let interpreter_version = match Command::new(interpreter)
            .arg("--version")
            .env_clear()
            .output()
        {
            Ok(out) => {
                let text = if out.stdout.is_empty() {
                    out.stderr
                } else {
                    out.stdout
                };
                String::from_utf8_lossy(&text)
                    .trim()
                    .chars()
                    .take(MAX_VERSION_CHARS)
                    .collect()
            }
            Err(e) => format!("unknown ({interpreter}: {e})"),
        };
        GuestInfo {
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            guest_kernel: guest_kernel.chars().take(MAX_VERSION_CHARS).collect(),
            interpreter_version,
        }
    }
}

/// Seconds since the guest booted (`/proc/uptime`).
pub fn uptime_secs() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)
        .unwrap_or(0.0)
}
