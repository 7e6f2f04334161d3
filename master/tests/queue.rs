//! The queue's stories, told against the store on SQLite and on the real PostgreSQL: a task's
//! life, lease expiry, retries, idempotent reports, fair share, cancellation, restarts.

mod common;

use common::{failing, job, passing, TestDb};
use pyti_master::{Clock, MasterError, Store};
use pyti_wire::job::{
    AttemptOutcome, CompareRequest, Comparison, JobFilter, PackageSpec, ProgressReport,
    ReportOutcome, ResultReport, SlaveRegistration, TaskState, Verdict, COMPARE_MAX_VERSIONS,
    TASK_LOG_PAGE_LINES,
};
use pyti_wire::limits::{MAX_RESULT_FILE_BYTES, MAX_STEP_OUTPUT_BYTES};
use sha2::Digest;
use std::collections::HashSet;

const START: i64 = 1_700_000_000_000;

async fn register(store: &Store, name: &str, recipes: &[&str], slots: u32) {
    store
        .register(&SlaveRegistration {
            name: name.into(),
            recipes: recipes.iter().map(|r| r.to_string()).collect(),
            slots,
        })
        .await
        .expect("register");
}

/// Submits a job of `name_version` for `recipes` at `priority` as `submitter` (no upload).
async fn submit(
    store: &Store,
    name_version: &str,
    recipes: &[&str],
    priority: u8,
    submitter: &str,
) -> pyti_wire::job::SubmitReceipt {
    store
        .submit(&job(name_version, recipes, priority), submitter, false)
        .await
        .expect("submit")
}

fn report(task: &pyti_wire::job::ClaimedTask, outcome: ReportOutcome) -> ResultReport {
    ResultReport {
        task_id: task.task_id,
        attempt: task.attempt,
        lease_id: task.lease_id.clone(),
        outcome,
    }
}

/// Reports `task` passed (every step succeeded).
async fn report_pass(store: &Store, task: &pyti_wire::job::ClaimedTask) {
    store
        .report_result(&report(
            task,
            ReportOutcome::Raw {
                result: passing(task.task_id, &task.recipe),
            },
        ))
        .await
        .unwrap();
}

/// A store on `db` (manual clock at `START`, 3 attempts) where `package` was submitted by alice
/// for debian-12 and its task is leased to slave `s` (one slot).
async fn one_leased_task(
    db: &TestDb,
    package: &str,
) -> (Clock, Store, pyti_wire::job::ClaimedTask) {
    let clock = Clock::manual(START);
    let store = db.store(&clock, 3).await;
    submit(&store, package, &["debian-12"], 5, "alice").await;
    register(&store, "s", &["debian-12"], 1).await;
    let task = store.try_claim("s").await.unwrap().unwrap();
    (clock, store, task)
}

fn infra(reason: &str) -> ReportOutcome {
    ReportOutcome::Infrastructure {
        reason: reason.into(),
    }
}

async fn a_task_goes_from_queued_to_finished_with_its_raw_data(db: &TestDb) {
    let clock = Clock::manual(START);
    let store = db.store(&clock, 3).await;
    let receipt = submit(
        &store,
        "six==1.16.0",
        &["debian-12", "other-distro"],
        5,
        "alice",
    )
    .await;
    assert_eq!(receipt.task_ids.len(), 2);
    let job_view = store.get_job(receipt.job_id).await.unwrap();
    assert!(job_view.tasks.iter().all(|t| t.state == TaskState::Queued));
    assert_eq!(job_view.submitter, "alice");

    register(&store, "slave-1", &["debian-12"], 4).await;
    let task = store.try_claim("slave-1").await.unwrap().expect("a task");
    assert_eq!(task.recipe.name, "debian-12");
    assert_eq!(task.attempt, 1);
    assert_eq!(
        store.get_task(task.task_id).await.unwrap().state,
        TaskState::Leased
    );
    // The slave only runs debian-12: the other task stays queued.
    assert!(store.try_claim("slave-1").await.unwrap().is_none());

    store
        .report_progress(&ProgressReport {
            task_id: task.task_id,
            attempt: 1,
            lease_id: task.lease_id.clone(),
            phase: "booting".into(),
            message: "cold boot".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        store.get_task(task.task_id).await.unwrap().state,
        TaskState::Running
    );

    clock.advance_ms(5_000);
    let r = store
        .report_result(&report(
            &task,
            ReportOutcome::Raw {
                result: passing(task.task_id, &task.recipe),
            },
        ))
        .await
        .unwrap();
    assert_eq!(r.state, TaskState::Finished(Verdict::Pass));
    assert!(!r.duplicate);

    let full = store.get_task(task.task_id).await.unwrap();
    assert_eq!(full.state, TaskState::Finished(Verdict::Pass));
    assert_eq!(full.attempts.len(), 1);
    let attempt = &full.attempts[0];
    assert_eq!(
        attempt.outcome,
        Some(AttemptOutcome::Verdict(Verdict::Pass))
    );
    assert_eq!(attempt.slave, "slave-1");
    assert_eq!(attempt.started_at_ms, Some(START));
    assert_eq!(attempt.finished_at_ms, Some(START + 5_000));
    assert_eq!(attempt.raw_result.as_ref().map(|r| r.steps.len()), Some(3));

    let log = store.task_log(task.task_id, 0).await.unwrap();
    let phases: Vec<&str> = log.iter().map(|l| l.phase.as_str()).collect();
    assert_eq!(phases, ["state", "state", "booting", "state"], "{log:?}");

    // Finished tasks never change again.
    let again = store.try_claim("slave-1").await.unwrap();
    assert!(again.is_none());
    store.close().await;
}

async fn a_failing_step_fails_the_task_and_is_not_retried(db: &TestDb) {
    let (_clock, store, task) = one_leased_task(db, "attrs==23.1.0").await;
    let r = store
        .report_result(&report(
            &task,
            ReportOutcome::Raw {
                result: failing(task.task_id, &task.recipe),
            },
        ))
        .await
        .unwrap();
    assert_eq!(r.state, TaskState::Finished(Verdict::Fail));
    assert!(
        store.try_claim("s").await.unwrap().is_none(),
        "a fail is not retried"
    );
    store.close().await;
}

async fn a_guest_timeout_or_a_package_error_ends_the_task_without_a_retry(db: &TestDb) {
    let clock = Clock::manual(START);
    let store = db.store(&clock, 3).await;
    submit(&store, "attrs==23.1.0", &["debian-12"], 5, "alice").await;
    submit(&store, "attrs==99.0.0", &["debian-12"], 5, "alice").await;
    register(&store, "s", &["debian-12"], 2).await;
    let hung = store.try_claim("s").await.unwrap().unwrap();
    let missing = store.try_claim("s").await.unwrap().unwrap();
    let r = store
        .report_result(&report(
            &hung,
            ReportOutcome::GuestTimeout {
                detail: "the guest did not finish within 120 s".into(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(r.state, TaskState::Finished(Verdict::Timeout));
    let r = store
        .report_result(&report(
            &missing,
            ReportOutcome::PackageError {
                reason: "no such release: attrs==99.0.0".into(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(r.state, TaskState::Finished(Verdict::Error));
    assert!(
        store.try_claim("s").await.unwrap().is_none(),
        "neither a timeout nor a package error is retried"
    );
    let task = store.get_task(missing.task_id).await.unwrap();
    assert_eq!(
        task.attempts[0].reason.as_deref(),
        Some("no such release: attrs==99.0.0"),
        "the reason is kept with the attempt"
    );
    store.close().await;
}

/// Raw data larger as JSON than an agent's result file can hold did not come from the agent:
/// every step's output within its bound, but control characters, which JSON writes in six
/// bytes each. The attempt is an error that says so, and the data is not kept (a read of the
/// task would be as large as the request limit); data just within the bound is kept whole.
async fn raw_data_larger_than_a_result_file_is_an_error_and_not_kept(db: &TestDb) {
    let clock = Clock::manual(START);
    let store = db.store(&clock, 3).await;
    submit(&store, "attrs==23.1.0", &["debian-12"], 5, "alice").await;
    submit(&store, "attrs==23.2.0", &["debian-12"], 5, "alice").await;
    register(&store, "s", &["debian-12"], 2).await;
    let with_output = |task: &pyti_wire::job::ClaimedTask, bytes: usize| {
        let mut result = passing(task.task_id, &task.recipe);
        for step in &mut result.steps {
            for out in [&mut step.stdout, &mut step.stderr] {
                out.head = "\u{1}".repeat(bytes);
                out.total_bytes = bytes as u64;
            }
        }
        let json = serde_json::to_string(&result).unwrap().len() as u64;
        (ReportOutcome::Raw { result }, json)
    };
    let max = MAX_STEP_OUTPUT_BYTES as usize;
    let over = store.try_claim("s").await.unwrap().unwrap();
    let (outcome, json) = with_output(&over, max);
    assert!(json > MAX_RESULT_FILE_BYTES, "{json} bytes");
    let r = store.report_result(&report(&over, outcome)).await.unwrap();
    assert_eq!(r.state, TaskState::Finished(Verdict::Error));
    let task = store.get_task(over.task_id).await.unwrap();
    let reason = task.attempts[0].reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains("bytes as JSON, more than the 16 MiB"),
        "{reason}"
    );
    assert!(task.attempts[0].raw_result.is_none(), "the data was kept");

    let within = store.try_claim("s").await.unwrap().unwrap();
    // Six streams of `n` control characters: 6n bytes each as JSON, plus the rest.
    let n = (MAX_RESULT_FILE_BYTES as usize - 64 * 1024) / 36;
    let (outcome, json) = with_output(&within, n);
    assert!(json <= MAX_RESULT_FILE_BYTES, "{json} bytes");
    let r = store
        .report_result(&report(&within, outcome))
        .await
        .unwrap();
    assert_eq!(r.state, TaskState::Finished(Verdict::Pass));
    let task = store.get_task(within.task_id).await.unwrap();
    let kept = task.attempts[0]
        .raw_result
        .as_ref()
        .expect("the data is kept");
    assert_eq!(kept.steps[2].stderr.head.len(), n);
    store.close().await;
}

async fn an_expired_lease_requeues_the_task_with_the_next_attempt(db: &TestDb) {
    let clock = Clock::manual(START);
    let store = db.store(&clock, 2).await;
    let receipt = submit(&store, "six==1.16.0", &["debian-12"], 5, "alice").await;
    let task_id = receipt.task_ids[0];
    register(&store, "dead", &["debian-12"], 1).await;
    register(&store, "alive", &["debian-12"], 1).await;
    let first = store.try_claim("dead").await.unwrap().unwrap();

    // Heartbeats keep the lease alive past its nominal end.
    for _ in 0..3 {
        clock.advance_ms(40_000);
        assert_eq!(store.heartbeat("dead", None).await.unwrap().renewed, 1);
        assert_eq!(store.expire_leases().await.unwrap(), 0);
    }
    // Then the slave goes quiet.
    clock.advance_ms(61_000);
    assert_eq!(store.expire_leases().await.unwrap(), 1);
    let t = store.get_task(task_id).await.unwrap();
    assert_eq!((t.state, t.attempt), (TaskState::Queued, 2));
    assert_eq!(t.attempts[0].outcome, Some(AttemptOutcome::LeaseExpired));

    // The dead slave's late report is refused and changes nothing.
    let late = store
        .report_result(&report(
            &first,
            ReportOutcome::Raw {
                result: passing(task_id, &first.recipe),
            },
        ))
        .await;
    assert!(
        matches!(late, Err(MasterError::StaleLease { .. })),
        "{late:?}"
    );
    let late_progress = store
        .report_progress(&ProgressReport {
            task_id,
            attempt: 1,
            lease_id: first.lease_id.clone(),
            phase: "late".into(),
            message: String::new(),
        })
        .await;
    assert!(matches!(late_progress, Err(MasterError::StaleLease { .. })));

    let second = store.try_claim("alive").await.unwrap().unwrap();
    assert_eq!((second.task_id, second.attempt), (task_id, 2));
    // Attempts run out: the second expiry gives up with tmpfail.
    clock.advance_ms(61_000);
    assert_eq!(store.expire_leases().await.unwrap(), 1);
    let t = store.get_task(task_id).await.unwrap();
    assert_eq!(t.state, TaskState::Finished(Verdict::Tmpfail));
    assert_eq!(t.attempts.len(), 2);
    // Both expired leases gave their slots back: each slave (one slot) can take a new task.
    for n in 0..2 {
        submit(
            &store,
            &format!("attrs==2{n}.1.0"),
            &["debian-12"],
            5,
            "alice",
        )
        .await;
    }
    for slave in ["dead", "alive"] {
        assert!(store.try_claim(slave).await.unwrap().is_some(), "{slave}");
    }
    store.close().await;
}

async fn heartbeats_renew_only_the_leases_the_slave_lists(db: &TestDb) {
    let clock = Clock::manual(START);
    let store = db.store(&clock, 2).await;
    for i in 0..2 {
        submit(&store, &format!("pkg{i}==1.0"), &["debian-12"], 5, "alice").await;
    }
    register(&store, "s", &["debian-12"], 2).await;
    let known = store.try_claim("s").await.unwrap().unwrap();
    // A claim whose reply never reached the slave: it does not list the task.
    let lost = store.try_claim("s").await.unwrap().unwrap();
    for _ in 0..3 {
        clock.advance_ms(40_000);
        let reply = store.heartbeat("s", Some(&[known.task_id])).await.unwrap();
        assert_eq!(reply.renewed, 1);
        assert!(reply.cancel.is_empty(), "{:?}", reply.cancel);
    }
    // The unlisted lease ended a minute after its claim; the listed one is alive.
    assert_eq!(store.expire_leases().await.unwrap(), 1);
    let t = store.get_task(lost.task_id).await.unwrap();
    assert_eq!((t.state, t.attempt), (TaskState::Queued, 2));
    assert_eq!(
        store.get_task(known.task_id).await.unwrap().state,
        TaskState::Leased
    );
    // A slave that lists a task the master took back is told to stop it.
    let reply = store
        .heartbeat("s", Some(&[known.task_id, lost.task_id]))
        .await
        .unwrap();
    assert_eq!(reply.renewed, 1);
    assert_eq!(reply.cancel, [lost.task_id]);
    // Holding nothing renews nothing; without a list (older slaves) everything is renewed.
    assert_eq!(store.heartbeat("s", Some(&[])).await.unwrap().renewed, 0);
    assert_eq!(store.heartbeat("s", None).await.unwrap().renewed, 1);
    // A list longer than any slave's slots is refused, naming the field.
    let too_many: Vec<i64> = (0..=1024).collect();
    let err = store.heartbeat("s", Some(&too_many)).await.unwrap_err();
    assert!(err.to_string().contains("held"), "{err}");
    store.close().await;
}

async fn a_restarted_master_gives_open_leases_a_full_period_before_expiring_them(db: &TestDb) {
    // The master was down for longer than a lease while the slave kept working: when it comes
    // back, the slave gets a full lease period to heartbeat before its task is requeued.
    let (clock, store, task) = one_leased_task(db, "six==1.16.0").await;
    let task_id = task.task_id;
    let lease_ms = 60_000; // common::TestDb's stores
    clock.advance_ms(3 * lease_ms);
    assert_eq!(store.extend_open_leases().await.unwrap(), 1);
    assert_eq!(
        store.expire_leases().await.unwrap(),
        0,
        "the slave has a period to heartbeat"
    );
    assert_eq!(store.heartbeat("s", None).await.unwrap().renewed, 1);
    assert_eq!(
        store.get_task(task_id).await.unwrap().state,
        TaskState::Leased
    );
    // A slave that never heartbeats again loses the task one period later.
    clock.advance_ms(lease_ms + 1);
    assert_eq!(store.expire_leases().await.unwrap(), 1);
    let t = store.get_task(task_id).await.unwrap();
    assert_eq!((t.state, t.attempt), (TaskState::Queued, 2));
}

async fn a_slave_registering_again_gives_up_the_leases_of_its_earlier_run(db: &TestDb) {
    // A slave killed mid-task and restarted under the same name (an operator's supervisor, or
    // `pyti run` taking `local-0` again) registers again before its old lease runs out. Its old
    // task must go back to the queue: the new run's heartbeats must not keep a lease nothing runs
    // under alive, and that lease must not fill the slot the new run claims with.
    let clock = Clock::manual(START);
    let store = db.store(&clock, 3).await;
    let receipt = submit(&store, "six==1.16.0", &["debian-12"], 5, "alice").await;
    let task_id = receipt.task_ids[0];
    let other = submit(&store, "attrs==23.1.0", &["debian-12"], 5, "alice")
        .await
        .task_ids[0];
    register(&store, "s", &["debian-12"], 1).await;
    register(&store, "bystander", &["debian-12"], 1).await;
    let first = store.try_claim("s").await.unwrap().unwrap();
    assert_eq!(first.task_id, task_id);
    let kept = store.try_claim("bystander").await.unwrap().unwrap();
    assert_eq!(kept.task_id, other);

    clock.advance_ms(5_000);
    register(&store, "s", &["debian-12"], 1).await;
    let t = store.get_task(task_id).await.unwrap();
    assert_eq!((t.state, t.attempt), (TaskState::Queued, 2));
    assert_eq!(t.attempts[0].outcome, Some(AttemptOutcome::LeaseExpired));
    let reason = t.attempts[0].reason.clone().unwrap_or_default();
    assert!(reason.contains("registered again"), "{reason}");
    // Another slave's lease is not touched.
    assert_eq!(
        store.get_task(other).await.unwrap().state,
        TaskState::Leased
    );

    // The new run's heartbeat renews nothing of the old run, and its slot is free.
    assert_eq!(store.heartbeat("s", None).await.unwrap().renewed, 0);
    let second = store.try_claim("s").await.unwrap().unwrap();
    assert_eq!((second.task_id, second.attempt), (task_id, 2));
    // The old run's report is stale.
    let late = store
        .report_result(&report(
            &first,
            ReportOutcome::Raw {
                result: passing(task_id, &first.recipe),
            },
        ))
        .await;
    assert!(
        matches!(late, Err(MasterError::StaleLease { .. })),
        "{late:?}"
    );
    let done = store
        .report_result(&report(
            &second,
            ReportOutcome::Raw {
                result: passing(task_id, &second.recipe),
            },
        ))
        .await
        .unwrap();
    assert_eq!(done.state, TaskState::Finished(Verdict::Pass));
    store.close().await;
}

async fn infrastructure_failures_are_retried_up_to_max_attempts(db: &TestDb) {
    let clock = Clock::manual(START);
    let store = db.store(&clock, 3).await;
    let receipt = submit(&store, "six==1.16.0", &["debian-12"], 5, "alice").await;
    register(&store, "s", &["debian-12"], 1).await;
    for attempt in 1..=3u32 {
        let task = store.try_claim("s").await.unwrap().expect("requeued");
        assert_eq!(task.attempt, attempt);
        let r = store
            .report_result(&report(&task, infra("VM did not boot")))
            .await
            .unwrap();
        assert_eq!(r.attempt_outcome, AttemptOutcome::Verdict(Verdict::Tmpfail));
        let expected = if attempt < 3 {
            TaskState::Queued
        } else {
            TaskState::Finished(Verdict::Tmpfail)
        };
        assert_eq!(r.state, expected);
    }
    assert!(store.try_claim("s").await.unwrap().is_none());
    let t = store.get_task(receipt.task_ids[0]).await.unwrap();
    assert_eq!(t.attempts.len(), 3, "every attempt is kept");
    assert!(t
        .attempts
        .iter()
        .all(|a| a.reason.as_deref() == Some("VM did not boot")));
    store.close().await;
}

async fn a_repeated_report_neither_duplicates_nor_overwrites(db: &TestDb) {
    let clock = Clock::manual(START);
    let store = db.store(&clock, 3).await;
    let receipt = submit(&store, "six==1.16.0", &["debian-12"], 5, "alice").await;
    let task_id = receipt.task_ids[0];
    register(&store, "s", &["debian-12"], 1).await;

    // Attempt 1 ends with an infrastructure failure, reported twice.
    let first = store.try_claim("s").await.unwrap().unwrap();
    let r1 = report(&first, infra("disk full"));
    assert!(!store.report_result(&r1).await.unwrap().duplicate);
    let again = store.report_result(&r1).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(
        again.attempt_outcome,
        AttemptOutcome::Verdict(Verdict::Tmpfail)
    );

    // Attempt 2 passes; the repeat of attempt 1's report does not touch it.
    let second = store.try_claim("s").await.unwrap().unwrap();
    assert_eq!(second.attempt, 2);
    let r2 = report(
        &second,
        ReportOutcome::Raw {
            result: passing(task_id, &second.recipe),
        },
    );
    assert_eq!(
        store.report_result(&r2).await.unwrap().state,
        TaskState::Finished(Verdict::Pass)
    );
    assert!(store.report_result(&r1).await.unwrap().duplicate);
    assert!(store.report_result(&r2).await.unwrap().duplicate);

    // A different report for an ended attempt is a conflict.
    let other = report(
        &second,
        ReportOutcome::Raw {
            result: failing(task_id, &second.recipe),
        },
    );
    assert!(matches!(
        store.report_result(&other).await,
        Err(MasterError::Conflict(_))
    ));
    // A wrong lease id is refused.
    let mut forged = r2.clone();
    forged.lease_id = "0".repeat(32);
    assert!(matches!(
        store.report_result(&forged).await,
        Err(MasterError::StaleLease { .. })
    ));

    let t = store.get_task(task_id).await.unwrap();
    assert_eq!(t.state, TaskState::Finished(Verdict::Pass));
    let outcomes: Vec<_> = t.attempts.iter().map(|a| a.outcome).collect();
    assert_eq!(
        outcomes,
        [
            Some(AttemptOutcome::Verdict(Verdict::Tmpfail)),
            Some(AttemptOutcome::Verdict(Verdict::Pass))
        ]
    );
    store.close().await;
}

async fn dispatch_serves_priority_first_then_shares_fairly_between_submitters(db: &TestDb) {
    let clock = Clock::manual(START);
    let store = db.store(&clock, 3).await;
    // A bulk submitter with 30 jobs, then a small one with 3, then one urgent job.
    for i in 0..30 {
        submit(&store, &format!("bulk==1.{i}"), &["debian-12"], 5, "bulk").await;
    }
    for i in 0..3 {
        submit(&store, &format!("small==1.{i}"), &["debian-12"], 5, "small").await;
    }
    submit(&store, "urgent==1.0", &["debian-12"], 9, "bulk").await;
    register(&store, "s", &["debian-12"], 100).await;
    let mut order = Vec::new();
    for _ in 0..8 {
        let t = store.try_claim("s").await.unwrap().unwrap();
        let job = store.get_job(t.job_id).await.unwrap();
        order.push(job.package.name_version().0);
    }
    assert_eq!(order[0], "urgent", "{order:?}");
    // The small submitter's 3 tasks are served within the next 6 claims, alternating.
    let small_positions: Vec<usize> = order
        .iter()
        .enumerate()
        .filter(|(_, n)| *n == "small")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(small_positions.len(), 3, "{order:?}");
    assert!(small_positions.iter().all(|&i| i <= 6), "{order:?}");
    store.close().await;
}

async fn a_slave_gets_only_its_recipes_and_at_most_its_slots(db: &TestDb) {
    let clock = Clock::manual(START);
    let store = db.store(&clock, 3).await;
    submit(&store, "a==1", &["other-distro"], 5, "alice").await;
    submit(&store, "b==1", &["other-distro"], 5, "alice").await;
    register(&store, "debian-only", &["debian-12"], 4).await;
    register(&store, "other", &["other-distro"], 1).await;
    assert!(store.try_claim("debian-only").await.unwrap().is_none());
    let t = store.try_claim("other").await.unwrap().unwrap();
    assert_eq!(t.recipe.name, "other-distro");
    assert!(
        store.try_claim("other").await.unwrap().is_none(),
        "one slot, one task"
    );
    store
        .report_progress(&ProgressReport {
            task_id: t.task_id,
            attempt: 1,
            lease_id: t.lease_id.clone(),
            phase: "booting".into(),
            message: String::new(),
        })
        .await
        .unwrap();
    assert!(
        store.try_claim("other").await.unwrap().is_none(),
        "a running task holds its slot too"
    );
    report_pass(&store, &t).await;
    assert!(
        store.try_claim("other").await.unwrap().is_some(),
        "the slot is free again"
    );
    // Unknown slaves must register first.
    assert!(matches!(
        store.try_claim("nobody").await,
        Err(MasterError::NotFound { .. })
    ));
    store.close().await;
}

async fn a_claim_finds_its_recipe_behind_lanes_it_cannot_serve(db: &TestDb) {
    // A claim batch reads only the lanes first in line; a slave whose recipe has work only in
    // a lane far behind them still gets it.
    let clock = Clock::manual(START);
    let store = db.store(&clock, 3).await;
    for user in 0..6 {
        submit(
            &store,
            &format!("d{user}==1"),
            &["debian-12"],
            9,
            &format!("user{user}"),
        )
        .await;
    }
    submit(&store, "o==1", &["other-distro"], 1, "late").await;
    register(&store, "other", &["other-distro"], 4).await;
    let t = store
        .try_claim("other")
        .await
        .unwrap()
        .expect("the other-distro task");
    assert_eq!(t.recipe.name, "other-distro");
    assert!(store.try_claim("other").await.unwrap().is_none());
    store.close().await;
}

async fn upgrading_the_schema_counts_the_leases_slaves_already_hold(db: &TestDb) {
    let clock = Clock::manual(START);
    let store = db.store(&clock, 3).await;
    for package in ["six==1.16.0", "attrs==23.1.0"] {
        submit(&store, package, &["debian-12"], 5, "alice").await;
    }
    register(&store, "s", &["debian-12"], 1).await;
    let t = store.try_claim("s").await.unwrap().unwrap();
    store.close().await;
    // The database as a master before migration 2 left it: no held counts.
    db.execute(
        "ALTER TABLE slaves DROP COLUMN held; DELETE FROM _sqlx_migrations WHERE version = 2",
    )
    .await;

    let store = db.store(&clock, 3).await;
    assert!(
        store.try_claim("s").await.unwrap().is_none(),
        "the lease taken before the upgrade still fills the slave's one slot"
    );
    report_pass(&store, &t).await;
    assert!(store.try_claim("s").await.unwrap().is_some());
    store.close().await;
}

/// The messages of a task's log, oldest first.
async fn log_messages(store: &Store, task_id: i64) -> Vec<String> {
    let log = store.task_log(task_id, 0).await.unwrap();
    log.into_iter().map(|l| l.message).collect()
}

async fn a_lease_s_attempt_and_log_line_are_written_by_its_first_change(db: &TestDb) {
    let clock = Clock::manual(START);
    let store = db.store(&clock, 3).await;
    let task_id = submit(&store, "six==1.16.0", &["debian-12"], 5, "alice")
        .await
        .task_ids[0];
    register(&store, "dead", &["debian-12"], 1).await;
    register(&store, "alive", &["debian-12"], 1).await;
    store.try_claim("dead").await.unwrap().unwrap();

    // The claim wrote the task's row only; readers show its attempt and log line from it.
    assert_eq!(db.count("SELECT COUNT(*) FROM attempts").await, 0);
    assert_eq!(db.count("SELECT COUNT(*) FROM task_log").await, 0);
    let t = store.get_task(task_id).await.unwrap();
    let attempts: Vec<_> = t
        .attempts
        .iter()
        .map(|a| (a.attempt, a.slave.as_str(), a.leased_at_ms, a.outcome))
        .collect();
    assert_eq!(attempts, [(1, "dead", START, None)]);
    assert_eq!(
        log_messages(&store, task_id).await,
        ["queued -> leased by dead"]
    );

    // The lease runs out: its first change writes the lease's attempt and line, then its own.
    clock.advance_ms(61_000);
    assert_eq!(store.expire_leases().await.unwrap(), 1);
    assert_eq!(db.count("SELECT COUNT(*) FROM attempts").await, 1);
    let expired = "leased -> queued: lease expired: slave `dead` stopped heartbeating";
    assert_eq!(
        log_messages(&store, task_id).await,
        ["queued -> leased by dead", expired]
    );

    // The next lease shows after the recorded attempt, until its report records it.
    let second = store.try_claim("alive").await.unwrap().unwrap();
    let t = store.get_task(task_id).await.unwrap();
    let attempts: Vec<_> = t
        .attempts
        .iter()
        .map(|a| (a.attempt, a.slave.as_str(), a.leased_at_ms, a.outcome))
        .collect();
    assert_eq!(
        attempts,
        [
            (1, "dead", START, Some(AttemptOutcome::LeaseExpired)),
            (2, "alive", START + 61_000, None)
        ]
    );
    assert_eq!(
        log_messages(&store, task_id).await,
        [
            "queued -> leased by dead",
            expired,
            "queued -> leased by alive"
        ]
    );
    let r = report(
        &second,
        ReportOutcome::Raw {
            result: passing(task_id, &second.recipe),
        },
    );
    assert!(!store.report_result(&r).await.unwrap().duplicate);
    assert!(store.report_result(&r).await.unwrap().duplicate);
    assert_eq!(db.count("SELECT COUNT(*) FROM attempts").await, 2);
    let log = log_messages(&store, task_id).await;
    assert_eq!(log.len(), 4, "{log:?}");
    assert_eq!(log[2], "queued -> leased by alive");
    assert!(log[3].starts_with("leased -> finished(pass)"), "{log:?}");
    store.close().await;
}

async fn a_lease_granted_before_the_upgrade_is_recorded_once(db: &TestDb) {
    let (clock, store, t) = one_leased_task(db, "six==1.16.0").await;
    let task_id = t.task_id;
    store.close().await;
    // The database as an earlier master left it: its claim wrote the attempt and the log line.
    db.execute(
        "INSERT INTO attempts (task_id, attempt, slave, lease_id, leased_ms) \
             SELECT id, attempt, lease_slave, lease_id, updated_ms FROM tasks; \
         INSERT INTO task_log (task_id, attempt, at_ms, phase, message) \
             SELECT id, attempt, updated_ms, 'state', 'queued -> leased by ' || lease_slave \
             FROM tasks",
    )
    .await;

    let store = db.store(&clock, 3).await;
    assert_eq!(store.get_task(task_id).await.unwrap().attempts.len(), 1);
    assert_eq!(
        log_messages(&store, task_id).await,
        ["queued -> leased by s"]
    );
    report_pass(&store, &t).await;
    let task = store.get_task(task_id).await.unwrap();
    assert_eq!(task.attempts.len(), 1);
    assert_eq!(
        task.attempts[0].outcome,
        Some(AttemptOutcome::Verdict(Verdict::Pass))
    );
    let log = log_messages(&store, task_id).await;
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[0], "queued -> leased by s");
    store.close().await;
}

async fn a_sweep_ends_expired_leases_lane_by_lane(db: &TestDb) {
    let clock = Clock::manual(START);
    let store = db.store(&clock, 3).await;
    let alice = submit(&store, "six==1.16.0", &["debian-12"], 5, "alice")
        .await
        .task_ids[0];
    let bob = submit(&store, "attrs==23.1.0", &["debian-12"], 5, "bob")
        .await
        .task_ids[0];
    register(&store, "a", &["debian-12"], 1).await;
    register(&store, "b", &["debian-12"], 1).await;
    assert_eq!(store.try_claim("a").await.unwrap().unwrap().task_id, alice);
    clock.advance_ms(10_000);
    assert_eq!(store.try_claim("b").await.unwrap().unwrap().task_id, bob);
    // Alice's lease, renewed, runs out after Bob's.
    clock.advance_ms(10_000);
    store.heartbeat("a", None).await.unwrap();
    clock.advance_ms(70_000);
    assert_eq!(store.expire_leases().await.unwrap(), 2);
    // Ended in the lanes' key order (alice's lane before bob's), as a claim batch locks them.
    let alice_first = format!(
        "SELECT COUNT(*) FROM task_log a, task_log b WHERE a.task_id = {alice} \
         AND b.task_id = {bob} AND a.message LIKE 'leased -> queued%' \
         AND b.message LIKE 'leased -> queued%' AND a.id < b.id"
    );
    assert_eq!(db.count(&alice_first).await, 1);
    store.close().await;
}

async fn cancelling_a_job_stops_queued_and_running_tasks(db: &TestDb) {
    let clock = Clock::manual(START);
    let store = db.store(&clock, 3).await;
    let receipt = submit(
        &store,
        "six==1.16.0",
        &["debian-12", "other-distro"],
        5,
        "alice",
    )
    .await;
    register(&store, "s", &["debian-12"], 1).await;
    let running = store.try_claim("s").await.unwrap().unwrap();
    assert!(matches!(
        store.cancel(receipt.job_id, Some("mallory")).await,
        Err(MasterError::InvalidField { .. })
    ));
    let c = store.cancel(receipt.job_id, Some("alice")).await.unwrap();
    assert_eq!((c.cancelled, c.stopping), (1, 1));
    assert_eq!(
        store.heartbeat("s", None).await.unwrap().cancel,
        vec![running.task_id]
    );
    let r = store
        .report_result(&report(&running, infra("stopped: job cancelled")))
        .await
        .unwrap();
    assert_eq!(r.state, TaskState::Cancelled);
    let job_view = store.get_job(receipt.job_id).await.unwrap();
    assert!(job_view.is_done());
    assert!(job_view
        .tasks
        .iter()
        .all(|t| t.state == TaskState::Cancelled));
    // The cancelled task gave its slot back.
    submit(&store, "attrs==23.1.0", &["debian-12"], 5, "alice").await;
    assert!(store.try_claim("s").await.unwrap().is_some());
    store.close().await;
}

async fn reopening_the_database_loses_nothing(db: &TestDb) {
    let clock = Clock::manual(START);
    let store = db.store(&clock, 3).await;
    let receipt = submit(
        &store,
        "six==1.16.0",
        &["debian-12", "other-distro"],
        5,
        "alice",
    )
    .await;
    register(&store, "s", &["debian-12", "other-distro"], 2).await;
    let leased = store.try_claim("s").await.unwrap().unwrap();
    store.close().await;
    drop(store);

    let store = db.store(&clock, 3).await;
    let job_view = store.get_job(receipt.job_id).await.unwrap();
    let states: Vec<TaskState> = job_view.tasks.iter().map(|t| t.state).collect();
    assert!(
        states.contains(&TaskState::Leased) && states.contains(&TaskState::Queued),
        "{states:?}"
    );
    // The lease survived: the slave reports to the new master process.
    let r = store
        .report_result(&report(
            &leased,
            ReportOutcome::Raw {
                result: passing(leased.task_id, &leased.recipe),
            },
        ))
        .await
        .unwrap();
    assert_eq!(r.state, TaskState::Finished(Verdict::Pass));
    // The slave registration survived too.
    let next = store.try_claim("s").await.unwrap().unwrap();
    assert_ne!(next.task_id, leased.task_id);
    store.close().await;
}

/// Submits `demo==VERSION` for debian-12 and other-distro as alice, claims both tasks as slave
/// `s` and reports them: passed, except on debian-12 when `debian_passes` is false.
async fn run_demo(store: &Store, version: &str, debian_passes: bool) {
    submit(
        store,
        &format!("demo=={version}"),
        &["debian-12", "other-distro"],
        5,
        "alice",
    )
    .await;
    for _ in 0..2 {
        let t = store.try_claim("s").await.unwrap().unwrap();
        let raw = if t.recipe.name == "debian-12" && !debian_passes {
            failing(t.task_id, &t.recipe)
        } else {
            passing(t.task_id, &t.recipe)
        };
        store
            .report_result(&report(&t, ReportOutcome::Raw { result: raw }))
            .await
            .unwrap();
    }
}

async fn list_jobs_filters_and_compare_finds_regressions(db: &TestDb) {
    let clock = Clock::manual(START);
    let store = db.store(&clock, 3).await;
    register(&store, "s", &["debian-12", "other-distro"], 10).await;
    // demo 1.0 passes everywhere; 2.0 fails on debian-12 only.
    for (version, debian_passes) in [("1.0", true), ("2.0", false)] {
        run_demo(&store, version, debian_passes).await;
        clock.advance_ms(1000);
    }
    submit(&store, "other==1", &["debian-12"], 5, "bob").await;

    let all = store.list_jobs(&JobFilter::default()).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].submitter, "bob", "newest first");
    let by = |f: JobFilter| {
        let store = &store;
        async move { store.list_jobs(&f).await.unwrap().len() }
    };
    assert_eq!(
        by(JobFilter {
            package: Some("Demo".into()),
            ..Default::default()
        })
        .await,
        2
    );
    assert_eq!(
        by(JobFilter {
            submitter: Some("bob".into()),
            ..Default::default()
        })
        .await,
        1
    );
    assert_eq!(
        by(JobFilter {
            status: Some("fail".into()),
            ..Default::default()
        })
        .await,
        1
    );
    assert_eq!(
        by(JobFilter {
            status: Some("queued".into()),
            ..Default::default()
        })
        .await,
        1
    );
    assert_eq!(
        by(JobFilter {
            recipe: Some("other-distro".into()),
            ..Default::default()
        })
        .await,
        2
    );
    assert_eq!(
        by(JobFilter {
            since_ms: Some(START + 1000),
            ..Default::default()
        })
        .await,
        2
    );
    assert_eq!(
        by(JobFilter {
            limit: Some(1),
            ..Default::default()
        })
        .await,
        1
    );
    // Paging: each page starts below the oldest job of the page before.
    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .list_jobs(&JobFilter {
                limit: Some(2),
                before,
                ..Default::default()
            })
            .await
            .unwrap();
        let Some(oldest) = page.last() else { break };
        before = Some(oldest.id);
        pages.push(page.iter().map(|j| j.id).collect::<Vec<_>>());
        assert!(pages.len() <= all.len(), "paging does not end: {pages:?}");
    }
    let ids: Vec<i64> = all.iter().map(|j| j.id).collect();
    assert_eq!(pages, [ids[..2].to_vec(), ids[2..].to_vec()]);
    assert!(matches!(
        store.list_jobs(&JobFilter { status: Some("bogus".into()), ..Default::default() }).await,
        Err(MasterError::InvalidField { field, .. }) if field == "status"
    ));

    let cmp = store
        .compare(&CompareRequest {
            package: "demo".into(),
            recipes: vec![],
            limit: None,
        })
        .await
        .unwrap();
    assert_eq!(cmp.versions, ["1.0", "2.0"]);
    assert_eq!(cmp.cells.len(), 4);
    assert_eq!(cmp.regressions.len(), 1, "{cmp:?}");
    let reg = &cmp.regressions[0];
    assert_eq!(
        (
            reg.recipe.as_str(),
            reg.from_version.as_str(),
            reg.to_version.as_str()
        ),
        ("debian-12", "1.0", "2.0")
    );
    assert_eq!((reg.from, reg.to), (Verdict::Pass, Verdict::Fail));
    store.close().await;
}

/// `compare` reads the newest `limit` versions, picks each cell's latest finished run (an
/// unfinished re-run does not hide it; a cancelled one does not count), and filters recipes.
async fn compare_shows_the_newest_versions_and_each_cell_s_latest_finished_run(db: &TestDb) {
    let clock = Clock::manual(START);
    let store = db.store(&clock, 3).await;
    register(&store, "s", &["debian-12", "other-distro"], 100).await;
    run_demo(&store, "1.0", true).await;
    run_demo(&store, "2.0", true).await;
    run_demo(&store, "3.0", false).await;
    // 2.0 run again: it fails now; the latest finished run is the cell.
    run_demo(&store, "2.0", false).await;
    // 1.0 submitted again and left queued; then once more and cancelled.
    submit(&store, "demo==1.0", &["debian-12"], 5, "alice").await;
    let cancelled = submit(&store, "demo==1.0", &["debian-12"], 5, "alice").await;
    store.cancel(cancelled.job_id, None).await.unwrap();

    let compare = |limit: Option<u32>, recipes: &[&str]| {
        let store = &store;
        let request = CompareRequest {
            package: "Demo".into(),
            recipes: recipes.iter().map(|r| r.to_string()).collect(),
            limit,
        };
        async move { store.compare(&request).await }
    };
    let all = compare(None, &[]).await.unwrap();
    assert_eq!(
        all.versions,
        ["1.0", "2.0", "3.0"],
        "first submission order"
    );
    assert_eq!(all.recipes, ["debian-12", "other-distro"]);
    assert_eq!(all.older_versions, 0);
    let cell = |c: &Comparison, version: &str, recipe: &str| {
        c.cells
            .iter()
            .find(|cell| cell.version == version && cell.recipe == recipe)
            .map(|cell| cell.verdict)
    };
    assert_eq!(
        cell(&all, "1.0", "debian-12"),
        Some(Some(Verdict::Pass)),
        "the queued re-run does not hide the finished result"
    );
    assert_eq!(cell(&all, "2.0", "debian-12"), Some(Some(Verdict::Fail)));
    assert_eq!(all.cells.len(), 6);
    let regressions: Vec<(&str, &str, &str)> = all
        .regressions
        .iter()
        .map(|r| {
            (
                r.recipe.as_str(),
                r.from_version.as_str(),
                r.to_version.as_str(),
            )
        })
        .collect();
    assert_eq!(regressions, [("debian-12", "1.0", "2.0")]);

    let newest = compare(Some(2), &[]).await.unwrap();
    assert_eq!(newest.versions, ["2.0", "3.0"]);
    assert_eq!(newest.older_versions, 1);
    assert_eq!(newest.cells.len(), 4);
    assert!(newest.regressions.is_empty(), "{newest:?}");

    let other = compare(None, &["other-distro"]).await.unwrap();
    assert_eq!(other.recipes, ["other-distro"]);
    assert_eq!(other.cells.len(), 3);
    assert!(other.regressions.is_empty());

    for bad in [0, COMPARE_MAX_VERSIONS + 1] {
        assert!(matches!(
            compare(Some(bad), &[]).await,
            Err(MasterError::InvalidField { field, .. }) if field == "limit"
        ));
    }
    let none = compare(None, &["no-such-recipe"]).await.unwrap();
    assert!(none.versions.is_empty() && none.cells.is_empty());
    store.close().await;
}

/// A slave's progress reports stop being stored at [`MAX_LOG_LINES`] lines per attempt, and a
/// log longer than a page is read page by page, in order, nothing twice or missed.
async fn an_attempt_s_log_is_bounded_and_read_in_pages(db: &TestDb) {
    const MAX_LOG_LINES: usize = 200;
    const ATTEMPTS: u32 = 6;
    let clock = Clock::manual(START);
    let store = db.store(&clock, ATTEMPTS).await;
    let task_id = submit(&store, "six==1.16.0", &["debian-12"], 5, "alice")
        .await
        .task_ids[0];
    register(&store, "s", &["debian-12"], 1).await;
    for attempt in 1..=ATTEMPTS {
        let task = store.try_claim("s").await.unwrap().unwrap();
        assert_eq!((task.task_id, task.attempt), (task_id, attempt));
        let progress = |n: usize| ProgressReport {
            task_id,
            attempt,
            lease_id: task.lease_id.clone(),
            phase: "step".into(),
            message: format!("line {n}"),
        };
        let mut stored = 0;
        loop {
            match store.report_progress(&progress(stored)).await {
                Ok(()) => stored += 1,
                Err(MasterError::Conflict(message)) => {
                    assert!(message.contains("the most one attempt keeps"), "{message}");
                    break;
                }
                Err(e) => panic!("{e}"),
            }
            assert!(stored <= MAX_LOG_LINES, "progress was never refused");
        }
        // The lease line and the start line are the attempt's first two.
        // Before its progress, an attempt has its lease and start lines.
        assert_eq!(stored, MAX_LOG_LINES - 2);
        store
            .report_result(&report(&task, infra("the VM did not boot")))
            .await
            .unwrap();
        clock.advance_ms(1);
    }

    let mut pages = Vec::new();
    let mut lines = Vec::new();
    loop {
        let page = store.task_log(task_id, lines.len() as u32).await.unwrap();
        pages.push(page.len());
        let last = page.len() < TASK_LOG_PAGE_LINES as usize;
        lines.extend(page);
        if last {
            break;
        }
    }
    // Every attempt: MAX_LOG_LINES lines, then the line that ends it (under its own number:
    // requeued, and the last one tmpfail).
    let per_attempt = MAX_LOG_LINES + 1;
    let total = per_attempt * ATTEMPTS as usize;
    assert_eq!(lines.len(), total);
    assert_eq!(pages, [1000, total - 1000]);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(
            line.attempt as usize,
            i / per_attempt + 1,
            "line {i}: {line:?}"
        );
    }
    for attempt in 1..=ATTEMPTS as usize {
        let end = &lines[attempt * per_attempt - 1];
        assert!(end.message.contains("the VM did not boot"), "{end:?}");
    }
    assert!(
        lines[total - 1].message.contains("tmpfail"),
        "{:?}",
        lines[total - 1]
    );
    let progress: Vec<&str> = lines
        .iter()
        .filter(|l| l.phase == "step" && l.attempt == 3)
        .map(|l| l.message.as_str())
        .collect();
    assert_eq!(progress.len(), MAX_LOG_LINES - 2);
    assert!(progress
        .iter()
        .enumerate()
        .all(|(n, m)| *m == format!("line {n}")));
    assert!(store
        .task_log(task_id, lines.len() as u32 + 10)
        .await
        .unwrap()
        .is_empty());
    store.close().await;
}

async fn many_concurrent_claimers_take_every_task_exactly_once(db: &TestDb) {
    let clock = Clock::System;
    // Two store instances stand for two masters on one database.
    let stores = [
        std::sync::Arc::new(db.store(&clock, 3).await),
        std::sync::Arc::new(db.store(&clock, 3).await),
    ];
    const TASKS: usize = 200;
    const CLAIMERS_PER_MASTER: usize = 8;
    let mut expected = HashSet::new();
    for i in 0..TASKS / 2 {
        let r = submit(
            &stores[i % 2],
            &format!("pkg{i}==1.0"),
            &["debian-12", "other-distro"],
            (i % 10 + 1) as u8,
            &format!("user{}", i % 3),
        )
        .await;
        expected.extend(r.task_ids);
    }
    let mut claimers = Vec::new();
    for (m, store) in stores.iter().enumerate() {
        for c in 0..CLAIMERS_PER_MASTER {
            let store = store.clone();
            let name = format!("slave-{m}-{c}");
            claimers.push(tokio::spawn(async move {
                store
                    .register(&SlaveRegistration {
                        name: name.clone(),
                        recipes: vec!["debian-12".into(), "other-distro".into()],
                        slots: 1000,
                    })
                    .await
                    .unwrap();
                let mut got = Vec::new();
                loop {
                    match store.try_claim(&name).await {
                        Ok(Some(t)) => got.push(t.task_id),
                        Ok(None) => break,
                        Err(MasterError::Conflict(_)) => continue,
                        Err(e) => panic!("claim failed: {e}"),
                    }
                }
                got
            }));
        }
    }
    let mut seen = HashSet::new();
    let mut total = 0;
    for c in claimers {
        for id in c.await.unwrap() {
            total += 1;
            assert!(seen.insert(id), "task {id} was claimed twice");
        }
    }
    assert_eq!(total, TASKS);
    assert_eq!(seen, expected);
    for s in &stores {
        s.close().await;
    }
}

async fn an_uploaded_package_reaches_every_slave_that_claims_its_tasks(db: &TestDb) {
    let clock = Clock::manual(START);
    let store = std::sync::Arc::new(db.store(&clock, 3).await);
    let content = b"an sdist's bytes".repeat(1000);
    let sha256 = hex::encode(sha2::Sha256::digest(&content));
    let mut upload = job("ignored==1", &["debian-12", "other-distro"], 5);
    upload.package = PackageSpec::upload("demo-1.0.tar.gz", &sha256, &content);
    store.submit(&upload, "alice", false).await.unwrap();
    submit(&store, "six==1.16.0", &["debian-12"], 5, "bob").await;
    for slave in ["s1", "s2", "s3"] {
        register(&store, slave, &["debian-12", "other-distro"], 1).await;
    }
    // Claimed together, so the two tasks of the upload can share one claim batch.
    let claims = ["s1", "s2", "s3"].map(|slave| {
        let store = store.clone();
        tokio::spawn(async move { store.try_claim(slave).await.unwrap().expect("a task") })
    });
    let mut uploads = 0;
    for claim in claims {
        match claim.await.unwrap().package {
            PackageSpec::Upload {
                filename,
                sha256: claimed_sha256,
                content_hex,
            } => {
                assert_eq!(filename, "demo-1.0.tar.gz");
                assert_eq!(claimed_sha256, sha256);
                assert_eq!(content_hex, hex::encode(&content), "the upload's bytes");
                uploads += 1;
            }
            PackageSpec::Pypi { name, version } => {
                assert_eq!((name, version), ("six".into(), "1.16.0".into()))
            }
            other => panic!("unexpected package {other:?}"),
        }
    }
    assert_eq!(uploads, 2, "both recipes' tasks carry the upload");
    store.close().await;
}

async fn concurrent_claims_fill_each_slave_to_its_slots_and_no_further(db: &TestDb) {
    let clock = Clock::manual(START);
    let store = std::sync::Arc::new(db.store(&clock, 3).await);
    for i in 0..20 {
        submit(
            &store,
            &format!("pkg{i}==1.0"),
            &["debian-12"],
            (i % 3 + 4) as u8,
            &format!("user{}", i % 4),
        )
        .await;
    }
    const SLAVES: [&str; 3] = ["a", "b", "c"];
    const SLOTS: usize = 2;
    for slave in SLAVES {
        register(&store, slave, &["debian-12"], SLOTS as u32).await;
    }
    // Twice as many claims as slots, all at once: batches hold several claims per slave.
    let claim_all = || {
        let mut claims = Vec::new();
        for slave in SLAVES {
            for _ in 0..2 * SLOTS {
                let store = store.clone();
                claims.push(tokio::spawn(async move {
                    (slave, store.try_claim(slave).await.unwrap())
                }));
            }
        }
        claims
    };
    let mut taken: Vec<(&str, i64)> = Vec::new();
    for claim in claim_all() {
        let (slave, task) = claim.await.unwrap();
        if let Some(task) = task {
            taken.push((slave, task.task_id));
        }
    }
    for slave in SLAVES {
        let n = taken.iter().filter(|(s, _)| *s == slave).count();
        assert_eq!(n, SLOTS, "slave {slave} got {n} tasks: {taken:?}");
    }
    // The held counts the batches wrote keep every slave full.
    for claim in claim_all() {
        let (slave, task) = claim.await.unwrap();
        assert!(task.is_none(), "slave {slave} got a task beyond its slots");
    }
    for (slave, task_id) in &taken {
        let task = store.get_task(*task_id).await.unwrap();
        assert_eq!(task.state, TaskState::Leased);
        assert_eq!(task.attempts.len(), 1);
        assert_eq!(task.attempts[0].slave, *slave);
        let log = store.task_log(*task_id, 0).await.unwrap();
        let messages: Vec<&str> = log.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(
            messages,
            [format!("queued -> leased by {slave}")],
            "task {task_id}"
        );
    }
    store.close().await;
}

/// Another master's claim batch (or this master's other one) holds the oldest tasks of the
/// only lane, locked between its pick and its commit: a claim takes the next task of the lane
/// instead of coming back empty (PostgreSQL: row locks; SQLite has one writer at a time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_claim_passes_over_the_tasks_another_batch_holds() {
    let db = TestDb::postgres().await;
    let store = db.store(&Clock::System, 3).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let r = submit(&store, &format!("pkg{i}==1.0"), &["debian-12"], 5, "alice").await;
        ids.extend(r.task_ids);
    }
    register(&store, "slave-a", &["debian-12"], 4).await;
    let other = sqlx::PgPool::connect(&db.url).await.expect("connect");
    let mut holding = other.begin().await.unwrap();
    let held: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM tasks WHERE state = 'queued' ORDER BY id LIMIT 3 FOR UPDATE",
    )
    .fetch_all(&mut *holding)
    .await
    .unwrap();
    assert_eq!(held, ids[..3]);
    let claimed = store.try_claim("slave-a").await.unwrap();
    assert_eq!(claimed.map(|t| t.task_id), Some(ids[3]));
    holding.rollback().await.unwrap();
    other.close().await;
    // Released, the oldest task is next.
    let claimed = store.try_claim("slave-a").await.unwrap();
    assert_eq!(claimed.map(|t| t.task_id), Some(ids[0]));
    store.close().await;
    db.cleanup().await;
}

/// A store on PostgreSQL whose connections are told apart from every other test's by their
/// `application_name` (returned): `prefix` and this process's id.
async fn named_store(db: &TestDb, prefix: &str) -> (Store, String) {
    let name = format!("{prefix}-{}", std::process::id());
    let url = format!("{}&application_name={name}", db.url);
    let store = Store::open(&url, common::options(&Clock::System, 3))
        .await
        .expect("open store");
    (store, name)
}

/// Claims for `slave` until nothing is left, failing past `queued` tasks; returns the task ids
/// claimed, sorted.
async fn claim_all(store: &Store, slave: &str, queued: usize) -> Vec<i64> {
    let mut claimed = Vec::new();
    while let Some(task) = store.try_claim(slave).await.unwrap() {
        claimed.push(task.task_id);
        assert!(
            claimed.len() <= queued,
            "more tasks than were queued: {claimed:?}"
        );
    }
    claimed.sort_unstable();
    claimed
}

/// Every queued task of the lane first in line is held by another transaction (another
/// master's batch between its pick and its commit): the claim's lease comes back short, and the
/// claim goes to the next lane in the batch's next round instead of coming back empty. The
/// short lane's count is left alone, so its tasks are claimed once they are free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_claim_goes_to_the_next_lane_when_its_lane_is_held() {
    let db = TestDb::postgres().await;
    let store = db.store(&Clock::System, 3).await;
    let mut alice = Vec::new();
    let mut bob = Vec::new();
    for i in 0..2 {
        alice.extend(
            submit(&store, &format!("a{i}==1.0"), &["debian-12"], 5, "alice")
                .await
                .task_ids,
        );
        bob.extend(
            submit(&store, &format!("b{i}==1.0"), &["debian-12"], 5, "bob")
                .await
                .task_ids,
        );
    }
    register(&store, "slave-a", &["debian-12"], 10).await;
    let other = sqlx::PgPool::connect(&db.url).await.expect("connect");
    let lanes = || async {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT submitter, queued FROM lanes ORDER BY submitter")
                .fetch_all(&other)
                .await
                .unwrap();
        rows
    };
    let mut holding = other.begin().await.unwrap();
    let held: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM tasks WHERE submitter = 'alice' ORDER BY id FOR UPDATE")
            .fetch_all(&mut *holding)
            .await
            .unwrap();
    assert_eq!(held, alice);
    // Neither lane was served: alice's is first in line (by name).
    let claimed = store.try_claim("slave-a").await.unwrap();
    assert_eq!(claimed.map(|t| t.task_id), Some(bob[0]));
    holding.rollback().await.unwrap();
    assert_eq!(lanes().await, [("alice".into(), 2), ("bob".into(), 1)]);

    assert_eq!(
        claim_all(&store, "slave-a", 3).await,
        [alice[0], alice[1], bob[1]]
    );
    assert_eq!(lanes().await, [("alice".into(), 0), ("bob".into(), 0)]);
    other.close().await;
    store.close().await;
    db.cleanup().await;
}

/// Claims for `slave` on a task of its own: a claim the test holds up with its locks.
fn claim_in_background(
    store: &std::sync::Arc<Store>,
    slave: &'static str,
) -> tokio::task::JoinHandle<Result<Option<pyti_wire::job::ClaimedTask>, MasterError>> {
    let store = store.clone();
    tokio::spawn(async move { store.try_claim(slave).await })
}

/// Waits until the lease statement of the store named `name` waits for a row lock, and returns
/// its server process; fails after 10 s, saying it never waited for `what`.
async fn waiting_lease(other: &sqlx::PgPool, name: &str, what: &str) -> i32 {
    let waiting = std::time::Instant::now();
    loop {
        let pid: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity \
             WHERE application_name = $1 AND wait_event_type = 'Lock' \
                 AND query LIKE 'WITH claim AS%'",
        )
        .bind(name)
        .fetch_optional(other)
        .await
        .unwrap();
        if let Some(pid) = pid {
            return pid;
        }
        assert!(
            waiting.elapsed() < std::time::Duration::from_secs(10),
            "the claim never waited for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A claim batch's second round fails after its first committed (here the first leased nothing,
/// its lane's task being held, and the connection is ended while the second round's lease waits
/// for a lane): the claim is answered with no task rather than an error or a second try of the
/// whole batch, and nothing of the failed round is kept. The slave claims again and gets both
/// tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_failed_later_claim_round_answers_nothing_and_keeps_nothing() {
    let db = TestDb::postgres().await;
    let (store, name) = named_store(&db, "pyti-round").await;
    let store = std::sync::Arc::new(store);
    let alice = submit(&store, "a==1.0", &["debian-12"], 5, "alice")
        .await
        .task_ids;
    let bob = submit(&store, "b==1.0", &["debian-12"], 5, "bob")
        .await
        .task_ids;
    register(&store, "slave-a", &["debian-12"], 10).await;
    let other = sqlx::PgPool::connect(&db.url).await.expect("connect");
    // Alice's lane is first in line (by name) and its task is held: the first round comes back
    // short. Bob's lane row is held: the second round's lease waits for it.
    let mut holding = other.begin().await.unwrap();
    sqlx::query("SELECT id FROM tasks WHERE submitter = 'alice' FOR UPDATE")
        .execute(&mut *holding)
        .await
        .unwrap();
    sqlx::query("SELECT queued FROM lanes WHERE submitter = 'bob' FOR UPDATE")
        .execute(&mut *holding)
        .await
        .unwrap();
    let claim = claim_in_background(&store, "slave-a");
    let pid = waiting_lease(&other, &name, "bob's lane").await;
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&other)
        .await
        .unwrap();
    assert!(ended, "could not end the claim's connection");
    // Tried again as a whole, the batch would wait for bob's lane until the test let go of it.
    let claimed = tokio::time::timeout(std::time::Duration::from_secs(20), claim)
        .await
        .expect("the claim was not answered when its second round failed")
        .unwrap();
    assert!(
        matches!(claimed, Ok(None)),
        "a failed later round should answer no task and no error: {claimed:?}"
    );
    holding.rollback().await.unwrap();
    let state = |id: i64| {
        let other = other.clone();
        async move {
            let (state, slave): (String, Option<String>) =
                sqlx::query_as("SELECT state, lease_slave FROM tasks WHERE id = $1")
                    .bind(id)
                    .fetch_one(&other)
                    .await
                    .unwrap();
            (state, slave)
        }
    };
    assert_eq!(state(bob[0]).await, ("queued".into(), None));
    assert_eq!(state(alice[0]).await, ("queued".into(), None));
    let (lanes, held): (Vec<i64>, i64) = sqlx::query_as(
        "SELECT ARRAY(SELECT queued FROM lanes ORDER BY submitter), \
             (SELECT held FROM slaves WHERE name = 'slave-a')",
    )
    .fetch_one(&other)
    .await
    .unwrap();
    assert_eq!((lanes, held), (vec![1, 1], 0));
    // The slave claims again: both tasks, once each.
    assert_eq!(claim_all(&store, "slave-a", 2).await, [alice[0], bob[0]]);
    other.close().await;
    store.close().await;
    db.cleanup().await;
}

/// A claim batch reads its slaves' held counts without a lock, and its lease checks them again
/// under the slaves' locks: here another transaction fills the slave's only slot between the
/// two (as another master's batch for the same slave would). The claim gets nothing, and
/// nothing is leased or counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_slave_filled_by_another_batch_gets_no_task() {
    let db = TestDb::postgres().await;
    let (store, name) = named_store(&db, "pyti-filled").await;
    let store = std::sync::Arc::new(store);
    let task_id = submit(&store, "six==1.16.0", &["debian-12"], 5, "alice")
        .await
        .task_ids[0];
    register(&store, "slave-a", &["debian-12"], 1).await;
    let other = sqlx::PgPool::connect(&db.url).await.expect("connect");
    let mut filling = other.begin().await.unwrap();
    sqlx::query("UPDATE slaves SET held = 1 WHERE name = 'slave-a'")
        .execute(&mut *filling)
        .await
        .unwrap();
    let claim = claim_in_background(&store, "slave-a");
    // The claim's read saw a free slot (the update is not committed); its lease waits for the
    // slave's row.
    waiting_lease(&other, &name, "the slave's row").await;
    filling.commit().await.unwrap();
    let claimed = claim.await.unwrap().unwrap();
    assert!(
        claimed.is_none(),
        "a task beyond the slave's slots: {claimed:?}"
    );
    let (state, queued, held): (String, i64, i64) = sqlx::query_as(
        "SELECT (SELECT state FROM tasks WHERE id = $1), \
             (SELECT queued FROM lanes WHERE submitter = 'alice'), \
             (SELECT held FROM slaves WHERE name = 'slave-a')",
    )
    .bind(task_id)
    .fetch_one(&other)
    .await
    .unwrap();
    assert_eq!((state.as_str(), queued, held), ("queued", 1, 1));
    // The slot freed, the task is claimed.
    sqlx::query("UPDATE slaves SET held = 0 WHERE name = 'slave-a'")
        .execute(&other)
        .await
        .unwrap();
    let claimed = store.try_claim("slave-a").await.unwrap();
    assert_eq!(claimed.map(|t| t.task_id), Some(task_id));
    other.close().await;
    store.close().await;
    db.cleanup().await;
}

/// PostgreSQL ends every connection of the store (a server restart or failover, an
/// administrator's `pg_terminate_backend`): the store notices as it next uses each one and takes
/// another, so no claim, report, submission or read fails, and nothing is lost or skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_lost_connections_fail_no_call_and_lose_nothing() {
    let db = TestDb::postgres().await;
    let (store, name) = named_store(&db, "pyti-lost").await;
    // The second task is an upload: its claim reads the bytes on the read pool after commit.
    let content = b"an sdist's bytes".to_vec();
    let mut upload = job("ignored==1", &["debian-12"], 5);
    upload.package = PackageSpec::upload(
        "demo-1.0.tar.gz",
        &hex::encode(sha2::Sha256::digest(&content)),
        &content,
    );
    let mut ids = Vec::new();
    for i in 0..3 {
        let r = if i == 1 {
            store.submit(&upload, "alice", false).await.unwrap()
        } else {
            submit(&store, &format!("pkg{i}==1.0"), &["debian-12"], 5, "alice").await
        };
        ids.extend(r.task_ids);
    }
    register(&store, "slave-a", &["debian-12"], 10).await;
    let first = store.try_claim("slave-a").await.unwrap().expect("a task");
    assert_eq!(first.task_id, ids[0]);

    let admin = sqlx::PgPool::connect(&db.url).await.expect("connect");
    let ended: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(&name)
    .fetch_all(&admin)
    .await
    .unwrap();
    assert!(
        ended.len() >= 2,
        "the store's pool and its claim connection: {ended:?}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    // Had a call failed, it would be retried as a slave or submitter would, and recorded.
    let mut failures: Vec<String> = Vec::new();
    macro_rules! with_retries {
        ($call:expr) => {{
            loop {
                match $call {
                    Ok(value) => break value,
                    Err(e) => {
                        failures.push(e.to_string());
                        assert!(failures.len() <= 4, "no recovery: {failures:#?}");
                    }
                }
            }
        }};
    }
    let second = with_retries!(store.try_claim("slave-a").await).expect("a task");
    assert_eq!(second.task_id, ids[1], "the next task, none skipped");
    assert!(
        matches!(&second.package, PackageSpec::Upload { content_hex, .. } if *content_hex == hex::encode(&content)),
        "the upload's bytes"
    );
    with_retries!(store.report_result(&report(&first, infra("test"))).await);
    let receipt = with_retries!(
        store
            .submit(&job("late==1.0", &["debian-12"], 5), "alice", false)
            .await
    );
    let task = with_retries!(store.get_task(first.task_id).await);
    assert_eq!(task.state, TaskState::Queued, "requeued for attempt 2");
    // Every task is still there, each once: the three queued ones and the late one.
    let mut claimed = vec![second.task_id];
    while let Some(t) = with_retries!(store.try_claim("slave-a").await) {
        claimed.push(t.task_id);
    }
    claimed.sort_unstable();
    let mut expected = vec![ids[0], ids[1], ids[2], receipt.task_ids[0]];
    expected.sort_unstable();
    assert_eq!(claimed, expected);
    assert!(failures.is_empty(), "calls failed: {failures:#?}");
    admin.close().await;
    store.close().await;
    db.cleanup().await;
}

on_both_databases!(
    a_task_goes_from_queued_to_finished_with_its_raw_data,
    a_failing_step_fails_the_task_and_is_not_retried,
    a_guest_timeout_or_a_package_error_ends_the_task_without_a_retry,
    raw_data_larger_than_a_result_file_is_an_error_and_not_kept,
    an_expired_lease_requeues_the_task_with_the_next_attempt,
    a_slave_registering_again_gives_up_the_leases_of_its_earlier_run,
    a_restarted_master_gives_open_leases_a_full_period_before_expiring_them,
    infrastructure_failures_are_retried_up_to_max_attempts,
    a_repeated_report_neither_duplicates_nor_overwrites,
    dispatch_serves_priority_first_then_shares_fairly_between_submitters,
    a_slave_gets_only_its_recipes_and_at_most_its_slots,
    a_claim_finds_its_recipe_behind_lanes_it_cannot_serve,
    upgrading_the_schema_counts_the_leases_slaves_already_hold,
    a_lease_s_attempt_and_log_line_are_written_by_its_first_change,
    a_lease_granted_before_the_upgrade_is_recorded_once,
    a_sweep_ends_expired_leases_lane_by_lane,
    cancelling_a_job_stops_queued_and_running_tasks,
    reopening_the_database_loses_nothing,
    list_jobs_filters_and_compare_finds_regressions,
    compare_shows_the_newest_versions_and_each_cell_s_latest_finished_run,
    an_attempt_s_log_is_bounded_and_read_in_pages,
    many_concurrent_claimers_take_every_task_exactly_once,
    an_uploaded_package_reaches_every_slave_that_claims_its_tasks,
    concurrent_claims_fill_each_slave_to_its_slots_and_no_further,
    heartbeats_renew_only_the_leases_the_slave_lists,
);
