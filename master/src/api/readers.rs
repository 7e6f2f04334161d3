//! Readers: jobs, tasks, logs, comparisons and the live event stream.

use super::{rpc_error, Api};
use crate::auth::{require, roles};
use crate::error::MasterError;
use jsonrpsee::core::SubscriptionResult;
use jsonrpsee::{Extensions, PendingSubscriptionSink, SubscriptionSink};
use pyti_wire::job::{
    CompareRequest, Comparison, Event, EventFilter, Job, JobFilter, JobId, LogEntry, Task, TaskId,
};
use tokio::sync::broadcast::error::RecvError;

pub(super) async fn get_job(
    api: &Api,
    ext: &Extensions,
    job_id: JobId,
) -> Result<Job, MasterError> {
    require(ext, roles::READ, "get_job")?;
    api.store.get_job(job_id).await
}

pub(super) async fn list_jobs(
    api: &Api,
    ext: &Extensions,
    filter: JobFilter,
) -> Result<Vec<Job>, MasterError> {
    require(ext, roles::READ, "list_jobs")?;
    api.store.list_jobs(&filter).await
}

pub(super) async fn get_task(
    api: &Api,
    ext: &Extensions,
    task_id: TaskId,
) -> Result<Task, MasterError> {
    require(ext, roles::READ, "get_task")?;
    api.store.get_task(task_id).await
}

pub(super) async fn task_log(
    api: &Api,
    ext: &Extensions,
    task_id: TaskId,
    from_line: u32,
) -> Result<Vec<LogEntry>, MasterError> {
    require(ext, roles::READ, "task_log")?;
    api.store.task_log(task_id, from_line).await
}

pub(super) async fn compare(
    api: &Api,
    ext: &Extensions,
    request: CompareRequest,
) -> Result<Comparison, MasterError> {
    require(ext, roles::READ, "compare")?;
    api.store.compare(&request).await
}

/// Streams events until the watched job is done, the master stops, or the subscriber lags; the
/// last message is always [`Event::End`] (a subscription that just stops leaves clients waiting).
pub(super) async fn subscribe_events(
    api: &Api,
    pending: PendingSubscriptionSink,
    ext: &Extensions,
    filter: EventFilter,
) -> SubscriptionResult {
    if let Err(e) = require(ext, roles::READ, "subscribe_events") {
        pending.reject(rpc_error(e)).await;
        return Ok(());
    }
    // Counted from here until the final event is sent: shutdown waits for it.
    let _open = api.store.subscription_guard();
    // Subscribe before reading the job, so no change between the two is missed.
    let mut events = api.store.events().subscribe();
    if let Some(job_id) = filter.job_id {
        match api.store.get_job(job_id).await {
            Err(e) => {
                pending.reject(rpc_error(e)).await;
                return Ok(());
            }
            Ok(job) if job.is_done() => {
                let sink = pending.accept().await?;
                send(
                    &sink,
                    &Event::End {
                        reason: format!("job {job_id} is done"),
                    },
                )
                .await?;
                return Ok(());
            }
            Ok(_) => {}
        }
    }
    let sink = pending.accept().await?;
    let end = loop {
        tokio::select! {
            received = events.recv() => match received {
                Ok(event) => {
                    let Some(job_id) = filter.job_id else {
                        send(&sink, &event).await?;
                        continue;
                    };
                    let finished = match &event {
                        Event::JobSubmitted { job_id: j, .. } => { if *j != job_id { continue } false }
                        Event::TaskChanged { job_id: j, state, .. } => {
                            if *j != job_id { continue }
                            state.is_terminal()
                        }
                        Event::End { .. } => false,
                    };
                    send(&sink, &event).await?;
                    if finished && api.store.get_job(job_id).await.map(|j| j.is_done()).unwrap_or(false) {
                        break format!("job {job_id} is done");
                    }
                }
                Err(RecvError::Lagged(n)) => break format!("subscriber fell {n} events behind; subscribe again and re-read the job"),
                Err(RecvError::Closed) => break "the master is stopping".to_string(),
            },
            _ = api.store.stopped() => break "the master is stopping".to_string(),
            _ = sink.closed() => return Ok(()),
        }
    };
    send(&sink, &Event::End { reason: end }).await?;
    Ok(())
}

async fn send(sink: &SubscriptionSink, event: &Event) -> SubscriptionResult {
    let raw = serde_json::value::to_raw_value(event)?;
    sink.send(raw).await?;
    Ok(())
}
