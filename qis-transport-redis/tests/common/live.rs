//! Helpers for cases against the shared server at `QIS_REDIS_URL`
//! (`scripts/servers/redis.sh start DIR`): connecting on a prefix,
//! depositing test packets, a raw connection to look at what Redis holds,
//! and a log capture for cases that check a warning.

use std::io::Write;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use qis_conformance::support::{context, env_url, eventually, pkt};
use qis_core::{Checked, EncodedPacket, OutcomeTransport, Receipt, Subject};
use qis_transport_redis::{RedisConfig, RedisTransport};
use redis::AsyncCommands;

/// The variable naming the server.
pub const ENV: &str = "QIS_REDIS_URL";

/// How long one case may take.
pub const LIMIT: Duration = Duration::from_secs(120);

/// `live_trials!(case_a, case_b)`: each case against the server at
/// [`ENV`] on a fresh prefix, within [`LIMIT`]; without a server each is
/// ignored with the reason (a failure with `QIS_REQUIRE_LIVE=1`).
#[allow(unused_macros)] // Not every test binary runs live cases.
macro_rules! live_trials {
    ($($case:ident),+ $(,)?) => {
        qis_conformance::fresh_prefix_trials!(
            &$crate::common::live::url(),
            $crate::common::live::LIMIT;
            $($case),+
        )
    };
}
#[allow(unused_imports)]
pub(crate) use live_trials;

/// The server's URL, or why there is none.
pub fn url() -> Result<String, String> {
    env_url(
        ENV,
        "scripts/servers/redis.sh start DIR and source DIR/redis.env",
    )
}

/// The configuration for `url` on `prefix`.
pub fn config(url: &str, prefix: &Subject) -> Result<RedisConfig, String> {
    Ok(RedisConfig::from_url(url)
        .map_err(context("config"))?
        .prefix(prefix.clone()))
}

/// Connect with the configuration for `url` on `prefix`, changed by `tune`.
pub async fn connect_with(
    url: &str,
    prefix: &Subject,
    tune: impl FnOnce(RedisConfig) -> RedisConfig,
) -> Result<Checked<RedisTransport>, String> {
    RedisTransport::connect(tune(config(url, prefix)?))
        .await
        .map_err(context("connect"))
}

/// Deposit test packet `seq` on `{prefix}.hvac.{problem}`.
pub async fn deposit(
    t: &Checked<RedisTransport>,
    prefix: &Subject,
    problem: &str,
    seq: usize,
) -> Result<Receipt, String> {
    let p = EncodedPacket::readable(&pkt("redis-test", "hvac", problem, seq), prefix)
        .map_err(context("encode"))?;
    t.deposit_encoded(&p).await.map_err(context("deposit"))
}

/// A plain connection, to look at keys as Redis holds them.
pub async fn raw(url: &str) -> Result<redis::aio::MultiplexedConnection, String> {
    let c = RedisConfig::from_url(url).map_err(context("config"))?;
    redis::Client::open(c.url.as_str())
        .map_err(context("client"))?
        .get_multiplexed_async_connection()
        .await
        .map_err(context("raw connection"))
}

/// The entries of stream `key` delivered to `group` and not yet acked (up
/// to 10), as XPENDING lists them.
pub async fn pending(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
    group: &str,
) -> Result<Vec<redis::Value>, String> {
    redis::cmd("XPENDING")
        .arg(key)
        .arg(group)
        .arg("-")
        .arg("+")
        .arg(10)
        .query_async(conn)
        .await
        .map_err(context("xpending"))
}

/// The stream keys under `prefix` (`{prefix}:s:*`).
pub async fn stream_keys(
    conn: &mut redis::aio::MultiplexedConnection,
    prefix: &Subject,
) -> Result<Vec<String>, String> {
    let mut keys = conn
        .scan_match::<_, String>(format!("{prefix}:s:*"))
        .await
        .map_err(context("scan"))?;
    let mut out = Vec::new();
    while let Some(key) = keys.next_item().await {
        out.push(key.map_err(context("scan"))?);
    }
    Ok(out)
}

/// Wait (up to 20 s) for the sweep to have deleted every stream under
/// `prefix` together with its subject-index entry; fails saying `what` did
/// not happen.
pub async fn until_swept(
    conn: &redis::aio::MultiplexedConnection,
    prefix: &Subject,
    what: &str,
) -> Result<(), String> {
    let index = format!("{prefix}:subjects");
    eventually(what, Duration::from_secs(20), || {
        let mut conn = conn.clone();
        let (prefix, index) = (prefix.clone(), index.clone());
        async move {
            let no_streams = stream_keys(&mut conn, &prefix)
                .await
                .is_ok_and(|k| k.is_empty());
            let indexed: u64 = redis::cmd("ZCARD")
                .arg(&index)
                .query_async(&mut conn)
                .await
                .unwrap_or(u64::MAX);
            no_streams && indexed == 0
        }
    })
    .await
}

/// Everything logged at `warn` or above by this crate, since the capture
/// was installed.
static CAPTURED: LazyLock<Mutex<Vec<u8>>> = LazyLock::new(|| Mutex::new(Vec::new()));

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Capture this crate's warnings (for every thread) for [`captured`]. Call
/// once, at the start of `main`.
pub fn capture_warnings() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("qis_transport_redis=warn")
        .with_ansi(false)
        .with_writer(|| Capture)
        .try_init();
}

/// The lines captured so far that contain every one of `needles`.
pub fn captured(needles: &[&str]) -> Vec<String> {
    let all = CAPTURED.lock().unwrap_or_else(|e| e.into_inner());
    String::from_utf8_lossy(&all)
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .map(str::to_string)
        .collect()
}
