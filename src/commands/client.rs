//! `pyti submit | status | results | cancel`: talking to a master over JSON-RPC.

use super::package_arg::package_spec;
use super::report::{self, JobResults};
use crate::cli::{CancelArgs, MasterConnection, ResultsArgs, StatusArgs, SubmitArgs};
use anyhow::Context;
use jsonrpsee::http_client::HttpClient;
use pyti_wire::client::http_client;
use pyti_wire::job::{JobFilter, JobId, JobSpec};
use pyti_wire::rpc::PytiApiClient;
use std::process::ExitCode;
use std::time::Duration;

fn connect(connection: &MasterConnection) -> anyhow::Result<HttpClient> {
    Ok(http_client(
        &connection.master,
        connection.token.as_deref(),
        Duration::from_secs(60),
    )?)
}

/// Adds context to a failed call, showing the master's own message for refusals.
trait CallContext<T> {
    fn call_context(self, what: impl FnOnce() -> String) -> anyhow::Result<T>;
}

impl<T> CallContext<T> for Result<T, jsonrpsee::core::ClientError> {
    fn call_context(self, what: impl FnOnce() -> String) -> anyhow::Result<T> {
        self.map_err(|e| match e {
            jsonrpsee::core::ClientError::Call(refusal) => {
                anyhow::anyhow!("{}: the master refused: {}", what(), refusal.message())
            }
            other => anyhow::anyhow!("{}: {other}", what()),
        })
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn parse_job(job: &str) -> anyhow::Result<JobId> {
    job.parse()
        .with_context(|| format!("`{job}` is not a job id (a number, see `pyti status`)"))
}

/// Fetches a job and every task's full record.
pub async fn job_results(client: &impl PytiApiClient, job_id: JobId) -> anyhow::Result<JobResults> {
    let job = client
        .get_job(job_id)
        .await
        .call_context(|| format!("reading job {job_id}"))?;
    let mut tasks = Vec::with_capacity(job.tasks.len());
    for task in &job.tasks {
        tasks.push(
            client
                .get_task(task.id)
                .await
                .call_context(|| format!("reading task {}", task.id))?,
        );
    }
    Ok(JobResults { job, tasks })
}

pub fn submit(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let spec = JobSpec {
        package: package_spec(&args.package)?,
        recipes: args.recipes,
        submitter: None,
        priority: args.priority,
        trigger: args.label.unwrap_or_else(|| "cli".to_string()),
    };
    runtime()?.block_on(async {
        let client = connect(&args.connection)?;
        let receipt = client
            .submit_job(spec)
            .await
            .call_context(|| format!("submitting to {}", args.connection.master))?;
        println!(
            "job {} queued: {} task(s) ({})",
            receipt.job_id,
            receipt.task_ids.len(),
            receipt
                .task_ids
                .iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(ExitCode::SUCCESS)
    })
}

pub fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let client = connect(&args.connection)?;
        if let Some(job) = args.job {
            let results = job_results(&client, parse_job(&job)?).await?;
            println!(
                "job {}: {} ({})",
                results.job.id, results.job.package, results.job.trigger
            );
            println!("{}", report::summary_table(&results));
            return Ok(ExitCode::SUCCESS);
        }
        let jobs = client
            .list_jobs(JobFilter {
                limit: Some(20),
                ..JobFilter::default()
            })
            .await
            .call_context(|| format!("listing jobs on {}", args.connection.master))?;
        let mut table = super::new_table();
        table.set_header([
            "job",
            "package",
            "submitter",
            "priority",
            "created",
            "tasks",
        ]);
        for job in jobs {
            let states = job
                .tasks
                .iter()
                .map(|t| format!("{}: {}", t.recipe, t.state))
                .collect::<Vec<_>>()
                .join("\n");
            table.add_row([
                job.id.to_string(),
                job.package.to_string(),
                job.submitter.clone(),
                job.priority.to_string(),
                super::format_ms(job.created_at_ms),
                states,
            ]);
        }
        println!("{table}");
        Ok(ExitCode::SUCCESS)
    })
}

pub fn results(args: ResultsArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let client = connect(&args.connection)?;
        let results = job_results(&client, parse_job(&args.job)?).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&results)?);
        } else {
            println!("job {}: {}", results.job.id, results.job.package);
            println!("{}", report::summary_table(&results));
            for task in &results.tasks {
                print!("\n{}", report::step_details(task));
            }
        }
        Ok(ExitCode::from(results.exit_code()))
    })
}

pub fn cancel(args: CancelArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let client = connect(&args.connection)?;
        let receipt = client
            .cancel_job(parse_job(&args.job)?)
            .await
            .call_context(|| "cancelling".to_string())?;
        println!(
            "job {}: {} queued task(s) cancelled, {} running task(s) being stopped by their slave",
            args.job, receipt.cancelled, receipt.stopping
        );
        Ok(ExitCode::SUCCESS)
    })
}
