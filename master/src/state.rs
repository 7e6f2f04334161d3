//! The task state machine: which transitions exist, in one place.
//!
//! ```text
//! queued ──lease──▶ leased ──start──▶ running
//!   ▲                 │ │               │ │
//!   └─────retry───────┘ └──finish(v)──▶ finished(v)      (retry: tmpfail or lost lease with
//!   └──────────────────────retry────────┘ │                attempts left; attempt + 1)
//! queued/leased/running ──cancel──▶ cancelled
//! ```
//!
//! [`next`] is pure; the backend's `transition::apply` is the only code that writes a task's
//! state, and it asks [`next`] first.

use pyti_wire::job::{AttemptOutcome, TaskState, Verdict};

/// A change requested for a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// A slave takes the task under a lease.
    Lease,
    /// The slave reported progress.
    Start,
    /// The attempt ended with a verdict that stands.
    Finish(Verdict),
    /// The attempt failed for infrastructure reasons and attempts remain: queue it again.
    Retry,
    /// The job was cancelled.
    Cancel,
}

/// Why a transition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {from} task cannot {transition:?}")]
pub struct IllegalTransition {
    pub from: TaskState,
    pub transition: Transition,
}

/// The state after `transition`, or why it is not allowed from `from`.
pub fn next(from: TaskState, transition: Transition) -> Result<TaskState, IllegalTransition> {
    use TaskState::*;
    use Transition as T;
    let to = match (from, transition) {
        (Queued, T::Lease) => Leased,
        (Leased | Running, T::Start) => Running,
        (Leased | Running, T::Finish(v)) => Finished(v),
        (Leased | Running, T::Retry) => Queued,
        (Queued | Leased | Running, T::Cancel) => Cancelled,
        _ => return Err(IllegalTransition { from, transition }),
    };
    Ok(to)
}

/// What an infrastructure failure of attempt `attempt` (1-based) leads to.
pub fn after_infrastructure_failure(attempt: u32, max_attempts: u32) -> Transition {
    if attempt < max_attempts {
        Transition::Retry
    } else {
        Transition::Finish(Verdict::Tmpfail)
    }
}

/// The database form of a state: `(state, verdict)`.
pub fn to_db(state: TaskState) -> (&'static str, Option<&'static str>) {
    match state {
        TaskState::Finished(v) => ("finished", Some(v.as_str())),
        other => (other.name(), None),
    }
}

/// Inverse of [`to_db`]; `None` for values no pyti version writes.
pub fn from_db(state: &str, verdict: Option<&str>) -> Option<TaskState> {
    Some(match (state, verdict) {
        ("queued", None) => TaskState::Queued,
        ("leased", None) => TaskState::Leased,
        ("running", None) => TaskState::Running,
        ("cancelled", None) => TaskState::Cancelled,
        ("finished", Some(v)) => TaskState::Finished(Verdict::parse(v)?),
        _ => return None,
    })
}

/// The database form of how an attempt ended.
pub fn outcome_to_db(outcome: AttemptOutcome) -> &'static str {
    match outcome {
        AttemptOutcome::Verdict(v) => v.as_str(),
        AttemptOutcome::LeaseExpired => "lease_expired",
        AttemptOutcome::Cancelled => "cancelled",
    }
}

/// Inverse of [`outcome_to_db`].
pub fn outcome_from_db(text: &str) -> Option<AttemptOutcome> {
    match text {
        "lease_expired" => Some(AttemptOutcome::LeaseExpired),
        "cancelled" => Some(AttemptOutcome::Cancelled),
        v => Verdict::parse(v).map(AttemptOutcome::Verdict),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskState::*;

    const ALL_STATES: [TaskState; 6] = [
        Queued,
        Leased,
        Running,
        Finished(Verdict::Pass),
        Finished(Verdict::Tmpfail),
        Cancelled,
    ];

    #[test]
    fn happy_path_runs_queued_to_finished() {
        let s = next(Queued, Transition::Lease).unwrap();
        let s = next(s, Transition::Start).unwrap();
        let s = next(s, Transition::Start).unwrap();
        assert_eq!(
            next(s, Transition::Finish(Verdict::Fail)),
            Ok(Finished(Verdict::Fail))
        );
    }

    #[test]
    fn finished_and_cancelled_tasks_never_change() {
        for from in [
            Finished(Verdict::Pass),
            Finished(Verdict::Tmpfail),
            Cancelled,
        ] {
            for t in [
                Transition::Lease,
                Transition::Start,
                Transition::Finish(Verdict::Pass),
                Transition::Retry,
                Transition::Cancel,
            ] {
                assert!(next(from, t).is_err(), "{from} accepted {t:?}");
            }
        }
    }

    #[test]
    fn queued_tasks_can_only_be_leased_or_cancelled() {
        assert!(next(Queued, Transition::Start).is_err());
        assert!(next(Queued, Transition::Finish(Verdict::Pass)).is_err());
        assert!(next(Queued, Transition::Retry).is_err());
        assert_eq!(next(Queued, Transition::Cancel), Ok(Cancelled));
        assert!(next(Leased, Transition::Lease).is_err());
    }

    #[test]
    fn retry_requeues_until_attempts_run_out() {
        assert_eq!(after_infrastructure_failure(1, 3), Transition::Retry);
        assert_eq!(after_infrastructure_failure(2, 3), Transition::Retry);
        assert_eq!(
            after_infrastructure_failure(3, 3),
            Transition::Finish(Verdict::Tmpfail)
        );
        assert_eq!(next(Running, Transition::Retry), Ok(Queued));
    }

    #[test]
    fn database_form_round_trips() {
        for s in ALL_STATES {
            let (state, verdict) = to_db(s);
            assert_eq!(from_db(state, verdict), Some(s));
        }
        assert_eq!(from_db("finished", None), None);
        assert_eq!(from_db("queued", Some("pass")), None);
        assert_eq!(from_db("bogus", None), None);
    }
}
