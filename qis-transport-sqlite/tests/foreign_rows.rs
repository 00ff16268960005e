//! Rows written by other programs with plain SQLite, as the file format in
//! `qis_transport_sqlite::schema` allows (and as it does not): a valid packet
//! whose body is TEXT (what Python's `sqlite3` stores for a `str`) is
//! delivered; a row that cannot be a packet (a BLOB subject, a number for a
//! body, a subject that is not UTF-8) is skipped and counted, and never
//! stops a fetch. One trial runs a real Python `sqlite3` writer following the
//! documented recipe; it is ignored when `python3` is missing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use qis_conformance::ensure;
use qis_conformance::libtest_mimic::{Arguments, Completion, Failed, Trial};
use qis_conformance::support::{
    block_on, collect, collect_unacked, consumer_from_start, context, deposit_one, ids, installed,
    next_live, nothing_more, pkt, CaseResult, TempDir,
};
use qis_core::{
    Checked, EncodedPacket, OutcomeTransport, OutcomeTransportExt, PacketId, SubjectPattern,
};
use qis_transport_sqlite::{SqliteConfig, SqliteTransport};
use rusqlite::types::Value;

const LIMIT: Duration = Duration::from_secs(60);

fn db(dir: &TempDir) -> PathBuf {
    dir.path().join("outcomes.db")
}

async fn open(path: &Path) -> Result<Checked<SqliteTransport>, String> {
    SqliteTransport::connect(SqliteConfig::new(path).poll_interval(Duration::from_millis(5)))
        .await
        .map_err(context("open the transport"))
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Insert a row with plain rusqlite and the values as given, the way another
/// program would (no QIS code involved).
fn foreign_insert(path: &Path, subject: Value, body: Value, id_of: &[u8]) -> CaseResult {
    let conn = rusqlite::Connection::open(path).map_err(context("open the file"))?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(context("busy timeout"))?;
    conn.execute(
        "INSERT INTO qis_outcomes (subject, packet_id, body, deposited_at_us) VALUES (?, ?, ?, ?)",
        rusqlite::params![subject, &PacketId::of(id_of).as_bytes()[..], body, now_us()],
    )
    .map_err(context("insert the foreign row"))?;
    Ok(())
}

/// A valid packet deposited by another program with its body as TEXT is
/// delivered (and redelivered after the ack wait), between QIS's own.
async fn text_body_is_delivered() -> CaseResult {
    let dir = TempDir::new("foreign-text");
    let t = open(&db(&dir)).await?;
    let before = deposit_one(&t, &pkt("qis", "hvac", "energy-anomaly", 1)).await?;
    let foreign = EncodedPacket::readable(&pkt("python", "hvac", "energy-anomaly", 2), t.prefix())
        .map_err(context("encode"))?;
    let text = std::str::from_utf8(foreign.body()).map_err(context("utf-8"))?;
    foreign_insert(
        &db(&dir),
        Value::Text(foreign.subject().to_string()),
        Value::Text(text.to_string()),
        foreign.body(),
    )?;
    let after = deposit_one(&t, &pkt("qis", "hvac", "energy-anomaly", 3)).await?;

    let c = consumer_from_start(&*t, "twins", "qis.iot.hvac.>", Duration::from_secs(1)).await?;
    let got = collect_unacked(&c, 3, Duration::from_secs(10)).await?;
    ensure!(
        ids(&got) == vec![before.id, foreign.id(), after.id],
        "expected the three packets in order, got {:?}",
        ids(&got)
    );
    ensure!(
        got[1].packet().agent_id == "python",
        "the TEXT body decoded to another packet"
    );
    // Unacked: the TEXT row comes back through the redelivery path.
    let again = collect(&c, 3, Duration::from_secs(10)).await?;
    ensure!(
        again.iter().all(|d| d.delivery_count == 2),
        "redeliveries have counts {:?}",
        again.iter().map(|d| d.delivery_count).collect::<Vec<_>>()
    );
    ensure!(
        c.malformed_skipped() == 0,
        "{} rows counted malformed",
        c.malformed_skipped()
    );
    t.close().await.map_err(context("close"))
}

/// Rows that cannot be packets are skipped and counted by consumers (on a
/// wide and on a narrow pattern) and live subscriptions; what follows them
/// still arrives, and nothing is redelivered.
async fn unreadable_rows_are_skipped_and_counted() -> CaseResult {
    let dir = TempDir::new("foreign-bad");
    let path = db(&dir);
    let t = open(&path).await?;
    let mut live = t
        .subscribe(SubjectPattern::new("qis.iot.>").map_err(context("pattern"))?)
        .await
        .map_err(context("subscribe"))?;
    let first = deposit_one(&t, &pkt("qis", "hvac", "energy-anomaly", 1)).await?;
    let good = EncodedPacket::readable(&pkt("python", "hvac", "energy-anomaly", 2), t.prefix())
        .map_err(context("encode"))?;
    let subject = good.subject().to_string();
    // A valid packet under a BLOB subject (a Python `bytes` subject).
    foreign_insert(
        &path,
        Value::Blob(subject.clone().into_bytes()),
        Value::Blob(good.body().to_vec()),
        b"1",
    )?;
    // A number for a body.
    foreign_insert(
        &path,
        Value::Text(subject.clone()),
        Value::Integer(42),
        b"2",
    )?;
    // TEXT that is not UTF-8 for a subject (a C writer can store it).
    let mut bad_subject = subject.clone().into_bytes();
    bad_subject.push(0xff);
    let conn = rusqlite::Connection::open(&path).map_err(context("open"))?;
    conn.execute(
        "INSERT INTO qis_outcomes (subject, packet_id, body, deposited_at_us) VALUES (CAST(? AS TEXT), ?, ?, ?)",
        rusqlite::params![bad_subject, &PacketId::of(b"3").as_bytes()[..], good.body().to_vec(), now_us()],
    )
    .map_err(context("insert a non-UTF-8 subject"))?;
    let typed: Vec<(String, String)> = conn
        .prepare("SELECT typeof(subject), typeof(body) FROM qis_outcomes ORDER BY seq")
        .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .map_err(context("read the storage classes"))?;
    ensure!(
        typed[1..]
            == [
                ("blob".into(), "blob".into()),
                ("text".into(), "integer".into()),
                ("text".into(), "blob".into())
            ],
        "the foreign rows were not stored as intended: {typed:?}"
    );
    drop(conn);
    let last = deposit_one(&t, &pkt("qis", "hvac", "energy-anomaly", 3)).await?;

    // The non-UTF-8 subject is not the exact subject: an exact consumer
    // does not count it.
    for (name, pattern, malformed) in [
        ("wide", "qis.iot.>", 3),
        ("narrow", "qis.iot.hvac.>", 3),
        ("exact", "qis.iot.hvac.energy-anomaly", 2),
    ] {
        let c = consumer_from_start(&*t, name, pattern, Duration::from_secs(1)).await?;
        let got = collect(&c, 2, Duration::from_secs(10)).await?;
        ensure!(
            ids(&got) == vec![first.id, last.id],
            "consumer {name} on {pattern}: expected the two valid packets, got {:?}",
            ids(&got)
        );
        nothing_more(&c, Duration::from_millis(1500), &format!("consumer {name}")).await?;
        ensure!(
            c.malformed_skipped() == malformed,
            "consumer {name} on {pattern} counted {} malformed rows, not {malformed}",
            c.malformed_skipped()
        );
    }
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match next_live(&mut live, Duration::from_secs(10)).await? {
            Some(r) => seen.push(r.id),
            None => {
                return Err(format!(
                    "the live subscription got {} of 2 valid packets",
                    seen.len()
                ))
            }
        }
    }
    ensure!(seen == vec![first.id, last.id], "live got {seen:?}");
    drop(live.next());
    t.close().await.map_err(context("close"))
}

/// Python's `sqlite3` deposits with the recipe documented in the `schema`
/// module; QIS delivers it, de-duplicates a QIS re-deposit of the same
/// packet against it, and the size counter moved with it.
async fn python_writer_following_the_docs() -> CaseResult {
    let dir = TempDir::new("foreign-python");
    let path = db(&dir);
    let t = open(&path).await?;
    let mine = deposit_one(&t, &pkt("qis", "hvac", "energy-anomaly", 1)).await?;
    let (_, bytes_before) = t.stored().await.map_err(context("stored"))?;
    let theirs = pkt("python", "hvac", "energy-anomaly", 2);
    let expected = EncodedPacket::readable(&theirs, t.prefix()).map_err(context("encode"))?;
    let script = r#"
import hashlib, json, sqlite3, sys, time
path, packet = sys.argv[1], json.loads(sys.argv[2])
body = json.dumps(packet, separators=(",", ":")).encode()
conn = sqlite3.connect(path, timeout=10, isolation_level=None)
assert conn.execute("PRAGMA user_version").fetchone()[0] == 2, "not QIS format 2"
conn.execute("BEGIN IMMEDIATE")
conn.execute(
    "INSERT INTO qis_outcomes (subject, packet_id, body, deposited_at_us) "
    "VALUES (:subject, :packet_id, :body, "
    "max(:now_us, coalesce((SELECT max(deposited_at_us) FROM qis_outcomes), 0))) "
    "ON CONFLICT (packet_id) DO NOTHING",
    {"subject": "qis.iot.%s.%s" % (packet["domain"], packet["problem_class"]),
     "packet_id": hashlib.sha256(body).digest(), "body": body,
     "now_us": int(time.time() * 1e6)})
conn.execute(
    "UPDATE qis_meta SET value = value + length(:body) "
    "WHERE key = 'stored_bytes' AND changes() = 1", {"body": body})
conn.execute("COMMIT")
print(hashlib.sha256(body).hexdigest())
"#;
    let packet_json = String::from_utf8(theirs.encode().map_err(context("encode"))?.to_vec())
        .map_err(context("utf-8"))?;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&path)
        .arg(&packet_json)
        .output()
        .map_err(context("run python3"))?;
    ensure!(
        out.status.success(),
        "the Python writer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let python_id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    ensure!(
        python_id == expected.id().to_hex(),
        "Python's body differs from QIS's encoding (id {python_id}, QIS {})",
        expected.id()
    );
    let c = consumer_from_start(&*t, "twins", "qis.iot.hvac.>", Duration::from_secs(30)).await?;
    let got = collect(&c, 2, Duration::from_secs(10)).await?;
    ensure!(
        ids(&got) == vec![mine.id, expected.id()],
        "expected QIS's packet then Python's, got {:?}",
        ids(&got)
    );
    ensure!(
        got[1].packet() == &theirs,
        "Python's packet decoded differently"
    );
    let again = t.deposit(&theirs).await.map_err(context("re-deposit"))?;
    ensure!(again.duplicate, "QIS stored Python's packet a second time");
    ensure!(
        again.position == got[1].position,
        "the duplicate's receipt names {} not {}",
        again.position,
        got[1].position
    );
    let (n, bytes) = t.stored().await.map_err(context("stored"))?;
    ensure!(n == 2, "{n} rows stored");
    ensure!(
        bytes == bytes_before + expected.body().len() as u64,
        "the size counter is {bytes}, not {} + {}",
        bytes_before,
        expected.body().len()
    );
    t.close().await.map_err(context("close"))
}

fn case(
    name: &'static str,
    f: fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = CaseResult> + Send>>,
) -> Trial {
    Trial::test(name, move || block_on(LIMIT, f()).map_err(Failed::from))
}

fn main() {
    qis_conformance::support::init_tracing("error");
    let mut trials = vec![
        case("text_body_is_delivered", || {
            Box::pin(text_body_is_delivered())
        }),
        case("unreadable_rows_are_skipped_and_counted", || {
            Box::pin(unreadable_rows_are_skipped_and_counted())
        }),
    ];
    let name = "python_writer_following_the_docs";
    trials.push(if installed("python3", "--version") {
        case(name, || Box::pin(python_writer_following_the_docs()))
    } else {
        Trial::ignorable_test(name, || {
            Ok(Completion::ignored_with("python3 is not installed"))
        })
    });
    qis_conformance::libtest_mimic::run(&Arguments::from_args(), trials).exit()
}
