//! `GET /metrics`: Prometheus text with queue depth per state, the master's counters and the
//! claim latency histogram.

use crate::error::MasterError;
use crate::store::Store;
use pyti_wire::job::TaskState;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds, in seconds, of the claim latency histogram's buckets (the last one, `+Inf`,
/// is implied). The benchmark's targets, a 2 ms median and a 20 ms p99, are bounds.
const CLAIM_BUCKETS: [f64; 10] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 2.0];

/// A Prometheus histogram of durations over [`CLAIM_BUCKETS`], updated without locks.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last is beyond every bound.
    counts: [AtomicU64; CLAIM_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Counts one observation of `took`.
    pub fn observe(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let bucket = CLAIM_BUCKETS
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(CLAIM_BUCKETS.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Appends the histogram as `name` (`_bucket` lines with cumulative counts, `_sum`, `_count`).
    fn render(&self, name: &str, help: &str, out: &mut String) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        let bounds = CLAIM_BUCKETS.iter().map(|b| b.to_string());
        for (count, bound) in self.counts.iter().zip(bounds.chain(["+Inf".to_string()])) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

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
    c.claim_latency.render(
        "pyti_claim_seconds",
        "Time from a slave's claim reaching the master to its answer (a task or none; one \
         round of a long poll).",
        &mut out,
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::Histogram;
    use std::time::Duration;

    #[test]
    fn a_histogram_counts_each_observation_in_its_bucket_and_cumulates() {
        let h = Histogram::default();
        for micros in [100, 500, 1_500, 1_500, 30_000, 5_000_000] {
            h.observe(Duration::from_micros(micros));
        }
        let mut out = String::new();
        h.render("x_seconds", "help", &mut out);
        let value = |line: &str| -> f64 {
            out.lines()
                .find_map(|l| l.strip_prefix(line))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no `{line}` in\n{out}"))
        };
        assert_eq!(
            value("x_seconds_bucket{le=\"0.0005\"}"),
            2.0,
            "a bound is inclusive"
        );
        assert_eq!(value("x_seconds_bucket{le=\"0.001\"}"), 2.0);
        assert_eq!(value("x_seconds_bucket{le=\"0.002\"}"), 4.0);
        assert_eq!(value("x_seconds_bucket{le=\"0.05\"}"), 5.0);
        assert_eq!(value("x_seconds_bucket{le=\"2\"}"), 5.0);
        assert_eq!(value("x_seconds_bucket{le=\"+Inf\"}"), 6.0);
        assert_eq!(value("x_seconds_count"), 6.0);
        assert!((value("x_seconds_sum") - 5.0336).abs() < 1e-9, "{out}");
        assert!(out.contains("# TYPE x_seconds histogram"));
    }
}
