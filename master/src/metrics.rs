//! `GET /metrics`: Prometheus text with queue depth per state and the master's counters.

use crate::error::MasterError;
use crate::store::Store;
use pyti_wire::job::TaskState;
use std::fmt::Write;
use std::sync::atomic::Ordering;

/// Renders the metrics page.
pub async fn render(store: &Store) -> Result<String, MasterError> {
    let counts = store.state_counts().await?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP pyti_tasks Tasks by state (finished tasks also by verdict)."
    );
    let _ = writeln!(out, "# TYPE pyti_tasks gauge");
    for name in ["queued", "leased", "running", "cancelled"] {
        let n: i64 = counts
            .iter()
            .filter(|(s, _)| s.name() == name)
            .map(|(_, n)| n)
            .sum();
        let _ = writeln!(out, "pyti_tasks{{state=\"{name}\"}} {n}");
    }
    for verdict in pyti_wire::job::Verdict::ALL {
        let n: i64 = counts
            .iter()
            .filter(|(s, _)| *s == TaskState::Finished(verdict))
            .map(|(_, n)| n)
            .sum();
        let _ = writeln!(
            out,
            "pyti_tasks{{state=\"finished\",verdict=\"{verdict}\"}} {n}"
        );
    }
    let c = &store.counters;
    for (name, help, value) in [
        (
            "pyti_jobs_submitted_total",
            "Jobs submitted through this master.",
            &c.submitted_jobs,
        ),
        ("pyti_claims_total", "Tasks handed to slaves.", &c.claims),
        (
            "pyti_empty_claims_total",
            "Claim attempts that found no task.",
            &c.empty_claims,
        ),
        ("pyti_reports_total", "Result reports received.", &c.reports),
        (
            "pyti_duplicate_reports_total",
            "Result reports that repeated a recorded one.",
            &c.duplicate_reports,
        ),
        (
            "pyti_expired_leases_total",
            "Leases that ran out (task requeued or given up).",
            &c.expired_leases,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
    }
    Ok(out)
}
