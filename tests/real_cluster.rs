//! A cluster surviving crashes, as an operator sees it: `pyti master` and two `pyti slave`
//! processes on the real stack (libvirt + QEMU/TCG, libguestfs, PyPI); one slave is SIGKILLed in
//! the middle of a task, then the master is SIGKILLed and restarted on the same database and port.
//!
//! Both stories share one cluster and one batch of jobs (CI has two cores under TCG): story 5 (a
//! killed slave's task is requeued and completes on the other slave) and story 6 (a killed and
//! restarted master loses and duplicates nothing). Each story's assertions are separate below.

mod common;

use common::cluster::{
    admin_token, explain, free_port, pyti, run, start_master, start_slave, submit, Daemon,
};
use pyti_wire::client::http_client;
use pyti_wire::job::JobFilter;
use pyti_wire::rpc::PytiApiClient;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The slave killed mid-task, and the one that takes its task over.
const SLAVE_A: &str = "cluster-a";
const SLAVE_B: &str = "cluster-b";
/// Short leases so the killed slave's task is requeued seconds after its heartbeats stop; long
/// enough that the master's few seconds of downtime do not cost a running task its lease.
const LEASE_SECS: &str = "12";
/// How long the whole batch may take (slave boots, six jobs on two TCG slots, one rerun).
const BATCH_DEADLINE: Duration = Duration::from_secs(600);
/// How long a SIGKILLed slave's children (nbdkit, the libguestfs appliance) may outlive it.
const ORPHAN_GRACE: Duration = Duration::from_secs(60);
/// How long the master stays dead before it is restarted.
const MASTER_DOWNTIME: Duration = Duration::from_secs(3);

/// Each job's results as `pyti results JOB --json` prints them (`None` while unreachable).
fn results(data: &Path, url: &str, token: &str, job: &str) -> Option<Value> {
    let out = run(pyti(data).args(["results", job, "--json", "--master", url, "--token", token]));
    serde_json::from_slice(&out.stdout).ok()
}

/// Every task of `jobs` (their latest results), `None` if the master did not answer.
fn all_tasks(data: &Path, url: &str, token: &str, jobs: &[String]) -> Option<Vec<Value>> {
    let mut tasks = Vec::new();
    for job in jobs {
        let results = results(data, url, token, job)?;
        tasks.extend(results["tasks"].as_array()?.iter().cloned());
    }
    Some(tasks)
}

fn state(task: &Value) -> &str {
    task["state"]["state"].as_str().unwrap_or("?")
}

fn attempts(task: &Value) -> &[Value] {
    task["attempts"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A task running on `slave` whose current attempt started at least `for_ms` ago.
fn running_on<'a>(tasks: &'a [Value], slave: &str, for_ms: i64) -> Option<&'a Value> {
    tasks.iter().find(|t| {
        state(t) == "running"
            && attempts(t).last().is_some_and(|a| {
                a["slave"] == slave
                    && a["outcome"].is_null()
                    && a["started_at_ms"]
                        .as_i64()
                        .is_some_and(|s| now_ms() - s >= for_ms)
            })
    })
}

/// Polls until `found` returns something, failing with the logs after [`BATCH_DEADLINE`].
fn poll<T>(
    what: &str,
    started: Instant,
    logs: &[&Daemon],
    mut found: impl FnMut() -> Option<T>,
) -> T {
    loop {
        if let Some(x) = found() {
            return x;
        }
        if started.elapsed() > BATCH_DEADLINE {
            let logs: String = logs
                .iter()
                .map(|d| format!("\n--- {}\n{}", d.log.display(), d.log()))
                .collect();
            panic!("timed out waiting for {what}{logs}");
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// `pid` and all its descendants, with their command lines (from /proc).
fn process_tree(root: u32) -> Vec<(u32, String)> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        let Some(after) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
            continue;
        };
        if let Some(ppid) = after.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
            parent_of.push((pid, ppid));
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parent_of
                .iter()
                .filter(|&&(_, ppid)| ppid == parent)
                .map(|&(pid, _)| pid),
        );
        i += 1;
    }
    tree.into_iter()
        .filter_map(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            Some((pid, cmd.chars().take(160).collect()))
        })
        .collect()
}

fn alive(pid: u32) -> bool {
    // A zombie has been killed; only its parent's wait is missing.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        == Some(false)
}

/// Libvirt domains (running or defined) whose name starts with `prefix`.
fn domains(prefix: &str) -> Vec<String> {
    let out = Command::new("virsh")
        .args(["-c", "qemu:///system", "list", "--all", "--name"])
        .output()
        .expect("virsh runs");
    assert!(out.status.success(), "{}", explain(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|name| name.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

/// The jobs the master knows, by id, through the API (`pyti status` prints a table).
fn listed_jobs(url: &str, token: &str) -> Vec<i64> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = http_client(url, Some(token), Duration::from_secs(30)).unwrap();
        let jobs = client
            .list_jobs(JobFilter {
                limit: Some(100),
                ..JobFilter::default()
            })
            .await
            .expect("list_jobs");
        let mut ids: Vec<i64> = jobs.iter().map(|j| j.id).collect();
        ids.sort_unstable();
        ids
    })
}

#[test]
fn real_cluster_survives_a_killed_slave_and_a_killed_master() {
    let started = Instant::now();
    let data = tempfile::tempdir().unwrap();
    // Logs and the database; kept for reading when PYTI_KEEP_TEST_DIRS is set.
    let work = tempfile::Builder::new()
        .prefix("pyti-cluster-")
        .disable_cleanup(std::env::var_os("PYTI_KEEP_TEST_DIRS").is_some())
        .tempdir()
        .unwrap();
    eprintln!("logs in {}", work.path().display());
    let recipes = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes");
    let database = work.path().join("master.sqlite");
    let database = database.to_str().unwrap();
    let log = |name: &str| work.path().join(name);

    let token = admin_token(data.path(), database);
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let master_flags = ["--lease-secs", LEASE_SECS, "--max-attempts", "3"];
    let mut master = start_master(
        data.path(),
        port,
        database,
        &recipes,
        &master_flags,
        log("master-1.log"),
    );
    let mut slave_a = start_slave(data.path(), &url, &token, SLAVE_A, &recipes, log("a-1.log"));
    let slave_b = start_slave(data.path(), &url, &token, SLAVE_B, &recipes, log("b.log"));

    // Both slaves booted and wait for work: the first two jobs go one to each.
    poll(
        "both slaves to register",
        started,
        &[&master, &slave_a, &slave_b],
        || {
            (slave_a.log().contains("registered") && slave_b.log().contains("registered"))
                .then_some(())
        },
    );
    eprintln!(
        "[{:.0} s] both slaves registered",
        started.elapsed().as_secs_f64()
    );

    // Six jobs: two slow local packages first (an sdist built in the guest, and a test that
    // sleeps 10 s: slave A's is reliably caught in the middle), then four six==1.16.0 from PyPI.
    let slow = common::sdist(
        work.path(),
        "pyti_cluster_slow",
        "import time\ntime.sleep(10)\nself.assertEqual(pyti_cluster_slow.ANSWER, 41)",
        None,
    );
    let slow = slow.to_str().unwrap();
    let mut jobs = Vec::new();
    for package in [
        slow,
        slow,
        "six==1.16.0",
        "six==1.16.0",
        "six==1.16.0",
        "six==1.16.0",
    ] {
        jobs.push(submit(data.path(), &url, &token, package));
    }
    let submitted: Vec<i64> = jobs.iter().map(|j| j.parse().unwrap()).collect();

    // ----- Story 5: SIGKILL slave A in the middle of a task. -----
    let victim = poll(
        "a task running on slave A",
        started,
        &[&master, &slave_a, &slave_b],
        || {
            let tasks = all_tasks(data.path(), &url, &token, &jobs)?;
            // A slow package's task 6 s into its attempt: the guest is installing or testing (its
            // test alone lasts 10 s), the I/O disk attached.
            let slow: Vec<Value> = tasks
                .into_iter()
                .filter(|t| t["package"].to_string().contains("pyti_cluster_slow"))
                .collect();
            running_on(&slow, SLAVE_A, 6_000).cloned()
        },
    );
    let victim_id = victim["id"].clone();
    let victim_attempt = attempts(&victim).len();
    let before_kill = process_tree(slave_a.child.id());
    slave_a.child.kill().unwrap(); // SIGKILL
    slave_a.child.wait().unwrap();
    let killed_at = Instant::now();
    eprintln!(
        "[{:.0} s] SIGKILLed slave A during task {victim_id} attempt {victim_attempt}; its processes were:",
        started.elapsed().as_secs_f64()
    );
    for (pid, cmd) in &before_kill {
        eprintln!("  {pid} {cmd}");
    }
    // Its children are meant to die with it (nbdkit --exit-with-parent, libguestfs' recovery
    // process kills the appliance); its libvirt domain is not a child and keeps running.
    let mut survivors: Vec<&(u32, String)> = before_kill.iter().skip(1).collect();
    while !survivors.is_empty() && killed_at.elapsed() < ORPHAN_GRACE {
        std::thread::sleep(Duration::from_millis(500));
        survivors.retain(|(pid, _)| alive(*pid));
    }
    eprintln!(
        "slave A's child processes gone {:.1} s after the kill (still alive: {survivors:?})",
        killed_at.elapsed().as_secs_f64()
    );
    let stale = domains(&format!("pyti-{SLAVE_A}-"));
    eprintln!("slave A's domains after the kill: {stale:?}");
    assert!(
        survivors.is_empty(),
        "slave A's child processes outlived it by {} s: {survivors:?}",
        ORPHAN_GRACE.as_secs()
    );

    // ----- Story 6: SIGKILL the master while slave B runs a task, restart it. -----
    let b_task = poll(
        "a task running on slave B",
        started,
        &[&master, &slave_b],
        || {
            let tasks = all_tasks(data.path(), &url, &token, &jobs)?;
            running_on(&tasks, SLAVE_B, 2_000).cloned()
        },
    );
    master.child.kill().unwrap(); // SIGKILL
    master.child.wait().unwrap();
    eprintln!(
        "[{:.0} s] SIGKILLed the master while slave B ran task {} ({} s after slave A died)",
        started.elapsed().as_secs_f64(),
        b_task["id"],
        killed_at.elapsed().as_secs()
    );
    std::thread::sleep(MASTER_DOWNTIME);
    let master = start_master(
        data.path(),
        port,
        database,
        &recipes,
        &master_flags,
        log("master-2.log"),
    );
    let restarted_at = Instant::now();

    // Slave A comes back under the same name once its task is B's: its crash recovery removes
    // the domain the killed run left, and it helps with the rest of the batch.
    let victim_on_b = poll(
        "the killed slave's task to be requeued and taken by slave B",
        started,
        &[&master, &slave_b],
        || {
            let tasks = all_tasks(data.path(), &url, &token, &jobs)?;
            let victim = tasks.into_iter().find(|t| t["id"] == victim_id)?;
            let last = attempts(&victim).last()?;
            (attempts(&victim).len() > victim_attempt && last["slave"] == SLAVE_B)
                .then(|| killed_at.elapsed())
        },
    );
    eprintln!(
        "[{:.0} s] slave B took the killed slave's task {:.0} s after the kill; restarting slave A",
        started.elapsed().as_secs_f64(),
        victim_on_b.as_secs_f64()
    );
    let slave_a = start_slave(data.path(), &url, &token, SLAVE_A, &recipes, log("a-2.log"));

    let tasks = poll(
        "every job to finish",
        started,
        &[&master, &slave_a, &slave_b],
        || {
            let tasks = all_tasks(data.path(), &url, &token, &jobs)?;
            tasks
                .iter()
                .all(|t| matches!(state(t), "finished" | "cancelled"))
                .then_some(tasks)
        },
    );
    eprintln!(
        "[{:.0} s] all six jobs finished ({:.0} s after the master restarted)",
        started.elapsed().as_secs_f64(),
        restarted_at.elapsed().as_secs_f64()
    );
    let everything = format!(
        "{tasks:#?}\n--- master 2\n{}\n--- slave B\n{}",
        master.log(),
        slave_b.log()
    );

    // Story 5 assertions: the killed slave's task lost its lease, was requeued and passed on B.
    let victim = tasks
        .iter()
        .find(|t| t["id"] == victim_id)
        .expect("the killed slave's task is still there");
    let victim_attempts = attempts(victim);
    assert!(
        victim_attempts.len() > victim_attempt,
        "the killed slave's task was not retried: {victim:#}"
    );
    let lost = &victim_attempts[victim_attempt - 1];
    assert_eq!(lost["slave"], SLAVE_A, "{victim:#}");
    assert_eq!(lost["outcome"], "lease_expired", "{victim:#}");
    assert!(lost["raw_result"].is_null(), "{victim:#}");
    let last = victim_attempts.last().unwrap();
    assert_eq!(
        last["slave"], SLAVE_B,
        "the requeued task ran on the other slave: {victim:#}"
    );

    // Every task (the victim included): finished with `pass`, exactly one attempt carries a
    // verdict and raw data, and it is the last one; every earlier attempt lost its lease.
    assert_eq!(tasks.len(), 6, "one task per job: {everything}");
    for task in &tasks {
        assert_eq!(task["state"]["state"], "finished", "{everything}");
        assert_eq!(task["state"]["verdict"], "pass", "{task:#}\n{everything}");
        let attempts = attempts(task);
        let judged: Vec<&Value> = attempts
            .iter()
            .filter(|a| a["outcome"]["verdict"].is_string())
            .collect();
        assert_eq!(judged.len(), 1, "one final result per task: {task:#}");
        assert_eq!(judged[0]["outcome"]["verdict"], "pass", "{task:#}");
        assert!(judged[0]["raw_result"].is_object(), "{task:#}");
        assert_eq!(
            judged[0]["attempt"],
            attempts.last().unwrap()["attempt"],
            "{task:#}"
        );
        for earlier in &attempts[..attempts.len() - 1] {
            assert_eq!(earlier["outcome"], "lease_expired", "{task:#}");
        }
        assert_eq!(task["attempt"], attempts.len(), "{task:#}");
    }

    // Story 6 assertions: after the restart the master still has exactly the six jobs (none lost,
    // none duplicated), the task B ran across the restart passed, and slave B worked on after it
    // (it reported results to the restarted master).
    assert_eq!(listed_jobs(&url, &token), submitted, "{everything}");
    let b_task = tasks
        .iter()
        .find(|t| t["id"] == b_task["id"])
        .expect("slave B's task is still there");
    assert_eq!(b_task["state"]["verdict"], "pass", "{b_task:#}");
    let b_attempts = attempts(b_task).len();
    eprintln!("slave B's task across the master restart took {b_attempts} attempt(s)");

    // Clean-up: the restarted slave A removed the domain its killed run left (crash recovery);
    // both slaves stop with SIGTERM and remove their own.
    let recovered = slave_a.log().contains("cleaned up after an earlier run");
    eprintln!("restarted slave A cleaned up after its killed run: {recovered}");
    drop(slave_a);
    drop(slave_b);
    drop(master);
    let left = [
        domains(&format!("pyti-{SLAVE_A}-")),
        domains(&format!("pyti-{SLAVE_B}-")),
    ]
    .concat();
    assert!(left.is_empty(), "domains left behind: {left:?}");
    assert!(
        stale.is_empty() || recovered,
        "slave A's stale domain {stale:?} was not recovered"
    );
    eprintln!("[{:.0} s] done", started.elapsed().as_secs_f64());
}
