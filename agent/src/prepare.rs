//! The image's `prepare` steps, run once per system disk before "ready".
//!
//! In warm mode they run before the memory snapshot, so every task starts prepared; in cold mode
//! a marker on the system disk (`/var/lib/pyti/prepared`, holding the image key) keeps a
//! re-boot of an already prepared disk from running them again.

use crate::boot;
use crate::step_runner::{run_step, StepContext};
use pyti_wire::guest_task::{PreparePlan, GUEST_STEP_UID, PREPARE_PLAN_PATH, PREPARE_PLAN_SCHEMA};
use pyti_wire::limits;
use std::io::Write;
use std::path::Path;

/// The marker written once every prepare step succeeded.
const PREPARED_MARKER: &str = "/var/lib/pyti/prepared";
/// The plan is a few KiB; the image builder wrote it, but check anyway.
const MAX_PLAN_BYTES: u64 = 1024 * 1024;
/// Bytes of output kept from a failing prepare step in the "ready" detail.
const DETAIL_TAIL_CHARS: usize = 2000;

/// Outcome of preparing: whether it succeeded, and a line saying what happened.
pub struct Prepared {
    pub ok: bool,
    pub detail: String,
    /// The distribution interpreter named by the plan.
    pub interpreter: String,
}

/// Reads the baked plan and runs it unless the marker says this disk is already prepared.
pub fn prepare(drop_privileges: bool) -> Prepared {
    let plan = match read_plan(Path::new(PREPARE_PLAN_PATH)) {
        Ok(plan) => plan,
        Err(detail) => {
            return Prepared {
                ok: false,
                detail,
                interpreter: "/usr/bin/python3".into(),
            }
        }
    };
    let interpreter = plan.interpreter.clone();
    let marker = std::fs::read_to_string(PREPARED_MARKER).unwrap_or_default();
    if marker.trim() == plan.image_key {
        return Prepared {
            ok: true,
            detail: "already prepared (marker found)".into(),
            interpreter,
        };
    }
    for dir in &plan.writable_dirs {
        let given = if drop_privileges {
            boot::give_to(dir, GUEST_STEP_UID)
        } else {
            std::fs::create_dir_all(dir)
        };
        if let Err(e) = given {
            return Prepared {
                ok: false,
                detail: format!("cannot create {dir}: {e}"),
                interpreter,
            };
        }
    }
    let home = plan
        .writable_dirs
        .first()
        .cloned()
        .unwrap_or_else(|| "/tmp".into());
    let ctx = StepContext {
        workdir: Path::new(&home),
        home: &home,
        output_limit: limits::DEFAULT_STEP_OUTPUT_BYTES,
        drop_privileges,
    };
    for step in &plan.steps {
        let raw = run_step(step, &ctx);
        boot::reap_orphans();
        if !raw.outcome.succeeded() {
            let output = format!("{}{}", raw.stderr.head, raw.stderr.tail);
            let skip = output.chars().count().saturating_sub(DETAIL_TAIL_CHARS);
            return Prepared {
                ok: false,
                detail: format!(
                    "prepare step `{}` failed ({:?}): {}",
                    step.name,
                    raw.outcome,
                    output.chars().skip(skip).collect::<String>()
                ),
                interpreter,
            };
        }
    }
    // Everything the steps wrote reaches the disk before the marker says it is there: cold
    // slots power the guest off after "ready" and boot copies of this disk, which skip the
    // steps when they find the marker.
    // SAFETY: plain syscall.
    unsafe { libc::sync() };
    let written = write_marker(&plan.image_key);
    Prepared {
        ok: true,
        detail: match written {
            Ok(()) => format!("{} prepare step(s) succeeded", plan.steps.len()),
            Err(e) => format!("prepare steps succeeded but the marker was not written: {e}"),
        },
        interpreter,
    }
}

fn read_plan(path: &Path) -> Result<PreparePlan, String> {
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("no prepare plan at {}: {e}", path.display()))?;
    if meta.len() > MAX_PLAN_BYTES {
        return Err(format!("prepare plan is {} bytes", meta.len()));
    }
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let plan: PreparePlan =
        serde_json::from_slice(&text).map_err(|e| format!("bad prepare plan: {e}"))?;
    if plan.schema != PREPARE_PLAN_SCHEMA {
        return Err(format!(
            "prepare plan schema {} (agent speaks {PREPARE_PLAN_SCHEMA}); rebuild the image",
            plan.schema
        ));
    }
    Ok(plan)
}

fn write_marker(key: &str) -> std::io::Result<()> {
    let path = Path::new(PREPARED_MARKER);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::File::create(path)?;
    file.write_all(key.as_bytes())?;
    file.sync_all()
}
