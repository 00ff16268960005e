//! Opening a durable consumer: its definition, and a consumer group on every
//! stream its pattern matches (now, and as new subjects appear).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::{LazyLock, Mutex as StdMutex};
use std::time::{Duration, UNIX_EPOCH};

use qis_core::{ConsumerConfig, Error, ErrorKind, Result, StartPosition, SubjectPattern};
use redis::{Script, Value};
use tokio::sync::{watch, Mutex};
use tokio::time::Instant;

use super::entry::value_str;
use super::{FetchState, RedisConsumer, StreamIds};
use crate::error::{is_code, redis_error, unexpected};
use crate::{RedisTransport, NAME};

/// Creates a consumer's definition and its groups on the streams that exist,
/// atomically with respect to deposits (see `lua/create_consumer.lua`).
pub(crate) static CREATE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/create_consumer.lua")));

/// Group start ids for `start`: (for the streams that exist now, for
/// streams found later).
fn start_ids(start: StartPosition) -> (String, String) {
    match start {
        StartPosition::All => ("0".into(), "0".into()),
        // A stream created after the consumer holds only new packets.
        StartPosition::New => ("$".into(), "0".into()),
        StartPosition::Since(t) => {
            let ms = t
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            // Deliver entries whose millisecond is at or after t's.
            let id = if ms == 0 {
                "0".to_string()
            } else {
                format!("{}-{}", ms - 1, u64::MAX)
            };
            (id.clone(), id)
        }
    }
}

/// The start position as kept in the consumer's definition.
fn describe(start: StartPosition) -> String {
    match start {
        StartPosition::All => "all".into(),
        StartPosition::New => "new".into(),
        StartPosition::Since(t) => format!(
            "since {} ms",
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0)
        ),
    }
}

/// The ZRANGEBYLEX bounds covering every subject `pattern` can match.
fn lex_range(pattern: &SubjectPattern) -> (String, String) {
    if pattern.is_exact() {
        let s = pattern.as_str();
        return (format!("[{s}"), format!("[{s}"));
    }
    let lp = pattern.literal_prefix();
    if lp.is_empty() {
        ("-".into(), "+".into())
    } else {
        // '/' is the byte after '.': every "{lp}.…" lies in [lp. , lp/).
        (format!("[{lp}."), format!("({lp}/"))
    }
}

impl RedisTransport {
    /// Create the consumer `config.name`, or resume it if it exists with the
    /// same pattern ([`ErrorKind::Conflict`] with another). Either way its
    /// ack wait becomes `config.ack_wait`, for every handle.
    pub(crate) async fn open_consumer(&self, config: ConsumerConfig) -> Result<RedisConsumer> {
        let keys = self.keys();
        let def_key = keys.consumer(&config.name);
        let ack_wait_ms = (config.ack_wait.as_millis() as u64).max(1);
        let mut conn = self.conn();
        // The new-subjects group first: a subject created from now on wakes us.
        self.ensure_groups(&config.name, &[keys.new_subjects()], "$", true)
            .await?;
        let (now_id, lazy_id) = start_ids(config.start);
        let mut lazy_start = None;
        for _ in 0..20 {
            let existing: HashMap<String, String> = redis::cmd("HGETALL")
                .arg(&def_key)
                .query_async(&mut conn)
                .await
                .map_err(|e| redis_error(e, "reading the consumer definition failed"))?;
            if let Some(p) = existing.get("pattern") {
                if p != config.pattern.as_str() {
                    return Err(Error::new(
                        ErrorKind::Conflict,
                        NAME,
                        format!(
                            "consumer {} exists with pattern {p}, not {}: use another name",
                            config.name, config.pattern
                        ),
                    ));
                }
                // Opening with another ack wait changes it for every handle.
                let _: () = redis::cmd("HSET")
                    .arg(&def_key)
                    .arg("ack_wait")
                    .arg(ack_wait_ms)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| redis_error(e, "storing the consumer's ack wait failed"))?;
                lazy_start = Some(
                    existing
                        .get("lazy_start")
                        .cloned()
                        .unwrap_or_else(|| "0".into()),
                );
                break;
            }
            let (version, subjects) = self.matching_subjects(&config.pattern).await?;
            let mut inv = CREATE.prepare_invoke();
            inv.key(&def_key).key(keys.subjects_version());
            for s in &subjects {
                inv.key(keys.stream(s));
            }
            inv.arg(config.pattern.as_str())
                .arg(describe(config.start))
                .arg(&lazy_id)
                .arg(version)
                .arg(&config.name)
                .arg(&now_id)
                .arg(ack_wait_ms);
            let v: Value = inv
                .invoke_async(&mut conn)
                .await
                .map_err(|e| redis_error(e, "creating the consumer failed"))?;
            match &v {
                Value::Array(a) if a.first().and_then(value_str) == Some("created") => {
                    tracing::debug!(consumer = %config.name, pattern = %config.pattern, start = %describe(config.start), streams = subjects.len(), "durable consumer created");
                    lazy_start = Some(lazy_id.clone());
                    break;
                }
                // "exists" (created meanwhile by another handle: compare on the
                // next turn) or "retry" (a subject appeared meanwhile).
                Value::Array(_) => continue,
                other => return Err(unexpected("creating the consumer", other)),
            }
        }
        let lazy_start = lazy_start.ok_or_else(|| {
            Error::new(
                ErrorKind::Unavailable,
                NAME,
                "could not create the consumer: new subjects kept appearing; retry",
            )
        })?;
        let (closed, _) = watch::channel(false);
        Ok(RedisConsumer {
            transport: self.clone(),
            delayed_key: keys.delayed(&config.name),
            def_key,
            name: config.name,
            pattern: config.pattern,
            lazy_start,
            ack_wait_ms: AtomicU64::new(ack_wait_ms),
            stream_ids: StdMutex::new(StreamIds::default()),
            state: Mutex::new(FetchState {
                streams: Vec::new(),
                known: HashSet::new(),
                index_version: None,
                next_trim: Instant::now(),
                trim_from: 0,
                rotate: 0,
                blocking: None,
                buffer: VecDeque::new(),
            }),
            next_claim: StdMutex::new(Instant::now()),
            malformed: AtomicU64::new(0),
            closed,
            transport_closed: self.closed(),
        })
    }

    /// The subject-index version and the subjects in the index that
    /// `pattern` matches, read together.
    pub(super) async fn matching_subjects(
        &self,
        pattern: &SubjectPattern,
    ) -> Result<(i64, Vec<String>)> {
        let (min, max) = lex_range(pattern);
        let mut conn = self.conn();
        let (version, subjects): (Option<i64>, Vec<String>) = redis::pipe()
            .atomic()
            .cmd("GET")
            .arg(self.keys().subjects_version())
            .cmd("ZRANGEBYLEX")
            .arg(self.keys().subjects())
            .arg(min)
            .arg(max)
            .query_async(&mut conn)
            .await
            .map_err(|e| redis_error(e, "reading the subject index failed"))?;
        let matching = subjects
            .into_iter()
            .filter(|s| pattern.matches(s))
            .collect();
        Ok((version.unwrap_or(0), matching))
    }

    /// Create group `group` at `start` on each stream; an existing group is
    /// left as it is. With `make`, missing streams are created empty; without
    /// it they are skipped (the sweep deleted them: nothing to read).
    /// Returns, per stream, whether it has the group now.
    pub(super) async fn ensure_groups(
        &self,
        group: &str,
        streams: &[String],
        start: &str,
        make: bool,
    ) -> Result<Vec<bool>> {
        if streams.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for s in streams {
            let cmd = pipe
                .cmd("XGROUP")
                .arg("CREATE")
                .arg(s)
                .arg(group)
                .arg(start);
            if make {
                cmd.arg("MKSTREAM");
            }
        }
        let mut conn = self.conn();
        let results: Vec<redis::RedisResult<Value>> = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| redis_error(e, "creating consumer groups failed"))?;
        results
            .into_iter()
            .map(|r| match r {
                Ok(_) => Ok(true),
                Err(e) if is_code(&e, "BUSYGROUP") => Ok(true),
                Err(e) if !make && is_code(&e, "requires the key to exist") => Ok(false),
                Err(e) => Err(redis_error(e, "creating a consumer group failed")),
            })
            .collect()
    }
}

/// How often a consumer trims some of the streams it reads (besides when
/// it finds them): the sweep's interval, at least once a second.
pub(super) fn trim_gap(config: &crate::RedisConfig) -> Duration {
    if config.sweep_interval.is_zero() {
        Duration::from_secs(1)
    } else {
        config.sweep_interval.min(Duration::from_secs(1))
    }
}

impl RedisConsumer {
    /// Bring this handle's streams in line with the subject index: streams
    /// that left it (deleted by the sweep) are dropped, new ones are trimmed
    /// (so nothing expired reaches this consumer) and get a group. The
    /// handle thus holds the matching streams that exist, no more.
    pub(super) async fn discover(&self, st: &mut FetchState) -> Result<()> {
        let (version, subjects) = self.transport.matching_subjects(&self.pattern).await?;
        let keys = self.transport.keys();
        let current: Vec<String> = subjects.iter().map(|s| keys.stream(s)).collect();
        let mut fresh: Vec<String> = current
            .iter()
            .filter(|k| !st.known.contains(*k))
            .cloned()
            .collect();
        if !fresh.is_empty() {
            let trimmed = self.transport.retainer().trim(&fresh).await?;
            if !trimmed.deleted.is_empty() {
                let gone: HashSet<String> =
                    trimmed.deleted.iter().map(|s| keys.stream(s)).collect();
                self.stream_ids().forget(gone.iter().map(String::as_str));
                fresh.retain(|k| !gone.contains(k));
            }
            let has_group = self
                .transport
                .ensure_groups(&self.name, &fresh, &self.lazy_start, false)
                .await?;
            let mut has_group = has_group.into_iter();
            fresh.retain(|_| has_group.next().unwrap_or(false));
            tracing::debug!(consumer = %self.name, new_streams = fresh.len(), "consumer found streams");
        }
        let current: HashSet<String> = current.into_iter().collect();
        // Streams that left the index were deleted by the sweep.
        self.stream_ids().forget(
            st.known
                .iter()
                .filter(|k| !current.contains(*k))
                .map(String::as_str),
        );
        st.known.retain(|k| current.contains(k));
        st.streams.retain(|k| current.contains(k));
        for k in fresh {
            if st.known.insert(k.clone()) {
                st.streams.push(k);
            }
        }
        st.index_version = Some(version);
        Ok(())
    }
}
