//! Submitters: queue and cancel jobs.

use super::Api;
use crate::auth::{require, roles};
use crate::error::MasterError;
use crate::tokens::Role;
use jsonrpsee::Extensions;
use pyti_wire::job::{CancelReceipt, JobId, JobSpec, SubmitReceipt};

pub(super) async fn submit_job(
    api: &Api,
    ext: &Extensions,
    spec: JobSpec,
) -> Result<SubmitReceipt, MasterError> {
    let caller = require(ext, roles::SUBMIT, "submit_job")?;
    api.store
        .submit(&spec, &caller.name, caller.role == Role::Admin)
        .await
}

pub(super) async fn cancel_job(
    api: &Api,
    ext: &Extensions,
    job_id: JobId,
) -> Result<CancelReceipt, MasterError> {
    let caller = require(ext, roles::SUBMIT, "cancel_job")?;
    let owner = (caller.role != Role::Admin).then_some(caller.name.as_str());
    api.store.cancel(job_id, owner).await
}
