//! Slaves: register, heartbeat, claim (long poll), report progress and results.

use super::Api;
use crate::auth::{require, roles};
use crate::config::MAX_CLAIM_WAIT_SECS;
use crate::error::MasterError;
use jsonrpsee::Extensions;
use pyti_wire::job::{
    ClaimRequest, ClaimedTask, HeartbeatReply, ProgressReport, RegistrationReply, ReportReceipt,
    ResultReport, SlaveRegistration,
};
use std::time::Duration;

pub(super) async fn register(
    api: &Api,
    ext: &Extensions,
    registration: SlaveRegistration,
) -> Result<RegistrationReply, MasterError> {
    require(ext, roles::SLAVE, "register")?;
    api.store.register(&registration).await
}

pub(super) async fn heartbeat(
    api: &Api,
    ext: &Extensions,
    slave: String,
    held: Option<Vec<pyti_wire::job::TaskId>>,
) -> Result<HeartbeatReply, MasterError> {
    require(ext, roles::SLAVE, "heartbeat")?;
    api.store.heartbeat(&slave, held.as_deref()).await
}

pub(super) async fn claim(
    api: &Api,
    ext: &Extensions,
    request: ClaimRequest,
) -> Result<Option<ClaimedTask>, MasterError> {
    require(ext, roles::SLAVE, "claim")?;
    let wait = Duration::from_secs(request.wait_secs.min(MAX_CLAIM_WAIT_SECS) as u64);
    api.store.claim(&request.slave, wait).await
}

pub(super) async fn report_progress(
    api: &Api,
    ext: &Extensions,
    report: ProgressReport,
) -> Result<(), MasterError> {
    require(ext, roles::SLAVE, "report_progress")?;
    api.store.report_progress(&report).await
}

pub(super) async fn report_result(
    api: &Api,
    ext: &Extensions,
    report: ResultReport,
) -> Result<ReportReceipt, MasterError> {
    require(ext, roles::SLAVE, "report_result")?;
    api.store.report_result(&report).await
}
