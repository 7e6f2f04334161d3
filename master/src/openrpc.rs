//! The OpenRPC document served by `rpc.discover`: every method, its parameters, its result and
//! who may call it. Types are described by name; their fields are the serde forms in
//! `pyti_wire::job`.

use serde_json::{json, Value};

/// One method: `(name, summary, roles, [(param, type)], result type)`.
type MethodDoc = (
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    &'static str,
);

const METHODS: &[MethodDoc] = &[
    ("submit_job", "Queue a job: one task per recipe.", "submitter, admin", &[("spec", "JobSpec")], "SubmitReceipt"),
    ("cancel_job", "Cancel a job: queued tasks at once, running ones via their slaves.", "submitter (own jobs), admin", &[("job_id", "integer")], "CancelReceipt"),
    ("register", "Announce a slave's recipes and slots, once per run: leases an earlier run of the same slave still holds are given up and their tasks requeued.", "slave, admin", &[("registration", "SlaveRegistration")], "RegistrationReply"),
    ("heartbeat", "Renew the leases of the tasks the slave lists as held (all under its name if it lists none); lists tasks to stop, including listed ones no longer leased to it.", "slave, admin", &[("slave", "string"), ("held", "integer[]?")], "HeartbeatReply"),
    ("claim", "Long-poll for a task of a registered recipe; null when none came in time.", "slave, admin", &[("request", "ClaimRequest")], "ClaimedTask | null"),
    ("report_progress", "A phase event; the first marks the task running. Refused once the attempt has 200 log lines.", "slave, admin", &[("report", "ProgressReport")], "null"),
    ("report_result", "The raw-data API: how an attempt ended. Idempotent per attempt.", "slave, admin", &[("report", "ResultReport")], "ReportReceipt"),
    ("get_job", "A job with its tasks.", "reader, submitter, admin", &[("job_id", "integer")], "Job"),
    ("list_jobs", "Jobs matching a filter, newest first.", "reader, submitter, admin", &[("filter", "JobFilter")], "Job[]"),
    ("get_task", "A task with every attempt and its raw data.", "reader, submitter, admin", &[("task_id", "integer")], "Task"),
    ("task_log", "A task's progress events and state changes, oldest first: at most 1,000 lines from line `from_line` (0-based); a shorter page is the last.", "reader, submitter, admin", &[("task_id", "integer"), ("from_line", "integer?")], "LogEntry[]"),
    ("compare", "A package's verdicts across its newest versions (`limit`, default 50, at most 500) and recipes, and regressions.", "reader, submitter, admin", &[("request", "CompareRequest")], "Comparison"),
    ("subscribe_events", "WebSocket subscription (notifications `event`, unsubscribe `unsubscribe_events`); always ends with an `end` event.", "reader, submitter, admin", &[("filter", "EventFilter")], "Event (stream)"),
    ("rpc.discover", "This document.", "anyone", &[], "OpenRPC document"),
];

/// The document.
pub fn document() -> Value {
    let methods: Vec<Value> = METHODS
        .iter()
        .map(|(name, summary, roles, params, result)| {
            json!({
                "name": name,
                "summary": summary,
                "description": format!("Roles: {roles}. Authorization: Bearer token."),
                "paramStructure": "either",
                // A type ending in `?` marks an optional parameter.
                "params": params.iter().map(|(p, ty)| json!({
                    "name": p,
                    "required": !ty.ends_with('?'),
                    "schema": { "title": ty.trim_end_matches('?') },
                })).collect::<Vec<_>>(),
                "result": { "name": "result", "schema": { "title": result } },
            })
        })
        .collect();
    json!({
        "openrpc": "1.2.6",
        "info": {
            "title": "pyti master",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Queue Python package tests on recipes; slaves claim tasks and report raw data.",
        },
        "methods": methods,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_lists_every_method_once() {
        let doc = super::document();
        let names: Vec<&str> = doc["methods"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        let unique: std::collections::HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
        assert!(names.contains(&"report_result") && names.contains(&"rpc.discover"));
    }
}
