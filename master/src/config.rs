//! How a master is set up: where it listens, which database, which recipes, lease and retry rules.

use crate::clock::Clock;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Default port of `pyti master`.
pub const DEFAULT_PORT: u16 = 7420;
/// Default address of `pyti master` ([`DEFAULT_PORT`] on the loopback interface).
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7420";
/// Default master of the slave and the client: the address a default master listens on.
pub const DEFAULT_MASTER_URL: &str = "http://127.0.0.1:7420";
/// A lease lasts this long after the last heartbeat. Two minutes survive a slave's GC pause or a
/// slow disk without letting a dead slave's task sit for long.
pub const DEFAULT_LEASE_SECS: u64 = 120;
/// Longest pause between a slave's heartbeats (they come every quarter lease, at most this):
/// a cancelled job's running tasks learn of it by the next heartbeat.
pub const MAX_HEARTBEAT_SECS: u64 = 10;
/// Attempts per task before an infrastructure failure becomes the verdict `tmpfail`.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Largest JSON-RPC request: an upload of [`pyti_wire::job::MAX_UPLOAD_BYTES`] hex-encoded, or a
/// raw result of [`pyti_wire::limits::MAX_RESULT_FILE_BYTES`], plus JSON overhead.
pub const DEFAULT_MAX_REQUEST_BYTES: u32 = 40 * 1024 * 1024;
/// Longest a `claim` may wait: below the usual 60 s HTTP client timeout.
pub const MAX_CLAIM_WAIT_SECS: u32 = 30;
/// Database connections per master (SQLite readers; PostgreSQL connections).
pub const DEFAULT_DATABASE_CONNECTIONS: u32 = 16;
/// How often the master looks for expired leases.
pub const LEASE_SWEEP_MILLIS: u64 = 1000;

/// Everything [`crate::Master::open`] needs.
#[derive(Debug, Clone)]
pub struct MasterConfig {
    /// Address of the HTTP + WebSocket port (JSON-RPC at `/` and `/rpc`, `/health`, `/metrics`).
    pub listen: SocketAddr,
    /// A SQLite file path (or `sqlite://PATH`), or a `postgres://` URL.
    pub database_url: String,
    /// Directory of `*.toml` recipes; jobs may only name these.
    pub recipes_dir: PathBuf,
    /// Seconds a lease lasts after the last heartbeat.
    pub lease_secs: u64,
    /// Attempts per task before giving up with `tmpfail`.
    pub max_attempts: u32,
    /// Largest JSON-RPC request in bytes.
    pub max_request_bytes: u32,
    /// Database connections.
    pub database_connections: u32,
    /// The store's clock (tests use a manual one).
    pub clock: Clock,
}

impl Default for MasterConfig {
    fn default() -> Self {
        MasterConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            database_url: "pyti-master.sqlite".to_string(),
            recipes_dir: PathBuf::from("recipes"),
            lease_secs: DEFAULT_LEASE_SECS,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            database_connections: DEFAULT_DATABASE_CONNECTIONS,
            clock: Clock::System,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_address_port_and_url_agree() {
        let listen: SocketAddr = DEFAULT_LISTEN.parse().unwrap();
        assert_eq!(listen, MasterConfig::default().listen);
        assert_eq!(listen.port(), DEFAULT_PORT);
        assert_eq!(DEFAULT_MASTER_URL, format!("http://{listen}"));
    }
}
