//! Four processes deposit 2,500 packets each into one file at the same time;
//! a consumer then fetches all 10,000 exactly once, each publisher's packets
//! in the order it deposited them.
//!
//! The children are this test binary run again with `QIS_SQLITE_CHILD` set:
//! each connects, says `qis-child:ready`, waits for `go` on stdin (so all four write at
//! once), deposits 500 packets one by one from 5 concurrent tasks and 2,000
//! in batches of 50, checks its receipts and says `done`.
//!
//! A second test has two processes share one durable consumer, one of them
//! "crashing" with deliveries unacked; the parent then opens the consumer by
//! name and gets exactly the unacked ones back after the ack wait.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use qis_core::{
    ConsumerConfig, EncodedPacket, OutcomePacket, OutcomeTransport, OutcomeTransportExt, Subject,
};
use qis_transport_sqlite::{SqliteConfig, SqliteTransport};

use qis_conformance::support::{collect_in_order, forward_lines, runtime, TempDir};

const CHILD_ENV: &str = "QIS_SQLITE_CHILD";
const PROCESSES: usize = 4;
const PER_PROCESS: usize = 2_500;
const SINGLES: usize = 500;
const SINGLE_TASKS: usize = 5;
const BATCH: usize = 50;
const LIMIT: Duration = Duration::from_secs(120);

/// Packet `i` of process `k`; `stream` names the task that deposits it, so
/// order can be checked per depositor.
fn packet(k: usize, i: usize) -> (String, OutcomePacket) {
    let stream = if i < SINGLES {
        format!("p{k}-t{}", i % SINGLE_TASKS)
    } else {
        format!("p{k}-b")
    };
    let p = OutcomePacket {
        agent_id: stream.clone(),
        domain: ["hvac", "grid", "fleet"][i % 3].into(),
        problem_class: "energy-anomaly".into(),
        conclusion: format!("finding {i} of process {k}"),
        confidence: 0.5,
        context_vector: vec![0.1, 0.2],
        timestamp: i as f64,
        source_node: format!("process-{k}"),
    };
    (stream, p)
}

/// Whether this process is a child started by [`child`] (its role in
/// `var`): then it has run `role` with it.
fn ran_as_child(var: &str, role: fn(&str)) -> bool {
    let Ok(value) = std::env::var(var) else {
        return false;
    };
    role(&value);
    true
}

/// A fresh folder (removed when dropped) and the database file's path in it.
fn database(tag: &str) -> (TempDir, PathBuf) {
    let dir = TempDir::new(tag);
    let db = dir.path().join("outcomes.db");
    (dir, db)
}

/// This test binary again as a child process running only `test`, with
/// its role in the environment (`var`, `value`); stdin and stdout piped.
fn child(test: &str, (var, value): (&str, String)) -> Child {
    let exe = std::env::current_exe().unwrap();
    Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(var, value)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn a child process for {test}: {e}"))
}

#[test]
fn four_processes_deposit_into_one_file_and_nothing_is_lost_or_doubled() {
    if ran_as_child(CHILD_ENV, depositor) {
        return;
    }
    let (_dir, db) = database("multiprocess");

    let mut children: Vec<Child> = (0..PROCESSES)
        .map(|k| {
            child(
                "four_processes_deposit_into_one_file_and_nothing_is_lost_or_doubled",
                (CHILD_ENV, format!("{k}|{}", db.display())),
            )
        })
        .collect();

    // Every child's stdout lines, on one channel.
    let (lines_tx, lines) = mpsc::channel::<(usize, String)>();
    for (k, c) in children.iter_mut().enumerate() {
        let tx = lines_tx.clone();
        forward_lines(c.stdout.take().unwrap(), move |line| {
            tx.send((k, line)).is_ok()
        });
    }
    let wait_for = |word: &str| {
        let deadline = Instant::now() + LIMIT;
        let mut seen = HashSet::new();
        while seen.len() < PROCESSES {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                // libtest may print "test … " on the same line first.
                Ok((k, line)) if line.contains(&format!("qis-child:{word}")) => {
                    seen.insert(k);
                }
                Ok(_) => {}
                Err(_) => panic!("within {LIMIT:?}: only processes {seen:?} said {word:?}"),
            }
        }
    };
    wait_for("ready");
    for c in &mut children {
        writeln!(c.stdin.as_mut().unwrap(), "go").unwrap();
    }
    let started = Instant::now();
    wait_for("done");
    let deposit_time = started.elapsed();
    let deadline = Instant::now() + LIMIT;
    for (k, c) in children.iter_mut().enumerate() {
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                assert!(status.success(), "depositor process {k} failed: {status}");
                break;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!("depositor process {k} did not exit within {LIMIT:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    // One consumer fetches everything exactly once.
    let rt = runtime();
    rt.block_on(async {
        let t = SqliteTransport::connect(SqliteConfig::new(&db))
            .await
            .unwrap();
        let prefix = Subject::default();
        let mut expected = HashMap::new();
        for k in 0..PROCESSES {
            for i in 0..PER_PROCESS {
                let (stream, p) = packet(k, i);
                expected.insert(
                    EncodedPacket::readable(&p, &prefix).unwrap().id(),
                    (stream, i),
                );
            }
        }
        let c = t
            .consumer(ConsumerConfig::new("auditor", "qis.iot.>".parse().unwrap()).unwrap())
            .await
            .unwrap();
        let all = PROCESSES * PER_PROCESS;
        assert_eq!(all, expected.len());
        collect_in_order(&c, all, 500, LIMIT, |d| {
            expected
                .get(&d.id())
                .cloned()
                .ok_or_else(|| format!("unexpected packet {}", d.id()))
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let extra = c.fetch(100, Duration::from_millis(300)).await.unwrap();
        assert!(
            extra.is_empty(),
            "{} packets beyond the 10,000",
            extra.len()
        );
        assert_eq!(
            t.stored().await.unwrap().0,
            (PROCESSES * PER_PROCESS) as u64
        );
        t.close().await.unwrap();
    });
    eprintln!(
        "{PROCESSES} processes deposited {} packets in {deposit_time:?}",
        PROCESSES * PER_PROCESS
    );
}

/// The depositor process; it talks to the parent over stdout.
#[allow(clippy::print_stdout)]
fn depositor(role: &str) {
    let (k, path) = role.split_once('|').expect("role is k|path");
    let k: usize = k.parse().unwrap();
    let rt = runtime();
    rt.block_on(async {
        let t = SqliteTransport::connect(SqliteConfig::new(path))
            .await
            .unwrap();
        println!("\nqis-child:ready");
        let mut go = String::new();
        std::io::stdin().read_line(&mut go).unwrap();
        assert_eq!(go.trim(), "go");

        let mut tasks = Vec::new();
        for task in 0..SINGLE_TASKS {
            let t = t.clone();
            tasks.push(tokio::spawn(async move {
                let mut positions = Vec::new();
                for i in (task..SINGLES).step_by(SINGLE_TASKS) {
                    let r = t.deposit(&packet(k, i).1).await.unwrap();
                    assert!(!r.duplicate, "packet {i} of process {k} reported duplicate");
                    positions.push(r.position);
                }
                positions
            }));
        }
        let batches: Vec<OutcomePacket> = (SINGLES..PER_PROCESS).map(|i| packet(k, i).1).collect();
        let mut positions = Vec::new();
        for chunk in batches.chunks(BATCH) {
            for r in t.deposit_batch(chunk).await.unwrap() {
                assert!(!r.duplicate);
                positions.push(r.position);
            }
        }
        for task in tasks {
            positions.extend(task.await.unwrap());
        }
        let distinct: HashSet<_> = positions.iter().collect();
        assert_eq!(
            distinct.len(),
            PER_PROCESS,
            "process {k}: receipts share positions"
        );
        t.close().await.unwrap();
        println!("\nqis-child:done {}", positions.len());
    });
}

const CONSUMER_ENV: &str = "QIS_SQLITE_CONSUMER";
const SHARED: usize = 2_000;
const CRASH_UNACKED: usize = 10;

fn shared_packet(i: usize) -> EncodedPacket {
    let p = OutcomePacket {
        agent_id: "shared".into(),
        domain: "hvac".into(),
        problem_class: "energy-anomaly".into(),
        conclusion: format!("shared finding {i}"),
        confidence: 0.5,
        context_vector: vec![0.5],
        timestamp: i as f64,
        source_node: "parent".into(),
    };
    EncodedPacket::readable(&p, &Subject::default()).unwrap()
}

fn shared_consumer_config() -> ConsumerConfig {
    ConsumerConfig::new("shared-work", "qis.iot.hvac.>".parse().unwrap())
        .unwrap()
        .ack_wait(Duration::from_secs(1))
}

#[test]
fn processes_share_a_consumer_and_unacked_work_survives_a_crash() {
    if ran_as_child(CONSUMER_ENV, consumer_process) {
        return;
    }
    let (_dir, db) = database("shared-consumer");
    let rt = runtime();
    let all: Vec<EncodedPacket> = (0..SHARED).map(shared_packet).collect();
    rt.block_on(async {
        let t = SqliteTransport::connect(SqliteConfig::new(&db))
            .await
            .unwrap();
        t.consumer(shared_consumer_config()).await.unwrap();
        t.deposit_encoded_batch(&all).await.unwrap();
        t.close().await.unwrap();
    });

    // The "crashing" worker takes some and exits without acking; then two
    // workers drain the rest together.
    let run = |role: &str| {
        child(
            "processes_share_a_consumer_and_unacked_work_survives_a_crash",
            (CONSUMER_ENV, format!("{role}|{}", db.display())),
        )
    };
    // Lines from a worker's stdout, read on a thread.
    let lines_of = |c: &mut Child| {
        let (tx, rx) = mpsc::channel::<String>();
        forward_lines(c.stdout.take().unwrap(), move |line| tx.send(line).is_ok());
        rx
    };
    // Start a worker; it opens the consumer, says ready and waits for `go`.
    let start = |role: &str| {
        let mut c = run(role);
        let lines = lines_of(&mut c);
        loop {
            let line = lines
                .recv_timeout(LIMIT)
                .unwrap_or_else(|_| panic!("a {role} worker did not get ready within {LIMIT:?}"));
            if line.contains("qis-child:ready") {
                break;
            }
        }
        (c, lines)
    };
    let finish = |(mut c, lines): (Child, mpsc::Receiver<String>), what: &str| -> Vec<String> {
        let deadline = Instant::now() + LIMIT;
        let mut ids = Vec::new();
        loop {
            match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => ids.extend(line.split("qis-id:").nth(1).map(str::to_string)),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = c.kill();
                    panic!("{what} did not finish within {LIMIT:?}");
                }
            }
        }
        let status = c.wait().unwrap();
        assert!(status.success(), "{what} failed: {status}");
        ids
    };
    let go = |w: &mut (Child, mpsc::Receiver<String>)| {
        writeln!(w.0.stdin.as_mut().unwrap(), "go").unwrap();
    };
    let mut crash = start("crash");
    go(&mut crash);
    let crashed = finish(crash, "the crashing worker");
    assert_eq!(crashed.len(), CRASH_UNACKED);
    // Both drainers are ready before either starts, so they really share.
    let (mut a, mut b) = (start("drain"), start("drain"));
    go(&mut a);
    go(&mut b);
    let (got_a, got_b) = (finish(a, "worker a"), finish(b, "worker b"));
    // How the work splits depends on scheduling (on a loaded machine one
    // worker may drain everything before the other's first fetch); what must
    // hold is below: nothing lost, nothing given to both.
    eprintln!("drainers got {} and {} packets", got_a.len(), got_b.len());

    let crashed: HashSet<String> = crashed.into_iter().map(|l| id_and_count(&l).0).collect();
    let mut seen = HashSet::new();
    for line in got_a.iter().chain(&got_b) {
        let (id, count) = id_and_count(line);
        // The crashed worker's packets may reach a drainer, but only as
        // redeliveries after their ack wait.
        let want = if crashed.contains(&id) { "≥ 2" } else { "1" };
        assert!(
            (count >= 2) == crashed.contains(&id),
            "packet {id} reached a drainer with delivery count {count}, expected {want}"
        );
        assert!(seen.insert(id.clone()), "packet {id} went to both drainers");
    }
    let expected: HashSet<String> = all.iter().map(|p| p.id().to_hex()).collect();
    let drained_or_crashed: HashSet<String> = seen.union(&crashed).cloned().collect();
    assert_eq!(
        drained_or_crashed, expected,
        "every packet went to a worker"
    );

    // Whatever the crashed worker held and the drainers did not pick up
    // after its ack wait comes back here, by name, counted as redelivered.
    rt.block_on(async {
        let t = SqliteTransport::connect(SqliteConfig::new(&db))
            .await
            .unwrap();
        let c = t.consumer(shared_consumer_config()).await.unwrap();
        let mut back = HashSet::new();
        let deadline = Instant::now() + LIMIT;
        let pending: HashSet<String> = crashed.difference(&seen).cloned().collect();
        while back.len() < pending.len() {
            assert!(
                Instant::now() < deadline,
                "unacked work did not come back within {LIMIT:?}"
            );
            for d in c.fetch(100, Duration::from_secs(2)).await.unwrap() {
                assert!(
                    d.delivery_count >= 2,
                    "a redelivery counted {}",
                    d.delivery_count
                );
                assert!(back.insert(d.id().to_hex()));
                c.ack(std::slice::from_ref(&d)).await.unwrap();
            }
        }
        assert_eq!(back, pending);
        let extra = c.fetch(100, Duration::from_millis(1500)).await.unwrap();
        assert!(
            extra.is_empty(),
            "{} deliveries after everything was acked",
            extra.len()
        );
        t.close().await.unwrap();
    });
}

/// `id:count` as printed by a worker.
fn id_and_count(line: &str) -> (String, u32) {
    let (id, count) = line.split_once(':').expect("id:count");
    (
        id.to_string(),
        count.trim().parse().expect("a delivery count"),
    )
}

/// A worker process on the shared consumer: `crash` takes some and exits
/// without acking; `drain` fetches and acks until nothing comes for a while.
#[allow(clippy::print_stdout)]
fn consumer_process(role: &str) {
    let (role, path) = role.split_once('|').expect("role is role|path");
    let rt = runtime();
    rt.block_on(async {
        let t = SqliteTransport::connect(SqliteConfig::new(path))
            .await
            .unwrap();
        let c = t.consumer(shared_consumer_config()).await.unwrap();
        println!("\nqis-child:ready");
        let mut go = String::new();
        std::io::stdin().read_line(&mut go).unwrap();
        assert_eq!(go.trim(), "go");
        if role == "crash" {
            for d in c
                .fetch(CRASH_UNACKED, Duration::from_secs(10))
                .await
                .unwrap()
            {
                println!("\nqis-id:{}:{}", d.id(), d.delivery_count);
            }
            // Exit without acking or closing, as a crash would.
            std::process::exit(0);
        }
        loop {
            let got = c.fetch(25, Duration::from_millis(500)).await.unwrap();
            if got.is_empty() {
                break;
            }
            c.ack(&got).await.unwrap();
            for d in &got {
                println!("\nqis-id:{}:{}", d.id(), d.delivery_count);
            }
        }
        t.close().await.unwrap();
    });
}
