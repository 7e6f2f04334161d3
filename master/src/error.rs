//! The master's error type: one enum, messages that say what to do next.

use pyti_wire::job::TaskId;

/// Everything that can go wrong in the master.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error("database error: {0} (check that the database is reachable and not full)")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0} (is this database used by another pyti version?)")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("invalid database URL `{url}`: {reason} (use a file path, sqlite://PATH or postgres://USER:PASS@HOST/DB)")]
    DatabaseUrl { url: String, reason: String },
    #[error("field `{field}` is invalid: {reason}")]
    InvalidField { field: String, reason: String },
    #[error("{what} {id} does not exist")]
    NotFound { what: &'static str, id: String },
    #[error("task {task} attempt {attempt}: {reason}; drop this attempt and claim again")]
    StaleLease {
        task: TaskId,
        attempt: u32,
        reason: String,
    },
    #[error("{0}")]
    Conflict(String),
    #[error("cannot load recipes from {dir}: {reason}")]
    Recipes { dir: String, reason: String },
    #[error("missing or unknown bearer token: send `Authorization: Bearer <token>` (create one with `pyti master token add`)")]
    Unauthenticated,
    #[error("role `{role}` may not call `{method}`")]
    Forbidden { role: String, method: String },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("claiming failed: {0}; retry the claim")]
    Dispatch(String),
    #[error("stored data is corrupt: {0} (was the database edited by hand?)")]
    Corrupt(String),
}

impl MasterError {
    /// An invalid-field error for `field`.
    pub fn field(field: impl Into<String>, reason: impl Into<String>) -> MasterError {
        MasterError::InvalidField {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
