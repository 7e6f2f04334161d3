//! Showing a job's results: tables for people, JSON for programs, JUnit XML for CI systems.

use comfy_table::{Cell, Color, Table};
use pyti_wire::job::{Comparison, Job, Task, TaskState, Verdict};
use pyti_wire::raw_data::{RawResult, StepOutcome};
use serde::Serialize;
use std::fmt::Write as _;

/// A job with each task's full record (attempts with raw data).
#[derive(Debug, Serialize)]
pub struct JobResults {
    pub job: Job,
    pub tasks: Vec<Task>,
}

impl JobResults {
    /// The exit code `pyti run` and `pyti results` end with: 0 all passed, 1 any failed, 2 an
    /// infrastructure error (or tasks not finished).
    pub fn exit_code(&self) -> u8 {
        let verdicts: Vec<Option<Verdict>> = self.tasks.iter().map(|t| verdict(t.state)).collect();
        if verdicts
            .iter()
            .any(|v| matches!(v, None | Some(Verdict::Tmpfail)))
        {
            2
        } else if verdicts.iter().all(|v| *v == Some(Verdict::Pass)) {
            0
        } else {
            1
        }
    }
}

fn verdict(state: TaskState) -> Option<Verdict> {
    match state {
        TaskState::Finished(v) => Some(v),
        _ => None,
    }
}

/// The raw data of a task's last attempt that produced any.
pub fn last_raw(task: &Task) -> Option<&RawResult> {
    task.attempts
        .iter()
        .rev()
        .find_map(|a| a.raw_result.as_ref())
}

fn outcome_text(outcome: &StepOutcome) -> String {
    match outcome {
        StepOutcome::Exited { code } => format!("exit {code}"),
        StepOutcome::Signaled { signal } => format!("signal {signal}"),
        StepOutcome::TimedOut => "timed out".into(),
        StepOutcome::NotStarted { reason } => format!("not started: {reason}"),
        StepOutcome::Skipped => "skipped".into(),
    }
}

fn state_cell(state: TaskState) -> Cell {
    let text = match state {
        TaskState::Finished(v) => v.as_str().to_string(),
        other => other.name().to_string(),
    };
    let color = match state {
        TaskState::Finished(Verdict::Pass) => Color::Green,
        TaskState::Finished(Verdict::Tmpfail) | TaskState::Cancelled => Color::Yellow,
        TaskState::Finished(_) => Color::Red,
        _ => Color::Reset,
    };
    Cell::new(text).fg(color)
}

/// A package's comparison: one row per recipe, one column per version (in submission order),
/// each cell the latest verdict (`unfinished` while its task runs, empty where the version did
/// not run on the recipe); a cell that regressed from the version before says so.
pub fn compare_table(comparison: &Comparison) -> Table {
    let mut table = super::new_table();
    let mut header = vec!["recipe".to_string()];
    header.extend(comparison.versions.iter().cloned());
    table.set_header(header);
    for recipe in &comparison.recipes {
        let mut row = vec![Cell::new(recipe)];
        for version in &comparison.versions {
            let cell = comparison
                .cells
                .iter()
                .find(|c| &c.recipe == recipe && &c.version == version);
            row.push(match cell {
                None => Cell::new(""),
                Some(c) => match c.verdict {
                    None => Cell::new("unfinished"),
                    Some(v)
                        if comparison
                            .regressions
                            .iter()
                            .any(|r| &r.recipe == recipe && &r.to_version == version) =>
                    {
                        Cell::new(format!("{v} (regressed)")).fg(Color::Red)
                    }
                    Some(v) => state_cell(TaskState::Finished(v)),
                },
            });
        }
        table.add_row(row);
    }
    table
}

/// One row per task: recipe, status, per-step exit codes and times, attempts.
pub fn summary_table(results: &JobResults) -> Table {
    let mut table = super::new_table();
    table.set_header([
        "task",
        "recipe",
        "status",
        "steps (outcome, wall time)",
        "attempts",
        "why",
    ]);
    for task in &results.tasks {
        let steps = last_raw(task)
            .map(|raw| {
                raw.steps
                    .iter()
                    .map(|s| {
                        format!(
                            "{}: {} ({:.1} s)",
                            s.name,
                            outcome_text(&s.outcome),
                            s.wall_secs
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_else(|| "-".into());
        let why = task
            .attempts
            .last()
            .and_then(|a| a.reason.clone())
            .unwrap_or_default();
        table.add_row(vec![
            Cell::new(task.id),
            Cell::new(&task.recipe),
            state_cell(task.state),
            Cell::new(steps),
            Cell::new(task.attempts.len()),
            Cell::new(clip(&why, 200)),
        ]);
    }
    table
}

/// Per-step detail of one task: times, CPU, memory, and the tail of the output of failed steps.
pub fn step_details(task: &Task) -> String {
    let Some(raw) = last_raw(task) else {
        return format!("task {} ({}): no raw data\n", task.id, task.recipe);
    };
    let mut out = format!(
        "task {} ({}): agent {}, kernel {}, {}\n",
        task.id, task.recipe, raw.agent_version, raw.guest_kernel, raw.interpreter_version
    );
    let mut table = super::new_table();
    table.set_header([
        "step",
        "outcome",
        "wall s",
        "user s",
        "sys s",
        "max RSS MiB",
        "stdout",
        "stderr",
    ]);
    for s in &raw.steps {
        table.add_row([
            s.name.clone(),
            outcome_text(&s.outcome),
            format!("{:.2}", s.wall_secs),
            format!("{:.2}", s.user_cpu_secs),
            format!("{:.2}", s.system_cpu_secs),
            format!("{:.1}", s.max_rss_kib as f64 / 1024.0),
            format!("{} B", s.stdout.total_bytes),
            format!("{} B", s.stderr.total_bytes),
        ]);
    }
    let _ = writeln!(out, "{table}");
    for s in raw
        .steps
        .iter()
        .filter(|s| !s.outcome.succeeded() && s.outcome != StepOutcome::Skipped)
    {
        for (name, stream) in [("stdout", &s.stdout), ("stderr", &s.stderr)] {
            let text = if stream.tail.is_empty() {
                &stream.head
            } else {
                &stream.tail
            };
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            if !tail.is_empty() {
                let _ = writeln!(out, "--- {} {name} (last lines) ---", s.name);
                for line in tail.into_iter().rev() {
                    let _ = writeln!(out, "{line}");
                }
            }
        }
    }
    out
}

fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(max).collect::<String>())
    }
}

fn xml_escape(text: &str) -> String {
    text.chars()
        .filter(|c| matches!(c, '\t' | '\n' | '\r') || !c.is_control())
        .fold(String::new(), |mut s, c| {
            match c {
                '&' => s.push_str("&amp;"),
                '<' => s.push_str("&lt;"),
                '>' => s.push_str("&gt;"),
                '"' => s.push_str("&quot;"),
                '\'' => s.push_str("&apos;"),
                c => s.push(c),
            }
            s
        })
}

/// JUnit XML: one test suite per task (recipe), one test case per step.
pub fn junit(results: &JobResults) -> String {
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(xml, "<testsuites name=\"pyti job {}\">", results.job.id);
    for task in &results.tasks {
        let package = xml_escape(&task.package.to_string());
        let steps = last_raw(task)
            .map(|r| r.steps.as_slice())
            .unwrap_or_default();
        let failures = steps
            .iter()
            .filter(|s| !s.outcome.succeeded() && s.outcome != StepOutcome::Skipped)
            .count();
        let skipped = steps
            .iter()
            .filter(|s| s.outcome == StepOutcome::Skipped)
            .count();
        let time: f64 = steps.iter().map(|s| s.wall_secs).sum();
        let _ = writeln!(
            xml,
            "  <testsuite name=\"{package} on {}\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\" errors=\"{}\" time=\"{time:.3}\">",
            xml_escape(&task.recipe),
            steps.len().max(1),
            usize::from(steps.is_empty()),
        );
        if steps.is_empty() {
            let why = task
                .attempts
                .last()
                .and_then(|a| a.reason.clone())
                .unwrap_or_else(|| task.state.to_string());
            let _ = writeln!(
                xml,
                "    <testcase name=\"task\" classname=\"{}\"><error message=\"{}\"/></testcase>",
                xml_escape(&task.recipe),
                xml_escape(&why)
            );
        }
        for s in steps {
            let _ = write!(
                xml,
                "    <testcase name=\"{}\" classname=\"{}\" time=\"{:.3}\">",
                xml_escape(&s.name),
                xml_escape(&task.recipe),
                s.wall_secs
            );
            match &s.outcome {
                StepOutcome::Skipped => xml.push_str("<skipped/>"),
                o if !o.succeeded() => {
                    let _ = write!(
                        xml,
                        "<failure message=\"{}\">{}</failure>",
                        xml_escape(&outcome_text(o)),
                        xml_escape(&clip(&s.stderr.tail_or_head(), 8192))
                    );
                }
                _ => {}
            }
            let _ = writeln!(
                xml,
                "<system-out>{}</system-out></testcase>",
                xml_escape(&clip(&s.stdout.tail_or_head(), 8192))
            );
        }
        xml.push_str("  </testsuite>\n");
    }
    xml.push_str("</testsuites>\n");
    xml
}

trait TailOrHead {
    fn tail_or_head(&self) -> String;
}

impl TailOrHead for pyti_wire::raw_data::CapturedOutput {
    fn tail_or_head(&self) -> String {
        if self.tail.is_empty() {
            self.head.clone()
        } else {
            self.tail.clone()
        }
    }
}
