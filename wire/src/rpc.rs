//! The JSON-RPC API trait shared by the master and its clients.
//!
//! `#[rpc(server, client)]` generates `PytiApiServer` (implemented by the master) and
//! `PytiApiClient` (an extension trait on every jsonrpsee client: the CLI and the slave use it over
//! HTTP or WebSocket). Every call carries a bearer token in the `Authorization` header; each method
//! says which roles may call it. Subscriptions need a WebSocket client.
//!
//! Methods by audience:
//! - submitters: [`submit_job`](PytiApiClient::submit_job), [`cancel_job`](PytiApiClient::cancel_job);
//! - slaves: `register`, `heartbeat`, `claim`, `report_progress`, `report_result`;
//! - readers: `get_job`, `list_jobs`, `get_task`, `task_log`, `compare`, `subscribe_events`;
//! - anyone: `rpc.discover` (the OpenRPC document).

use crate::job::{
    CancelReceipt, ClaimRequest, ClaimedTask, CompareRequest, Comparison, Event, EventFilter,
    HeartbeatReply, Job, JobFilter, JobId, JobSpec, LogEntry, ProgressReport, RegistrationReply,
    ReportReceipt, ResultReport, SlaveRegistration, SubmitReceipt, Task, TaskId,
};
use jsonrpsee::core::SubscriptionResult;
use jsonrpsee::proc_macros::rpc;
use jsonrpsee::types::ErrorObjectOwned;

/// Result of a JSON-RPC method.
pub type RpcResult<T> = Result<T, ErrorObjectOwned>;

/// JSON-RPC error codes the master uses (besides the standard ones), so clients can react to
/// the kind of failure rather than parse messages.
pub mod codes {
    /// No or unknown bearer token.
    pub const UNAUTHENTICATED: i32 = -32001;
    /// The token's role may not call this method.
    pub const FORBIDDEN: i32 = -32003;
    /// A field of the request is invalid; `data` is `{"field": "..."}`.
    pub const INVALID_FIELD: i32 = -32602;
    /// The job, task or slave does not exist.
    pub const NOT_FOUND: i32 = -32004;
    /// The lease is not (or no longer) held: the attempt was requeued, cancelled or reported.
    pub const STALE_LEASE: i32 = -32009;
    /// The report conflicts with what is already recorded for that attempt.
    pub const CONFLICT: i32 = -32010;
    /// The master's database failed; retry later.
    pub const STORE: i32 = -32050;
}

/// The master's API.
#[rpc(server, client)]
pub trait PytiApi {
    /// Queue a job: one task per recipe. Roles: submitter, admin.
    #[method(name = "submit_job", with_extensions)]
    async fn submit_job(&self, spec: JobSpec) -> RpcResult<SubmitReceipt>;

    /// Cancel a job: queued tasks at once, running ones through their slaves. Roles: submitter
    /// (own jobs), admin.
    #[method(name = "cancel_job", with_extensions)]
    async fn cancel_job(&self, job_id: JobId) -> RpcResult<CancelReceipt>;

    /// Announce a slave's recipes and slots, once per run of the slave: leases still held under
    /// its name (an earlier run that died) are given up and their tasks requeued. Roles: slave,
    /// admin.
    #[method(name = "register", with_extensions)]
    async fn register(&self, registration: SlaveRegistration) -> RpcResult<RegistrationReply>;

    /// Renew the leases of the tasks the slave still holds (`held`: claimed and not yet
    /// reported). Leases under its name it does not list are not renewed, so a task whose claim
    /// reply was lost goes back to the queue when its lease ends; listed tasks no longer leased
    /// to it come back in the reply's `cancel`. Without `held` every lease under its name is
    /// renewed. The reply lists tasks to stop. Roles: slave, admin.
    #[method(name = "heartbeat", with_extensions)]
    async fn heartbeat(
        &self,
        slave: String,
        held: Option<Vec<TaskId>>,
    ) -> RpcResult<HeartbeatReply>;

    /// Long-poll for a task of a recipe the slave registered; `null` when none came in time.
    /// Roles: slave, admin.
    #[method(name = "claim", with_extensions)]
    async fn claim(&self, request: ClaimRequest) -> RpcResult<Option<ClaimedTask>>;

    /// A phase event for a leased task. Roles: slave, admin.
    #[method(name = "report_progress", with_extensions)]
    async fn report_progress(&self, report: ProgressReport) -> RpcResult<()>;

    /// The raw-data API: how an attempt ended. Idempotent per attempt. Roles: slave, admin.
    #[method(name = "report_result", with_extensions)]
    async fn report_result(&self, report: ResultReport) -> RpcResult<ReportReceipt>;

    /// A job with its tasks. Roles: reader, submitter, admin.
    #[method(name = "get_job", with_extensions)]
    async fn get_job(&self, job_id: JobId) -> RpcResult<Job>;

    /// Jobs matching a filter, newest first. Roles: reader, submitter, admin.
    #[method(name = "list_jobs", with_extensions)]
    async fn list_jobs(&self, filter: JobFilter) -> RpcResult<Vec<Job>>;

    /// A task with every attempt and its raw data. Roles: reader, submitter, admin.
    #[method(name = "get_task", with_extensions)]
    async fn get_task(&self, task_id: TaskId) -> RpcResult<Task>;

    /// A task's progress events and state changes, oldest first: at most
    /// [`TASK_LOG_PAGE_LINES`](crate::job::TASK_LOG_PAGE_LINES) lines from line `from_line`
    /// (0-based, default 0). A shorter page is the last. Roles: reader, submitter, admin.
    #[method(name = "task_log", with_extensions)]
    async fn task_log(&self, task_id: TaskId, from_line: Option<u32>) -> RpcResult<Vec<LogEntry>>;

    /// A package's verdicts across versions and recipes, and which recipes regressed.
    /// Roles: reader, submitter, admin.
    #[method(name = "compare", with_extensions)]
    async fn compare(&self, request: CompareRequest) -> RpcResult<Comparison>;

    /// Job and task state changes (WebSocket only). Always ends with [`Event::End`].
    /// Roles: reader, submitter, admin.
    #[subscription(name = "subscribe_events" => "event", unsubscribe = "unsubscribe_events", item = Event, with_extensions)]
    async fn subscribe_events(&self, filter: EventFilter) -> SubscriptionResult;

    /// The OpenRPC document describing this API. No token needed.
    #[method(name = "rpc.discover")]
    async fn discover(&self) -> RpcResult<serde_json::Value>;
}
