//! The JetStream stream every deposit goes to: created if missing, checked
//! if present.

use async_nats::jetstream::context::{CreateStreamErrorKind, GetStreamErrorKind};
use async_nats::jetstream::stream::{Config, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, ErrorCode};
use qis_core::{ErrorKind, Result};

use crate::config::{NatsConfig, NatsStorage};
use crate::error::{self, err};
use crate::retry::{retry_limit, Races, Retries};

/// The stream configuration these settings ask for.
pub(crate) fn wanted(config: &NatsConfig) -> Config {
    Config {
        name: config.stream_name(),
        description: Some(format!("QIS outcome packets under {}", config.prefix)),
        subjects: vec![config.stream_subject()],
        retention: RetentionPolicy::Limits,
        discard: DiscardPolicy::Old,
        storage: match config.storage {
            NatsStorage::File => StorageType::File,
            NatsStorage::Memory => StorageType::Memory,
        },
        max_age: config.retention.max_age,
        max_bytes: config.retention.max_bytes as i64,
        duplicate_window: config.dedup_window.min(config.retention.max_age),
        num_replicas: config.replicas,
        max_messages: -1,
        max_messages_per_subject: -1,
        max_consumers: -1,
        ..Default::default()
    }
}

/// Note `what` in `out` when the stream has another value than wanted.
fn differ<T: PartialEq + std::fmt::Debug>(out: &mut Vec<String>, what: &str, have: &T, want: &T) {
    if have != want {
        out.push(format!("{what} {have:?} (want {want:?})"));
    }
}

/// What differs between an existing stream and the wanted one, in words.
/// Only what changes the transport's behaviour counts (subjects, limits,
/// storage, retention, discard, de-duplication window, replicas).
pub(crate) fn differences(have: &Config, want: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut hs = have.subjects.clone();
    let mut ws = want.subjects.clone();
    hs.sort();
    ws.sort();
    if hs != ws {
        out.push(format!(
            "subjects {:?} (want {:?})",
            have.subjects, want.subjects
        ));
    }
    differ(&mut out, "max_age", &have.max_age, &want.max_age);
    differ(&mut out, "max_bytes", &have.max_bytes, &want.max_bytes);
    differ(&mut out, "storage", &have.storage, &want.storage);
    differ(
        &mut out,
        "dedup_window (duplicate_window)",
        &have.duplicate_window,
        &want.duplicate_window,
    );
    // The server reports a stream created without a count as 1 replica.
    differ(
        &mut out,
        "replicas",
        &have.num_replicas.max(1),
        &want.num_replicas.max(1),
    );
    differ(&mut out, "retention", &have.retention, &want.retention);
    differ(&mut out, "discard", &have.discard, &want.discard);
    if have.max_messages > 0 {
        out.push(format!(
            "max_messages {} (want unlimited)",
            have.max_messages
        ));
    }
    if have.max_messages_per_subject > 0 {
        out.push(format!(
            "max_messages_per_subject {} (want unlimited)",
            have.max_messages_per_subject
        ));
    }
    if have.sealed {
        out.push("sealed (want open for deposits)".to_string());
    }
    out
}

fn check(have: &Config, want: &Config) -> Result<()> {
    let diff = differences(have, want);
    if diff.is_empty() {
        return Ok(());
    }
    Err(err(
        ErrorKind::Conflict,
        format!(
            "stream {} exists with another configuration: {}; configure the same settings, use another stream name (NatsConfig::stream), or change the stream on the server (nats stream edit) — it was left as it is",
            want.name,
            diff.join(", ")
        ),
    ))
}

/// Create the stream, or check that the existing one has the same
/// configuration. Idempotent; safe when several processes race to create it.
/// A cluster that answers late or says it is busy (electing a leader,
/// setting up the stream's Raft group) is asked again for
/// [`NatsConfig::retry_for`].
pub(crate) async fn ensure(js: &jetstream::Context, config: &NatsConfig) -> Result<()> {
    let want = wanted(config);
    let url = &config.server_list();
    let mut retries = Retries::new(retry_limit(config), false);
    let mut races = Races::default();
    loop {
        let busy = match js.get_stream(&want.name).await {
            Ok(stream) => return check(&stream.cached_info().config, &want),
            Err(e) => match e.kind() {
                GetStreamErrorKind::JetStream(je)
                    if je.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    None
                }
                _ if lookup_is_busy(&e) => Some(error::get_stream(url, &want.name, e)),
                _ => return Err(error::get_stream(url, &want.name, e)),
            },
        };
        let busy = match busy {
            Some(busy) => busy,
            None => match js.create_stream(want.clone()).await {
                Ok(_) => {
                    tracing::info!(stream = %want.name, subjects = %config.stream_subject(), replicas = config.replicas, "created stream");
                    return Ok(());
                }
                Err(e) => {
                    let busy = match e.kind() {
                        // Someone else created it meanwhile: look again and compare.
                        CreateStreamErrorKind::JetStream(je)
                            if je.error_code() == ErrorCode::STREAM_NAME_EXIST =>
                        {
                            races.lost("stream", &want.name, "created")?;
                            continue;
                        }
                        CreateStreamErrorKind::TimedOut => true,
                        CreateStreamErrorKind::JetStream(je) => cluster_busy(&je),
                        _ => false,
                    };
                    let e = error::create_stream(
                        url,
                        &want.name,
                        &config.stream_subject(),
                        config.replicas,
                        e,
                    );
                    if !busy {
                        return Err(e);
                    }
                    e
                }
            },
        };
        let Some(pause) = retries.after_failure() else {
            return Err(busy);
        };
        tracing::debug!(stream = %want.name, error = %busy, "the cluster is busy; asking again");
        tokio::time::sleep(pause).await;
    }
}

/// A JetStream error that says "not now" (no leader, no quorum), not "no".
fn cluster_busy(je: &async_nats::jetstream::Error) -> bool {
    !error::is_jetstream_off(je)
        && (matches!(
            je.error_code(),
            ErrorCode::CLUSTER_NOT_AVAILABLE | ErrorCode::CLUSTER_NOT_LEADER
        ) || je.code() == 503)
}

/// Whether a failed stream lookup is worth asking again: no answer in time,
/// or a busy cluster. "No responders" is not: it is what a server without
/// JetStream answers.
fn lookup_is_busy(e: &async_nats::jetstream::context::GetStreamError) -> bool {
    match e.kind() {
        GetStreamErrorKind::JetStream(je) => cluster_busy(&je),
        GetStreamErrorKind::Request => std::error::Error::source(e)
            .and_then(|s| s.downcast_ref::<async_nats::jetstream::context::RequestError>())
            .is_some_and(|r| {
                r.kind() == async_nats::jetstream::context::RequestErrorKind::TimedOut
            }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn seed_created_stream_is_compatible() {
        let want = wanted(&NatsConfig::default());
        // What the server reports for the seed's add_stream(name, subjects,
        // max_bytes, max_age): unlimited counts, default 2-minute window.
        let seed = Config {
            name: "QIS_OUTCOMES".into(),
            subjects: vec!["qis.iot.>".into()],
            max_bytes: 50 * 1024 * 1024,
            max_age: Duration::from_secs(86_400),
            duplicate_window: Duration::from_secs(120),
            max_messages: -1,
            max_messages_per_subject: -1,
            ..Default::default()
        };
        assert_eq!(differences(&seed, &want), Vec::<String>::new());
    }

    #[test]
    fn other_limits_are_named() {
        let want = wanted(&NatsConfig::default());
        let mut have = want.clone();
        have.max_age = Duration::from_secs(60);
        have.storage = StorageType::Memory;
        have.subjects = vec!["qis.>".into()];
        have.num_replicas = 3;
        let diff = differences(&have, &want).join("; ");
        for word in ["max_age", "storage", "subjects", "replicas 3 (want 1)"] {
            assert!(diff.contains(word), "{diff}");
        }
        assert_eq!(check(&have, &want).unwrap_err().kind(), ErrorKind::Conflict);
    }

    #[test]
    fn replicas_are_asked_for_and_compared() {
        let want = wanted(&NatsConfig::default().replicas(3));
        assert_eq!(want.num_replicas, 3);
        let mut have = want.clone();
        assert!(differences(&have, &want).is_empty());
        have.num_replicas = 1;
        let diff = differences(&have, &want).join("; ");
        assert_eq!(diff, "replicas 1 (want 3)");
        // A stream created without a count has one replica.
        have.num_replicas = 0;
        let one = wanted(&NatsConfig::default());
        assert!(differences(&have, &one).is_empty());
    }

    #[test]
    fn dedup_window_never_exceeds_max_age() {
        let c = NatsConfig::default().max_age(Duration::from_secs(30));
        assert_eq!(wanted(&c).duplicate_window, Duration::from_secs(30));
    }
}
