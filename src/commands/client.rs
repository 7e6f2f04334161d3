//! `pyti submit | status | results | cancel | log | compare`: talking to a master over JSON-RPC.

use super::package_arg::package_spec;
use super::report::{self, JobResults};
use crate::cli::{
    CancelArgs, CompareArgs, LogArgs, MasterConnection, ResultsArgs, StatusArgs, SubmitArgs,
};
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use jsonrpsee::http_client::HttpClient;
use pyti_wire::client::{http_client, ws_client};
use pyti_wire::job::{
    CompareRequest, Event, EventFilter, Job, JobFilter, JobId, JobSpec, TaskState,
    TASK_LOG_PAGE_LINES,
};
use pyti_wire::rpc::{codes, PytiApiClient};
use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

/// `submit --wait`: how many times in a row following a job may fail (the master unreachable,
/// its event stream cut) before the command gives up, and the pause between two tries: about
/// a minute, long enough for a master to restart.
const FOLLOW_TRIES: u32 = 30;
const FOLLOW_PAUSE: Duration = Duration::from_secs(2);

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

/// A job or task id given on the command line; `listed_by` is the command that lists such ids.
fn parse_id(text: &str, what: &str, listed_by: &str) -> anyhow::Result<i64> {
    text.parse()
        .with_context(|| format!("`{text}` is not a {what} id (a number, see `{listed_by}`)"))
}

fn parse_job(job: &str) -> anyhow::Result<JobId> {
    parse_id(job, "job", "pyti status")
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
        if !args.wait {
            return Ok(ExitCode::SUCCESS);
        }
        follow(&args.connection, &client, receipt.job_id).await?;
        let results = job_results(&client, receipt.job_id).await?;
        println!("{}", report::summary_table(&results));
        Ok(ExitCode::from(results.exit_code()))
    })
}

/// Follows `job_id` until it is done, showing each task's state changes above a spinner.
///
/// Each subscription reads the job once it is open, then shows its tasks' states as they
/// change. One that ends before the job is done (the master stopped, or this client fell
/// behind) or cannot be opened is opened again after [`FOLLOW_PAUSE`], and the job read again,
/// so a change in between is never missed, only shown late. Gives up after [`FOLLOW_TRIES`]
/// failures in a row, and at once when the master refuses for a reason that asking again
/// cannot change ([`is_final_refusal`]): the token was just accepted for `submit_job`, so it
/// was revoked meanwhile, or the master was replaced by one that does not know the job.
async fn follow(
    connection: &MasterConnection,
    client: &HttpClient,
    job_id: JobId,
) -> anyhow::Result<()> {
    let bar = ProgressBar::new_spinner().with_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("static template"),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    let mut shown: HashMap<i64, (String, TaskState)> = HashMap::new();
    let mut failures = 0;
    let result = loop {
        let mut final_refusal = false;
        let outcome = async {
            // Subscribed before the job is read: a change in between arrives as an event.
            let ws = ws_client(&connection.master, connection.token.as_deref()).await?;
            let mut events = ws
                .subscribe_events(EventFilter {
                    job_id: Some(job_id),
                })
                .await
                .inspect_err(|e| final_refusal = is_final_refusal(e))
                .call_context(|| format!("following job {job_id}"))?;
            let job = client
                .get_job(job_id)
                .await
                .inspect_err(|e| final_refusal = is_final_refusal(e))
                .call_context(|| format!("reading job {job_id}"))?;
            show_job(&bar, &mut shown, &job);
            while let Some(event) = events.next().await {
                match event.context("reading the master's events")? {
                    Event::TaskChanged {
                        task_id,
                        attempt,
                        state,
                        ..
                    } => {
                        let recipe = shown.get(&task_id).map(|(r, _)| r.clone());
                        let recipe = recipe.unwrap_or_else(|| "?".into());
                        show(
                            &bar,
                            &mut shown,
                            job_id,
                            task_id,
                            &recipe,
                            Some(attempt),
                            state,
                        );
                    }
                    Event::End { reason } => return Ok(reason),
                    Event::JobSubmitted { .. } => {}
                }
            }
            Ok::<_, anyhow::Error>("the master closed the event stream".to_string())
        }
        .await;
        let why = match outcome {
            Ok(reason) => {
                failures = 0;
                match client.get_job(job_id).await {
                    Ok(job) if job.is_done() => {
                        show_job(&bar, &mut shown, &job);
                        break Ok(());
                    }
                    // Not done, or the master is gone (the reason says why); the next
                    // subscription reads the job again, or fails with what went wrong.
                    Ok(_) | Err(_) => reason,
                }
            }
            Err(e) if final_refusal => break Err(e),
            Err(e) => format!("{e:#}"),
        };
        failures += 1;
        if failures >= FOLLOW_TRIES {
            break Err(anyhow::anyhow!(
                "gave up following job {job_id} after {FOLLOW_TRIES} tries ({why}); \
                 `pyti status {job_id}` shows where it is"
            ));
        }
        super::say(&bar, format!("job {job_id}: {why}; following it again"));
        tokio::time::sleep(FOLLOW_PAUSE).await;
    };
    bar.finish_and_clear();
    result
}

/// Whether `e` is a refusal that asking again cannot change: the token is not (or no longer)
/// accepted, its role may not read, or the master does not know the job.
fn is_final_refusal(e: &jsonrpsee::core::ClientError) -> bool {
    matches!(e, jsonrpsee::core::ClientError::Call(refusal)
        if [codes::UNAUTHENTICATED, codes::FORBIDDEN, codes::NOT_FOUND].contains(&refusal.code()))
}

/// Shows the state of each of `job`'s tasks that changed since it was last shown.
fn show_job(bar: &ProgressBar, shown: &mut HashMap<i64, (String, TaskState)>, job: &Job) {
    for task in &job.tasks {
        show(bar, shown, job.id, task.id, &task.recipe, None, task.state);
    }
}

/// Shows a task's state when it differs from the one last shown, and the job's tally on the
/// spinner.
fn show(
    bar: &ProgressBar,
    shown: &mut HashMap<i64, (String, TaskState)>,
    job_id: JobId,
    task_id: i64,
    recipe: &str,
    attempt: Option<u32>,
    state: TaskState,
) {
    if shown.get(&task_id).is_some_and(|(_, s)| *s == state) {
        return;
    }
    let attempt = attempt
        .map(|a| format!(", attempt {a}"))
        .unwrap_or_default();
    super::say(bar, format!("task {task_id} ({recipe}{attempt}): {state}"));
    shown.insert(task_id, (recipe.to_string(), state));
    let done = shown.values().filter(|(_, s)| s.is_terminal()).count();
    bar.set_message(format!(
        "job {job_id}: {done} of {} task(s) done",
        shown.len()
    ));
}

pub fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let since_ms = args
        .since
        .as_deref()
        .map(|text| parse_since(text, chrono::Utc::now()))
        .transpose()?;
    let before = args
        .before
        .as_deref()
        .map(|text| parse_id(text, "job", "pyti status"))
        .transpose()?;
    runtime()?.block_on(async {
        let client = connect(&args.connection)?;
        if let Some(job) = args.job {
            let job_id = parse_job(&job)?;
            if args.json {
                // The job and its tasks' states: no need for every task's raw data.
                let job = client
                    .get_job(job_id)
                    .await
                    .call_context(|| format!("reading job {job_id}"))?;
                println!("{}", serde_json::to_string_pretty(&job)?);
                return Ok(ExitCode::SUCCESS);
            }
            let results = job_results(&client, job_id).await?;
            println!(
                "job {}: {} ({})",
                results.job.id, results.job.package, results.job.trigger
            );
            println!("{}", report::summary_table(&results));
            return Ok(ExitCode::SUCCESS);
        }
        let filter = JobFilter {
            package: args.package,
            recipe: args.recipe,
            status: args.status,
            submitter: args.submitter,
            since_ms,
            before,
            limit: Some(args.limit),
        };
        let jobs = client
            .list_jobs(filter)
            .await
            .call_context(|| format!("listing jobs on {}", args.connection.master))?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&jobs)?);
            return Ok(ExitCode::SUCCESS);
        }
        if jobs.is_empty() {
            println!("no jobs match");
            return Ok(ExitCode::SUCCESS);
        }
        let mut table = super::new_table();
        table.set_header([
            "job",
            "package",
            "submitter",
            "priority",
            "created",
            "tasks",
        ]);
        for job in &jobs {
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
        if let (true, Some(oldest)) = (jobs.len() == args.limit as usize, jobs.last()) {
            println!(
                "older jobs may follow: the same command with --before {}",
                oldest.id
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `--since`: a date (`2026-11-20`, midnight UTC), a UTC time (`2026-11-20 14:00[:05]`, or
/// RFC 3339 with its offset) or an age before `now` (`30m`, `12h`, `7d`), as Unix milliseconds.
fn parse_since(text: &str, now: chrono::DateTime<chrono::Utc>) -> anyhow::Result<i64> {
    use chrono::{NaiveDate, NaiveDateTime, NaiveTime, TimeDelta};
    let text = text.trim();
    let age = text
        .strip_suffix('m')
        .map(|n| (n, 60))
        .or_else(|| text.strip_suffix('h').map(|n| (n, 3600)))
        .or_else(|| text.strip_suffix('d').map(|n| (n, 86_400)));
    if let Some((n, unit)) = age {
        if let Some(age) = n
            .parse::<i64>()
            .ok()
            .and_then(|n| n.checked_mul(unit))
            .and_then(TimeDelta::try_seconds)
        {
            return Ok((now - age).timestamp_millis());
        }
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_millis());
    }
    for format in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(t.and_utc().timestamp_millis());
        }
    }
    if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(day.and_time(NaiveTime::MIN).and_utc().timestamp_millis());
    }
    anyhow::bail!(
        "--since `{text}` is not a date (2026-11-20), a UTC time (2026-11-20 14:00) or an age (30m, 12h, 7d)"
    )
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

/// Pages of a task's log `pyti log` reads at most: 100,000 lines, five times the most a master
/// keeps (100 attempts of 200 lines).
const MAX_LOG_PAGES: u32 = 100;

pub fn log(args: LogArgs) -> anyhow::Result<ExitCode> {
    let task_id = parse_id(&args.task, "task", "pyti status JOB")?;
    runtime()?.block_on(async {
        let client = connect(&args.connection)?;
        // Page by page until a short page, each from the line after the last one read.
        let mut entries = Vec::new();
        for pages in 1.. {
            if pages > MAX_LOG_PAGES {
                anyhow::bail!(
                    "task {task_id}'s log is longer than {MAX_LOG_PAGES} pages, more than a \
                     master keeps; is {} a pyti master?",
                    args.connection.master
                );
            }
            let page = client
                .task_log(task_id, Some(entries.len() as u32))
                .await
                .call_context(|| format!("reading task {task_id}'s log"))?;
            let last = page.len() < TASK_LOG_PAGE_LINES as usize;
            entries.extend(page);
            if last {
                break;
            }
        }
        if args.json {
            println!("{}", serde_json::to_string_pretty(&entries)?);
            return Ok(ExitCode::SUCCESS);
        }
        if entries.is_empty() {
            println!("task {task_id} has no events yet: it has not been leased to a slave");
            return Ok(ExitCode::SUCCESS);
        }
        let mut table = super::new_table();
        table.set_header(["time (UTC)", "attempt", "phase", "message"]);
        for entry in entries {
            table.add_row([
                super::format_ms(entry.at_ms),
                entry.attempt.to_string(),
                entry.phase,
                entry.message,
            ]);
        }
        println!("{table}");
        Ok(ExitCode::SUCCESS)
    })
}

pub fn compare(args: CompareArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let client = connect(&args.connection)?;
        let filtered = !args.recipes.is_empty();
        let comparison = client
            .compare(CompareRequest {
                package: args.package.clone(),
                recipes: args.recipes,
                limit: Some(args.limit),
            })
            .await
            .call_context(|| format!("comparing `{}`", args.package))?;
        if comparison.versions.is_empty() {
            let on = if filtered { " on these recipes" } else { "" };
            anyhow::bail!(
                "the master has no results for `{}`{on}; `pyti status` lists its jobs",
                args.package
            );
        }
        if args.json {
            println!("{}", serde_json::to_string_pretty(&comparison)?);
        } else {
            println!("{}", comparison.package);
            println!("{}", report::compare_table(&comparison));
            if comparison.older_versions > 0 {
                println!(
                    "{} older version(s) not shown (--limit shows more)",
                    comparison.older_versions
                );
            }
            if comparison.regressions.is_empty() {
                println!("no regressions");
            }
            for r in &comparison.regressions {
                println!(
                    "regression on {}: {} {} -> {} {}",
                    r.recipe, r.from_version, r.from, r.to_version, r.to
                );
            }
        }
        Ok(ExitCode::from(u8::from(!comparison.regressions.is_empty())))
    })
}

#[cfg(test)]
mod tests {
    use super::parse_since;

    #[test]
    fn since_takes_dates_utc_times_and_ages() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-23T12:00:00Z")
            .unwrap()
            .to_utc();
        let ms = |t: &str| {
            chrono::DateTime::parse_from_rfc3339(t)
                .unwrap()
                .timestamp_millis()
        };
        for (text, expected) in [
            ("2026-11-20", "2026-11-20T00:00:00Z"),
            ("2026-11-20 14:00", "2026-11-20T14:00:00Z"),
            ("2026-11-20T14:00:05", "2026-11-20T14:00:05Z"),
            ("2026-11-20T14:00:00+02:00", "2026-11-20T12:00:00Z"),
            ("30m", "2026-11-23T11:30:00Z"),
            ("12h", "2026-11-23T00:00:00Z"),
            (" 7d ", "2026-11-16T12:00:00Z"),
        ] {
            assert_eq!(parse_since(text, now).unwrap(), ms(expected), "{text}");
        }
        for bad in [
            "yesterday",
            "7w",
            "-",
            "2026-13-01",
            "99999999999999999d",
            "",
        ] {
            let e = parse_since(bad, now).unwrap_err().to_string();
            assert!(e.contains("is not a date"), "{bad}: {e}");
        }
    }
}
