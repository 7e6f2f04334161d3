//! SIGKILL the master process mid-run and start it again on the same database: no job, lease or
//! result is lost. The master runs in a child process (this test binary re-executed with
//! `PYTI_MASTER_CHILD_DB` set, entering `child_master_entry_point`).

mod common;

use jsonrpsee::http_client::{HeaderMap, HeaderValue, HttpClient, HttpClientBuilder};
use pyti_master::{tokens, Master, MasterConfig, Role, Store};
use pyti_wire::job::{
    ClaimRequest, JobFilter, ReportOutcome, ResultReport, SlaveRegistration, TaskState, Verdict,
};
use pyti_wire::rpc::PytiApiClient;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const CHILD_DB: &str = "PYTI_MASTER_CHILD_DB";
const CHILD_PORT_FILE: &str = "PYTI_MASTER_CHILD_PORT_FILE";

/// Not a test of its own: the child process's `main`. Does nothing unless started by
/// `real_sigkill_of_the_master_loses_no_job_or_result`.
#[tokio::test]
async fn child_master_entry_point() {
    let (Ok(db), Ok(port_file)) = (std::env::var(CHILD_DB), std::env::var(CHILD_PORT_FILE)) else {
        return;
    };
    let config = MasterConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: db,
        recipes_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes"),
        ..MasterConfig::default()
    };
    let master = Master::open(config).await.expect("child master opens");
    let tmp = format!("{port_file}.tmp");
    std::fs::write(&tmp, master.local_addr().to_string()).unwrap();
    std::fs::rename(&tmp, &port_file).unwrap();
    master.serve(std::future::pending()).await.unwrap();
}

struct ChildMaster {
    child: Child,
    addr: String,
}

impl Drop for ChildMaster {
    /// A failing test must not leave a master running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_child(db: &str, dir: &Path, n: u32) -> ChildMaster {
    let port_file: PathBuf = dir.join(format!("port-{n}"));
    let mut master = ChildMaster {
        child: Command::new(std::env::current_exe().unwrap())
            .args(["child_master_entry_point", "--exact", "--nocapture"])
            .env(CHILD_DB, db)
            .env(CHILD_PORT_FILE, &port_file)
            .spawn()
            .expect("spawn child master"),
        addr: String::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(addr) = std::fs::read_to_string(&port_file) {
            master.addr = addr;
            return master;
        }
        assert!(Instant::now() < deadline, "child master did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn client(addr: &str, token: &str) -> HttpClient {
    let mut headers = HeaderMap::new();
    headers.insert(
        "Authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    HttpClientBuilder::default()
        .set_headers(headers)
        .build(format!("http://{addr}/"))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_sigkill_of_the_master_loses_no_job_or_result() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("master.sqlite").display().to_string();
    let (submit_token, slave_token) = {
        let store = Store::open_admin(&db).await.unwrap();
        let t = (
            tokens::add(&store, "alice", Role::Submitter).await.unwrap(),
            tokens::add(&store, "slave-1", Role::Slave).await.unwrap(),
        );
        store.close().await;
        t
    };

    let mut first = start_child(&db, dir.path(), 1);
    let submitter = client(&first.addr, &submit_token);
    let slave = client(&first.addr, &slave_token);
    let mut job_ids = Vec::new();
    for i in 0..10 {
        job_ids.push(
            submitter
                .submit_job(common::job(&format!("pkg{i}==1.0"), &["debian-12"], 5))
                .await
                .unwrap()
                .job_id,
        );
    }
    slave
        .register(SlaveRegistration {
            name: "slave-1".into(),
            recipes: vec!["debian-12".into()],
            slots: 10,
        })
        .await
        .unwrap();
    let mut claimed = Vec::new();
    for _ in 0..4 {
        claimed.push(
            slave
                .claim(ClaimRequest {
                    slave: "slave-1".into(),
                    wait_secs: 0,
                })
                .await
                .unwrap()
                .unwrap(),
        );
    }
    let report = |t: &pyti_wire::job::ClaimedTask| ResultReport {
        task_id: t.task_id,
        attempt: t.attempt,
        lease_id: t.lease_id.clone(),
        outcome: ReportOutcome::Raw {
            result: common::passing(t.task_id, &t.recipe),
        },
    };
    for t in &claimed[..2] {
        assert!(!slave.report_result(report(t)).await.unwrap().duplicate);
    }

    // SIGKILL: no shutdown path runs.
    first.child.kill().unwrap();
    first.child.wait().unwrap();

    let mut second = start_child(&db, dir.path(), 2);
    let submitter = client(&second.addr, &submit_token);
    let slave = client(&second.addr, &slave_token);
    let jobs = submitter.list_jobs(JobFilter::default()).await.unwrap();
    assert_eq!(jobs.len(), 10, "every job survived");
    let states: Vec<TaskState> = jobs.iter().map(|j| j.tasks[0].state).collect();
    assert_eq!(
        states
            .iter()
            .filter(|s| **s == TaskState::Finished(Verdict::Pass))
            .count(),
        2
    );
    assert_eq!(
        states.iter().filter(|s| **s == TaskState::Leased).count(),
        2
    );
    assert_eq!(
        states.iter().filter(|s| **s == TaskState::Queued).count(),
        6
    );
    // Results reported before the kill are recorded (a repeat is recognised), and the leases
    // taken before it are still honoured.
    for t in &claimed[..2] {
        assert!(slave.report_result(report(t)).await.unwrap().duplicate);
    }
    for t in &claimed[2..] {
        let r = slave.report_result(report(t)).await.unwrap();
        assert_eq!(r.state, TaskState::Finished(Verdict::Pass));
    }
    let mut rest = 0;
    while let Some(t) = slave
        .claim(ClaimRequest {
            slave: "slave-1".into(),
            wait_secs: 0,
        })
        .await
        .unwrap()
    {
        slave.report_result(report(&t)).await.unwrap();
        rest += 1;
    }
    assert_eq!(rest, 6);
    second.child.kill().unwrap();
    second.child.wait().unwrap();
}
