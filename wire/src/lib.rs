//! The contract every pyti component agrees on, and nothing else.
//!
//! pyti is split by audience: the master queues jobs, slaves run tasks in disposable VMs, an agent
//! inside each guest runs a recipe's steps. They meet only through the types in this crate, so a
//! change here is a change of protocol.
//!
//! # Layout
//! - [`recipe`]: the per-distribution recipe files (`recipes/*.toml`): which guest, what VM
//!   resources, which interpreter, the `prepare` steps and the task `steps`, with validation that
//!   reports every mistake as `file:line:col: message`.
//! - [`template`]: the `{placeholder}` command templates used by recipe steps.
//! - [`guest_task`]: `task.json`, what the slave puts on the I/O disk for the agent.
//! - [`raw_data`]: `result.json`, what the agent writes back (per-step exit code, bounded output,
//!   times, RSS); the payload of the master's raw-data API. Untrusted: validated with bounds.
//! - [`agent_protocol`]: the line messages the agent sends to the host over its virtio-serial
//!   channel ("ready", "done") so the host never waits for a power-off.
//! - [`io_layout`]: names on the I/O disk (label, file and directory names) shared by the
//!   diskhandler, the slave and the agent.
//! - [`limits`]: every size and time bound, in one place, with the reason for each number.
//! - [`client`] (feature `rpc`): JSON-RPC clients for a master, with the bearer token set.
//! - [`job`] and [`rpc`] (feature `rpc`): jobs, tasks and the JSON-RPC API trait; its
//!   `#[rpc(server, client)]` definition generates both the master's server and all clients.
pub mod agent_protocol;
#[cfg(feature = "rpc")]
pub mod client;
pub mod guest_task;
pub mod io_layout;
pub mod job;
pub mod limits;
pub mod raw_data;
pub mod recipe;
mod recipe_parse;
pub mod result_region;
#[cfg(feature = "rpc")]
pub mod rpc;
pub mod template;
