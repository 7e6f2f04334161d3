//! pyti's master: a durable job queue with a JSON-RPC API that slaves claim tasks from.
//!
//! # Layout
//! - [`Master`] (`server.rs`): opens the store, serves JSON-RPC (HTTP + WebSocket) at `/` and
//!   `/rpc`, plus `GET /health` and `GET /metrics` (Prometheus text), on one port; sweeps expired
//!   leases in the background.
//! - [`store::Store`]: the queue over sqlx, SQLite (default, one file, WAL, one writer with
//!   `BEGIN IMMEDIATE`) or PostgreSQL (several masters may share one; claims lock rows with
//!   `FOR UPDATE SKIP LOCKED`). The SQL is written once in `backend/*.rs` and compiled for each
//!   database; migrations live in `migrations/sqlite` and `migrations/postgres`. Claims go through
//!   a batcher: every claim waiting while a batch is written is served by the next transaction.
//! - Dispatch (`backend/dispatch.rs`): a slave gets only tasks of recipes it registered, highest
//!   priority first, then round-robin over *lanes* (recipe × priority × submitter) so one
//!   submitter's 10,000 tasks do not starve another's 10; leases end when heartbeats stop and the
//!   task is requeued with attempt + 1 (every attempt is kept).
//! - [`state`]: the task state machine (queued → leased → running → finished | cancelled), the
//!   only rules for state changes; `backend/transition.rs` is the only code that writes them.
//! - [`verdict`]: pass/fail/error/timeout computed from the agent's raw data and the recipe.
//! - [`job_spec`]: validation of submitted jobs (errors name the field).
//! - [`tokens`] and `auth.rs`: bearer tokens with roles, stored hashed.
//! - `api/`: the `PytiApiServer` implementation, one file per audience (submitters, slaves,
//!   readers), plus the OpenRPC document (`openrpc.rs`) and metrics (`metrics.rs`).
//!
//! The API trait itself lives in `pyti_wire::rpc`, shared with every client.

#![allow(
    clippy::duplicate_mod,
    reason = "backend/*.rs is compiled once per database on purpose: the same SQL for SQLite and PostgreSQL"
)]

mod api;
mod auth;
mod backend;
pub mod clock;
pub mod config;
pub mod error;
pub mod events;
pub mod job_spec;
mod metrics;
mod openrpc;
pub mod recipes;
mod server;
pub mod state;
pub mod store;
pub mod tokens;
pub mod verdict;

pub use clock::Clock;
pub use config::MasterConfig;
pub use error::MasterError;
pub use server::Master;
pub use store::Store;
pub use tokens::Role;
