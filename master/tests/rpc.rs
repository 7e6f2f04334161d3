//! The JSON-RPC API over a real HTTP/WebSocket port: auth per role, validation errors naming the
//! field, a whole task through the wire, the event stream's final event, /health and /metrics.

mod common;

use common::{job, passing, TestDb};
use jsonrpsee::core::client::{ClientT, Error as ClientError};
use jsonrpsee::http_client::{HeaderMap, HeaderValue, HttpClient, HttpClientBuilder};
use jsonrpsee::rpc_params;
use jsonrpsee::ws_client::{WsClient, WsClientBuilder};
use pyti_master::{tokens, Master, MasterConfig, Role};
use pyti_wire::job::{
    ClaimRequest, Event, EventFilter, JobFilter, PackageSpec, ProgressReport, ReportOutcome,
    ResultReport, SlaveRegistration, TaskState, Verdict,
};
use pyti_wire::rpc::{codes, PytiApiClient};
use std::collections::HashMap;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Running {
    addr: SocketAddr,
    tokens: HashMap<Role, String>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<()>,
    _db: TestDb,
}

impl Running {
    async fn start() -> Running {
        let db = TestDb::sqlite();
        let config = MasterConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            database_url: db.url.clone(),
            max_request_bytes: 1024 * 1024,
            ..MasterConfig::default()
        };
        let master = Master::open_with_recipes(config, common::recipes())
            .await
            .unwrap();
        let mut tokens_by_role = HashMap::new();
        for role in Role::ALL {
            let token = tokens::add(master.store(), &format!("{role}-1"), role)
                .await
                .unwrap();
            tokens_by_role.insert(role, token);
        }
        let addr = master.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(async move {
            master
                .serve(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Running {
            addr,
            tokens: tokens_by_role,
            stop: Some(stop),
            served,
            _db: db,
        }
    }

    fn http(&self, token: Option<&str>) -> HttpClient {
        let mut headers = HeaderMap::new();
        if let Some(t) = token {
            headers.insert(
                "Authorization",
                HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
            );
        }
        HttpClientBuilder::default()
            .set_headers(headers)
            .max_request_size(64 * 1024 * 1024)
            .build(format!("http://{}/rpc", self.addr))
            .unwrap()
    }

    fn as_role(&self, role: Role) -> HttpClient {
        self.http(Some(&self.tokens[&role]))
    }

    async fn ws(&self, role: Role) -> WsClient {
        let mut headers = HeaderMap::new();
        let value = format!("Bearer {}", self.tokens[&role]);
        headers.insert("Authorization", HeaderValue::from_str(&value).unwrap());
        WsClientBuilder::default()
            .set_headers(headers)
            .build(format!("ws://{}/", self.addr))
            .await
            .unwrap()
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(std::time::Duration::from_secs(10), &mut self.served)
            .await
            .expect("master stops within 10 s")
            .unwrap();
    }
}

fn code(e: &ClientError) -> i32 {
    match e {
        ClientError::Call(obj) => obj.code(),
        other => panic!("expected a JSON-RPC error, got {other:?}"),
    }
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_checks_the_callers_role_and_refusals_change_nothing() {
    let m = Running::start().await;
    let spec = job("six==1.16.0", &["debian-12"], 5);
    let admin = m.as_role(Role::Admin);

    // No token, an unknown token, and the wrong roles: refused, nothing stored.
    let anonymous = m.http(None);
    let e = anonymous.submit_job(spec.clone()).await.unwrap_err();
    assert_eq!(code(&e), codes::UNAUTHENTICATED);
    let forged = m.http(Some("pyti_0000"));
    assert_eq!(
        code(&forged.submit_job(spec.clone()).await.unwrap_err()),
        codes::UNAUTHENTICATED
    );
    for role in [Role::Reader, Role::Slave] {
        let e = m.as_role(role).submit_job(spec.clone()).await.unwrap_err();
        assert_eq!(code(&e), codes::FORBIDDEN, "{role} submitted");
    }
    assert!(
        admin
            .list_jobs(JobFilter::default())
            .await
            .unwrap()
            .is_empty(),
        "refused calls stored nothing"
    );

    // Submitters submit; slaves cannot read; readers and submitters cannot claim.
    let receipt = m
        .as_role(Role::Submitter)
        .submit_job(spec.clone())
        .await
        .unwrap();
    assert_eq!(
        code(
            &m.as_role(Role::Slave)
                .get_job(receipt.job_id)
                .await
                .unwrap_err()
        ),
        codes::FORBIDDEN
    );
    let reg = SlaveRegistration {
        name: "s1".into(),
        recipes: vec!["debian-12".into()],
        slots: 1,
    };
    for role in [Role::Reader, Role::Submitter] {
        assert_eq!(
            code(&m.as_role(role).register(reg.clone()).await.unwrap_err()),
            codes::FORBIDDEN
        );
        let claim = ClaimRequest {
            slave: "s1".into(),
            wait_secs: 0,
        };
        assert_eq!(
            code(&m.as_role(role).claim(claim).await.unwrap_err()),
            codes::FORBIDDEN
        );
    }
    assert_eq!(
        m.as_role(Role::Reader)
            .get_job(receipt.job_id)
            .await
            .unwrap()
            .tasks[0]
            .state,
        TaskState::Queued
    );
    // A submitter may not cancel someone else's job; an admin may.
    let other = m.as_role(Role::Admin);
    let mut theirs = spec.clone();
    theirs.submitter = Some("carol".into());
    let carol_job = other.submit_job(theirs).await.unwrap();
    let e = m
        .as_role(Role::Submitter)
        .cancel_job(carol_job.job_id)
        .await
        .unwrap_err();
    assert_eq!(code(&e), codes::INVALID_FIELD);
    assert_eq!(
        admin.cancel_job(carol_job.job_id).await.unwrap().cancelled,
        1
    );

    // A revoked token stops working (after the auth cache's lifetime).
    let store = pyti_master::Store::open_admin(&m._db.url).await.unwrap();
    assert!(tokens::revoke(&store, "reader-1").await.unwrap());
    let listed = tokens::list(&store).await.unwrap();
    assert!(listed
        .iter()
        .any(|t| t.name == "reader-1" && t.revoked_at_ms.is_some()));
    store.close().await;
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_an_error_naming_the_field() {
    let m = Running::start().await;
    let submitter = m.as_role(Role::Submitter);
    let mut spec = job("six==1.16.0", &["debian-12", "no-such-recipe"], 5);
    let e = submitter.submit_job(spec.clone()).await.unwrap_err();
    assert_eq!(code(&e), codes::INVALID_FIELD);
    let ClientError::Call(obj) = &e else {
        unreachable!()
    };
    assert_eq!(
        obj.data().map(|d| d.get()),
        Some(r#"{"field":"recipes[1]"}"#)
    );
    assert!(
        obj.message().contains("no-such-recipe"),
        "{}",
        obj.message()
    );
    spec.recipes = vec!["debian-12".into()];
    spec.priority = 0;
    let e = submitter.submit_job(spec).await.unwrap_err();
    let ClientError::Call(obj) = &e else {
        unreachable!()
    };
    assert_eq!(obj.data().map(|d| d.get()), Some(r#"{"field":"priority"}"#));

    // Unknown fields and wrong types are refused by the schema.
    let raw: Result<serde_json::Value, _> = submitter
        .request("submit_job", rpc_params![serde_json::json!({"package": {"kind": "pypi", "name": "x", "version": "1"}, "recipes": ["debian-12"], "evil": 1})])
        .await;
    assert!(raw.is_err());

    // A request above the size limit (1 MiB in this test) is refused before parsing.
    let big = vec![7u8; 2 * 1024 * 1024];
    let sha = "0".repeat(64);
    let mut spec = job("six==1.16.0", &["debian-12"], 5);
    spec.package = PackageSpec::upload("big-1.0.tar.gz", &sha, &big);
    let e = submitter.submit_job(spec).await.unwrap_err();
    // jsonrpsee answers 413 and closes: the client sees a broken pipe, or error -32007.
    let refused = matches!(e, ClientError::Transport(_))
        || matches!(e, ClientError::Call(ref o) if o.code() == jsonrpsee::types::error::OVERSIZED_REQUEST_CODE);
    assert!(refused, "{e:?}");
    assert!(m
        .as_role(Role::Admin)
        .list_jobs(JobFilter::default())
        .await
        .unwrap()
        .is_empty());
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_travels_the_wire_and_subscribers_get_a_final_event() {
    let m = Running::start().await;
    let receipt = m
        .as_role(Role::Submitter)
        .submit_job(job("six==1.16.0", &["debian-12"], 5))
        .await
        .unwrap();

    let ws = m.ws(Role::Reader).await;
    let mut events = ws
        .subscribe_events(EventFilter {
            job_id: Some(receipt.job_id),
        })
        .await
        .unwrap();

    let slave = m.as_role(Role::Slave);
    let reply = slave
        .register(SlaveRegistration {
            name: "s1".into(),
            recipes: vec!["debian-12".into(), "unknown".into()],
            slots: 1,
        })
        .await
        .unwrap();
    assert_eq!(reply.unknown_recipes, ["unknown"]);
    // A long poll returns as soon as there is work (here: already queued).
    let task = slave
        .claim(ClaimRequest {
            slave: "s1".into(),
            wait_secs: 5,
        })
        .await
        .unwrap()
        .expect("a task");
    slave
        .report_progress(ProgressReport {
            task_id: task.task_id,
            attempt: task.attempt,
            lease_id: task.lease_id.clone(),
            phase: "installing".into(),
            message: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(slave.heartbeat("s1".into(), None).await.unwrap().renewed, 1);
    let report = ResultReport {
        task_id: task.task_id,
        attempt: task.attempt,
        lease_id: task.lease_id.clone(),
        outcome: ReportOutcome::Raw {
            result: passing(task.task_id, &task.recipe),
        },
    };
    assert_eq!(
        slave.report_result(report.clone()).await.unwrap().state,
        TaskState::Finished(Verdict::Pass)
    );
    assert!(slave.report_result(report).await.unwrap().duplicate);

    let mut seen = Vec::new();
    loop {
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), events.next())
            .await
            .expect("events keep coming until the final one")
            .expect("stream open")
            .unwrap();
        let end = matches!(next, Event::End { .. });
        seen.push(next);
        if end {
            break;
        }
    }
    let states: Vec<TaskState> = seen
        .iter()
        .filter_map(|e| match e {
            Event::TaskChanged { state, .. } => Some(*state),
            _ => None,
        })
        .collect();
    assert_eq!(
        states,
        [
            TaskState::Leased,
            TaskState::Running,
            TaskState::Finished(Verdict::Pass)
        ]
    );

    // Subscribing to a finished job ends at once, with the final event.
    let mut done = ws
        .subscribe_events(EventFilter {
            job_id: Some(receipt.job_id),
        })
        .await
        .unwrap();
    assert!(matches!(done.next().await, Some(Ok(Event::End { .. }))));

    let reader = m.as_role(Role::Reader);
    let t = reader.get_task(task.task_id).await.unwrap();
    assert_eq!(t.attempts.len(), 1);
    assert!(reader
        .task_log(task.task_id, None)
        .await
        .unwrap()
        .iter()
        .any(|l| l.phase == "installing"));
    let doc = m.http(None).discover().await.unwrap();
    assert_eq!(doc["openrpc"], "1.2.6");

    let health = http_get(m.addr, "/health").await;
    assert!(
        health.starts_with("HTTP/1.1 200") && health.ends_with("ok\n"),
        "{health}"
    );
    let metrics = http_get(m.addr, "/metrics").await;
    assert!(
        metrics.contains("pyti_tasks{state=\"finished\",verdict=\"pass\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("pyti_claims_total 1"), "{metrics}");
    // Every claim round counted once in the latency histogram, the task's claim among them.
    let claim_rounds: u64 = ["pyti_claims_total ", "pyti_empty_claims_total "]
        .iter()
        .filter_map(|name| metrics.lines().find_map(|l| l.strip_prefix(name)))
        .map(|n| n.parse::<u64>().unwrap())
        .sum();
    assert!(
        claim_rounds >= 1
            && metrics.contains(&format!("pyti_claim_seconds_count {claim_rounds}"))
            && metrics.contains(&format!(
                "pyti_claim_seconds_bucket{{le=\"+Inf\"}} {claim_rounds}"
            )),
        "{metrics}"
    );
    assert!(
        metrics.contains("pyti_duplicate_reports_total 1"),
        "{metrics}"
    );
    m.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_master_ends_subscriptions_with_a_final_event() {
    let m = Running::start().await;
    let ws = m.ws(Role::Reader).await;
    let mut events = ws.subscribe_events(EventFilter::default()).await.unwrap();
    let waiting = tokio::spawn(async move { events.next().await });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    m.stop().await;
    let last = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(last, Some(Ok(Event::End { .. }))), "{last:?}");
}
