//! The topic a prefix is stored in: created when missing (with the
//! [settings] that make retention hold), an existing one's settings
//! compared with the configuration, its partitions counted, and a consumer
//! placed at the end of each.

mod settings;

use std::collections::HashMap;
use std::time::Duration;

use qis_core::{Error, ErrorKind};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;

use crate::client::{base_config, user_options, TracingContext};
use crate::config::KafkaConfig;
use crate::error::{join_error, kafka_error, kind_of_code};
use crate::record::RawRecord;
use crate::NAME;
use settings::TopicSettings;

/// The answer to an admin `request`, waited for at most the request timeout
/// (and a second more, for the client's own timeout to fire first);
/// [`ErrorKind::Unavailable`] when the brokers do not answer.
async fn answered<T>(
    config: &KafkaConfig,
    request: &str,
    answer: impl std::future::Future<Output = T>,
) -> qis_core::Result<T> {
    tokio::time::timeout(config.request_timeout + Duration::from_secs(1), answer)
        .await
        .map_err(|_| {
            Error::new(
                ErrorKind::Unavailable,
                NAME,
                format!(
                    "no answer from the Kafka brokers at {} to {request} within {:?}: check that they are running and reachable",
                    config.bootstrap_servers, config.request_timeout
                ),
            )
        })
}

/// Create the topic if it is missing (partitions, replication, retention from
/// the config), then return its partition count as the brokers report it.
pub(crate) async fn ensure_topic(config: &KafkaConfig, topic: &str) -> qis_core::Result<i32> {
    let mut cc = base_config(config);
    user_options(&mut cc, config);
    let admin: AdminClient<TracingContext> = cc
        .create_with_context(TracingContext)
        .map_err(|e| kafka_error("could not create the Kafka admin client", e))?;

    let mut new_topic = NewTopic::new(
        topic,
        config.partitions,
        TopicReplication::Fixed(config.replication_factor),
    );
    let entries = TopicSettings::wanted(config, config.partitions).entries();
    for (name, value) in &entries {
        new_topic = new_topic.set(name, value);
    }
    let opts = AdminOptions::new()
        .request_timeout(Some(config.request_timeout))
        .operation_timeout(Some(config.request_timeout));
    let created = answered(
        config,
        "CreateTopics",
        admin.create_topics([&new_topic], &opts),
    )
    .await?;
    let mut create_error = None;
    match created {
        Ok(results) => {
            for r in results {
                match r {
                    Ok(name) => {
                        tracing::info!(topic = %name, partitions = config.partitions, "created topic")
                    }
                    Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((name, code)) => {
                        tracing::warn!(topic = %name, error = %code, "could not create topic; checking whether it exists");
                        create_error = Some(code);
                    }
                }
            }
        }
        Err(e) => {
            let e = kafka_error(
                format!(
                    "could not reach the Kafka brokers at {}",
                    config.bootstrap_servers
                ),
                e,
            );
            return Err(match e.kind() {
                ErrorKind::Timeout => {
                    Error::new(ErrorKind::Unavailable, NAME, e.message().to_string()).with_source(e)
                }
                _ => e,
            });
        }
    }

    // Read the partition count back (a new topic may take a moment to show).
    let admin = std::sync::Arc::new(admin);
    let partitions = {
        let admin = admin.clone();
        let topic = topic.to_string();
        let timeout = config.request_timeout;
        tokio::task::spawn_blocking(move || wait_for_topic(&admin, &topic, timeout, create_error))
            .await
            .map_err(|e| join_error("reading topic metadata", e))??
    };
    check_settings(&admin, config, topic, partitions).await?;
    Ok(partitions)
}

/// Compare the topic's retention settings with the configuration's (on the
/// topic's own partition count): a topic that differs is a
/// [`Conflict`](ErrorKind::Conflict) listing the differences, and is left as
/// it is. Settings the brokers do not report (tansu reports only those given
/// when the topic was created) cannot be compared and are skipped; a broker
/// that refuses DescribeConfigs (no permission) leaves the topic unchecked,
/// with a warning.
async fn check_settings(
    admin: &AdminClient<TracingContext>,
    config: &KafkaConfig,
    topic: &str,
    partitions: i32,
) -> qis_core::Result<()> {
    let want = TopicSettings::wanted(config, partitions);
    let opts = AdminOptions::new().request_timeout(Some(config.request_timeout));
    let resource = [ResourceSpecifier::Topic(topic)];
    let described = answered(
        config,
        "DescribeConfigs",
        admin.describe_configs(&resource, &opts),
    )
    .await?;
    let described = match described.map(|results| results.into_iter().next()) {
        Ok(Some(Ok(d))) => d,
        Ok(Some(Err(code))) => {
            tracing::warn!(%topic, error = %code, "could not read the topic's settings; its retention is not checked");
            return Ok(());
        }
        Ok(None) => {
            tracing::warn!(%topic, "the brokers described no settings for the topic; its retention is not checked");
            return Ok(());
        }
        Err(e) => {
            tracing::warn!(%topic, error = %e, "could not read the topic's settings; its retention is not checked");
            return Ok(());
        }
    };
    let have: HashMap<String, Option<String>> = described
        .entries
        .into_iter()
        .map(|e| (e.name, e.value))
        .collect();
    let (differ, unreported) = want.differences(&have);
    if !unreported.is_empty() {
        tracing::debug!(%topic, settings = ?unreported, "the brokers do not report these topic settings; they are not compared");
    }
    if differ.is_empty() {
        tracing::debug!(%topic, ?want, age_bound = ?want.age_bound(), "topic settings match the configuration");
        return Ok(());
    }
    let alter = want
        .entries()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    Err(Error::new(
        ErrorKind::Conflict,
        NAME,
        format!(
            "topic {topic} exists with other retention settings: {}; configure the same max_age and max_bytes (the topic has {partitions} partitions), use another topic (KafkaConfig::topic), or change the topic on the brokers (kafka-configs.sh --bootstrap-server {} --alter --entity-type topics --entity-name {topic} --add-config {alter}) — it was left as it is",
            differ.join(", "),
            config.bootstrap_servers,
        ),
    ))
}

fn wait_for_topic(
    admin: &AdminClient<TracingContext>,
    topic: &str,
    timeout: Duration,
    create_error: Option<RDKafkaErrorCode>,
) -> qis_core::Result<i32> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let md = admin
            .inner()
            .fetch_metadata(Some(topic), timeout)
            .map_err(|e| kafka_error(format!("could not read metadata of topic {topic}"), e))?;
        if let Some(t) = md.topics().iter().find(|t| t.name() == topic) {
            match t.error() {
                None if !t.partitions().is_empty() => return Ok(t.partitions().len() as i32),
                None
                | Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
                | Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE) => {}
                Some(err) => {
                    let code: RDKafkaErrorCode = err.into();
                    return Err(Error::new(
                        kind_of_code(code),
                        NAME,
                        format!("topic {topic} is not usable: {code}"),
                    ));
                }
            }
        }
        if std::time::Instant::now() >= deadline {
            let why = match create_error {
                Some(code) => format!("it could not be created ({code})"),
                None => "it did not appear after being created".to_string(),
            };
            return Err(Error::new(
                ErrorKind::Unavailable,
                NAME,
                format!("topic {topic} is missing and {why}: create it or grant the CreateTopics permission"),
            ));
        }
        // Metadata propagation after CreateTopics; bounded by the deadline.
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `(partition, offset)` pairs.
pub(crate) type Offsets = Vec<(i32, i64)>;

/// The end of each partition of `topic` as a fetch sees it: the consumer
/// (with `enable.partition.eof=true`, no assignment yet) is assigned every
/// partition at its listed end offset and reads forward until each reports
/// end-of-partition. Returns the end offsets and the records that arrived in
/// a partition after its end was reached (they are newer than the call); the
/// consumer stays assigned at those positions.
///
/// On Apache Kafka the listed end is the end and nothing is read; reading on
/// to the fetch's end-of-partition also covers brokers whose ListOffsets
/// answer lags behind the last batch.
pub(crate) fn assign_at_end<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    partitions: i32,
    timeout: Duration,
) -> qis_core::Result<(Offsets, Vec<RawRecord>)> {
    let n = partitions.max(0) as usize;
    let mut next = vec![0i64; n];
    let mut tpl = TopicPartitionList::with_capacity(n);
    for p in 0..partitions {
        let (_, high) = consumer.fetch_watermarks(topic, p, timeout).map_err(|e| {
            kafka_error(
                format!("could not read the end of {topic} partition {p}"),
                e,
            )
        })?;
        next[p as usize] = high;
        tpl.add_partition_offset(topic, p, Offset::Offset(high))
            .map_err(|e| kafka_error("could not build a partition assignment", e))?;
    }
    consumer
        .assign(&tpl)
        .map_err(|e| kafka_error(format!("could not assign the partitions of {topic}"), e))?;
    let mut at_end = vec![false; n];
    let mut newer = Vec::new();
    let deadline = std::time::Instant::now() + timeout;
    while at_end.iter().any(|e| !e) {
        if std::time::Instant::now() >= deadline {
            return Err(Error::new(
                ErrorKind::Timeout,
                NAME,
                format!("could not read to the end of topic {topic} within {timeout:?}: check the brokers"),
            ));
        }
        match consumer.poll(Duration::from_millis(50)) {
            Some(Ok(m)) => {
                let p = m.partition();
                let Some(i) = usize::try_from(p).ok().filter(|&i| i < n) else {
                    continue;
                };
                if at_end[i] {
                    newer.push(RawRecord::from_message(&m));
                } else {
                    next[i] = next[i].max(m.offset() + 1);
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                if let Some(e) = usize::try_from(p).ok().and_then(|i| at_end.get_mut(i)) {
                    *e = true;
                }
            }
            Some(Err(e)) => tracing::debug!(topic, error = %e, "while reading to the end"),
            None => {}
        }
    }
    Ok(((0..partitions).zip(next).collect(), newer))
}

/// The partition count of `topic` from a fresh metadata request.
pub(crate) fn partition_count<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    timeout: Duration,
) -> qis_core::Result<i32> {
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| kafka_error(format!("could not read metadata of topic {topic}"), e))?;
    let partitions = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().len() as i32)
        .unwrap_or(0);
    if partitions == 0 {
        return Err(Error::new(
            ErrorKind::NotFound,
            NAME,
            format!("topic {topic} has no partitions: was it deleted?"),
        ));
    }
    Ok(partitions)
}
