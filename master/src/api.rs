//! The `PytiApiServer` implementation: each method checks the caller's role, then delegates to
//! the store. One file per audience: [`submitters`], [`slaves`], [`readers`].

mod readers;
mod slaves;
mod submitters;

use crate::error::MasterError;
use crate::openrpc;
use crate::store::Store;
use jsonrpsee::core::{async_trait, SubscriptionResult};
use jsonrpsee::types::ErrorObjectOwned;
use jsonrpsee::{Extensions, PendingSubscriptionSink};
use pyti_wire::job::{
    CancelReceipt, ClaimRequest, ClaimedTask, CompareRequest, Comparison, EventFilter,
    HeartbeatReply, Job, JobFilter, JobId, JobSpec, LogEntry, ProgressReport, RegistrationReply,
    ReportReceipt, ResultReport, SlaveRegistration, SubmitReceipt, Task, TaskId,
};
use pyti_wire::rpc::{codes, PytiApiServer, RpcResult};
use std::sync::Arc;

/// The API as served: a handle on the store.
#[derive(Clone)]
pub(crate) struct Api {
    pub store: Arc<Store>,
}

/// The JSON-RPC error for a master error (store failures are logged, not detailed).
pub(crate) fn rpc_error(e: MasterError) -> ErrorObjectOwned {
    let message = e.to_string();
    match e {
        MasterError::InvalidField { field, .. } => ErrorObjectOwned::owned(
            codes::INVALID_FIELD,
            message,
            Some(serde_json::json!({ "field": field })),
        ),
        MasterError::NotFound { .. } => {
            ErrorObjectOwned::owned(codes::NOT_FOUND, message, None::<()>)
        }
        MasterError::StaleLease { .. } => {
            ErrorObjectOwned::owned(codes::STALE_LEASE, message, None::<()>)
        }
        MasterError::Conflict(_) => ErrorObjectOwned::owned(codes::CONFLICT, message, None::<()>),
        MasterError::Unauthenticated => {
            ErrorObjectOwned::owned(codes::UNAUTHENTICATED, message, None::<()>)
        }
        MasterError::Forbidden { .. } => {
            ErrorObjectOwned::owned(codes::FORBIDDEN, message, None::<()>)
        }
        other => {
            tracing::error!(error = %other, "request failed");
            ErrorObjectOwned::owned(
                codes::STORE,
                "the master could not complete the request; retry later (details in the master's log)",
                None::<()>,
            )
        }
    }
}

#[async_trait]
impl PytiApiServer for Api {
    async fn submit_job(&self, ext: &Extensions, spec: JobSpec) -> RpcResult<SubmitReceipt> {
        submitters::submit_job(self, ext, spec)
            .await
            .map_err(rpc_error)
    }

    async fn cancel_job(&self, ext: &Extensions, job_id: JobId) -> RpcResult<CancelReceipt> {
        submitters::cancel_job(self, ext, job_id)
            .await
            .map_err(rpc_error)
    }

    async fn register(
        &self,
        ext: &Extensions,
        registration: SlaveRegistration,
    ) -> RpcResult<RegistrationReply> {
        slaves::register(self, ext, registration)
            .await
            .map_err(rpc_error)
    }

    async fn heartbeat(
        &self,
        ext: &Extensions,
        slave: String,
        held: Option<Vec<TaskId>>,
    ) -> RpcResult<HeartbeatReply> {
        slaves::heartbeat(self, ext, slave, held)
            .await
            .map_err(rpc_error)
    }

    async fn claim(
        &self,
        ext: &Extensions,
        request: ClaimRequest,
    ) -> RpcResult<Option<ClaimedTask>> {
        slaves::claim(self, ext, request).await.map_err(rpc_error)
    }

    async fn report_progress(&self, ext: &Extensions, report: ProgressReport) -> RpcResult<()> {
        slaves::report_progress(self, ext, report)
            .await
            .map_err(rpc_error)
    }

    async fn report_result(
        &self,
        ext: &Extensions,
        report: ResultReport,
    ) -> RpcResult<ReportReceipt> {
        slaves::report_result(self, ext, report)
            .await
            .map_err(rpc_error)
    }

    async fn get_job(&self, ext: &Extensions, job_id: JobId) -> RpcResult<Job> {
        readers::get_job(self, ext, job_id).await.map_err(rpc_error)
    }

    async fn list_jobs(&self, ext: &Extensions, filter: JobFilter) -> RpcResult<Vec<Job>> {
        readers::list_jobs(self, ext, filter)
            .await
            .map_err(rpc_error)
    }

    async fn get_task(&self, ext: &Extensions, task_id: TaskId) -> RpcResult<Task> {
        readers::get_task(self, ext, task_id)
            .await
            .map_err(rpc_error)
    }

    async fn task_log(
        &self,
        ext: &Extensions,
        task_id: TaskId,
        from_line: Option<u32>,
    ) -> RpcResult<Vec<LogEntry>> {
        readers::task_log(self, ext, task_id, from_line.unwrap_or(0))
            .await
            .map_err(rpc_error)
    }

    async fn compare(&self, ext: &Extensions, request: CompareRequest) -> RpcResult<Comparison> {
        readers::compare(self, ext, request)
            .await
            .map_err(rpc_error)
    }

    async fn subscribe_events(
        &self,
        pending: PendingSubscriptionSink,
        ext: &Extensions,
        filter: EventFilter,
    ) -> SubscriptionResult {
        readers::subscribe_events(self, pending, ext, filter).await
    }

    async fn discover(&self) -> RpcResult<serde_json::Value> {
        Ok(openrpc::document())
    }
}
