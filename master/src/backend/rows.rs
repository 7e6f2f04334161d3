//! Rows as read from the database, and their conversion to API types.

use crate::error::MasterError;
use crate::state;
use crate::store::Change;
use pyti_wire::job::{PackageSpec, Task, TaskState};

/// A `tasks` row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct TaskRow {
    pub id: i64,
    pub job_id: i64,
    pub recipe: String,
    pub snapshot_id: i64,
    pub submitter: String,
    pub priority: i64,
    pub state: String,
    pub verdict: Option<String>,
    pub attempt: i64,
    pub lease_id: Option<String>,
    pub lease_slave: Option<String>,
    pub lease_expires_ms: Option<i64>,
    pub cancel_requested: i64,
    pub created_ms: i64,
    /// When the row last changed state; while the task is leased, when the lease was granted
    /// (heartbeats and a cancellation request leave it alone).
    pub updated_ms: i64,
}

impl TaskRow {
    /// The row's state, checked.
    pub fn state(&self) -> Result<TaskState, MasterError> {
        state::from_db(&self.state, self.verdict.as_deref()).ok_or_else(|| {
            MasterError::Corrupt(format!(
                "task {} has state `{}` verdict {:?}",
                self.id, self.state, self.verdict
            ))
        })
    }

    /// The API form (without attempts).
    pub fn to_task(&self, package: PackageSpec) -> Result<Task, MasterError> {
        Ok(Task {
            id: self.id,
            job_id: self.job_id,
            recipe: self.recipe.clone(),
            package,
            submitter: self.submitter.clone(),
            priority: self.priority as u8,
            state: self.state()?,
            attempt: self.attempt as u32,
            created_at_ms: self.created_ms,
            updated_at_ms: self.updated_ms,
            attempts: Vec::new(),
        })
    }
}

/// A `jobs` row without the upload.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct JobRow {
    pub id: i64,
    pub package_spec: String,
    pub submitter: String,
    pub priority: i64,
    pub trigger_label: String,
    pub created_ms: i64,
}

impl JobRow {
    /// The stored package spec.
    pub fn package(&self) -> Result<PackageSpec, MasterError> {
        serde_json::from_str(&self.package_spec)
            .map_err(|e| MasterError::Corrupt(format!("job {} package spec: {e}", self.id)))
    }
}

/// An `attempts` row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct AttemptRow {
    pub attempt: i64,
    pub slave: String,
    pub leased_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub outcome: Option<String>,
    pub reason: Option<String>,
    pub report_sha256: Option<String>,
    pub raw_result: Option<String>,
}

/// A task picked for a claim, with its job's package spec. Only whether the job has an upload
/// is read here: its bytes (up to megabytes) are read after the claim commits, outside the
/// transaction that holds the lanes and slaves.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct PickedRow {
    #[sqlx(flatten)]
    pub task: TaskRow,
    pub package_spec: String,
    pub has_upload: bool,
}

/// What a claim took.
pub(crate) struct Claimed {
    pub picked: PickedRow,
    pub change: Change,
}
