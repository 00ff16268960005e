//! Deposits: an idempotent producer with `acks=all`; a receipt is returned
//! once the partition leader (and its in-sync replicas) stored the record.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use qis_core::{EncodedPacket, Error, ErrorKind, Position, Receipt, Result};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::future_producer::{
    Delivery as Delivered, DeliveryFuture, OwnedDeliveryResult,
};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;

use crate::client::{base_config, ms, user_options, TracingContext};
use crate::config::KafkaConfig;
use crate::error::kafka_error;
use crate::record::headers_of;
use crate::NAME;

/// The producer every handle of a transport shares.
pub(crate) type Producer = FutureProducer<TracingContext>;

/// Build the producer: idempotent (`enable.idempotence=true`, which implies
/// `acks=all` and in-order retries), murmur2 partitioning by key (the Java
/// client's, so other producers put a subject in the same partition).
pub(crate) fn producer(config: &KafkaConfig) -> Result<Producer> {
    let mut c: ClientConfig = base_config(config);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set(
            "message.timeout.ms",
            ms(config.deposit_timeout).max(1).to_string(),
        )
        .set("linger.ms", ms(config.linger).to_string());
    user_options(&mut c, config);
    c.create_with_context(TracingContext)
        .map_err(|e| kafka_error("could not create the Kafka producer", e))
}

/// The record headers of a packet ([`headers_of`]).
fn headers(packet: &EncodedPacket, id_hex: &str) -> OwnedHeaders {
    headers_of(packet, id_hex).into_iter().fold(
        OwnedHeaders::new_with_capacity(2),
        |h, (key, value)| {
            h.insert(Header {
                key,
                value: Some(value),
            })
        },
    )
}

/// Hand one packet to the producer's queue; the future resolves once the
/// broker acknowledged it. Retries while librdkafka's local queue is full,
/// first waiting for the oldest delivery in `in_flight`, up to `timeout`.
async fn enqueue(
    producer: &Producer,
    topic: &str,
    packet: &EncodedPacket,
    in_flight: &mut VecDeque<DeliveryFuture>,
    done: &mut Vec<OwnedDeliveryResult>,
    timeout: Duration,
) -> Result<DeliveryFuture> {
    let id_hex = packet.id().to_hex();
    let started = Instant::now();
    loop {
        let record = FutureRecord::to(topic)
            .key(packet.subject().as_str())
            .payload(packet.body().as_ref())
            .headers(headers(packet, &id_hex));
        match producer.send_result(record) {
            Ok(f) => return Ok(f),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                if started.elapsed() < timeout =>
            {
                match in_flight.pop_front() {
                    Some(f) => done.push(settle(f).await?),
                    None => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
            Err((e, _)) => {
                return Err(kafka_error(
                    format!(
                        "could not queue packet {} on {}",
                        packet.id(),
                        packet.subject()
                    ),
                    e,
                ))
            }
        }
    }
}

async fn settle(f: DeliveryFuture) -> Result<OwnedDeliveryResult> {
    f.await.map_err(|_| {
        Error::new(
            ErrorKind::Closed,
            NAME,
            "the producer was shut down before the broker acknowledged the packet",
        )
    })
}

fn receipt(packet: &EncodedPacket, result: OwnedDeliveryResult) -> Result<Receipt> {
    match result {
        Ok(Delivered {
            partition, offset, ..
        }) => Ok(Receipt {
            subject: packet.subject().clone(),
            id: packet.id(),
            position: Position::Offset { partition, offset },
            duplicate: false,
        }),
        Err((e, _)) => Err(kafka_error(
            format!(
                "packet {} on {} was not stored",
                packet.id(),
                packet.subject()
            ),
            e,
        )),
    }
}

/// Deposit one packet and wait for the broker's acknowledgement.
pub(crate) async fn deposit_one(
    producer: &Producer,
    topic: &str,
    packet: &EncodedPacket,
    timeout: Duration,
) -> Result<Receipt> {
    let mut none = VecDeque::new();
    let mut done = Vec::new();
    let f = enqueue(producer, topic, packet, &mut none, &mut done, timeout).await?;
    let result = settle(f).await?;
    let r = receipt(packet, result)?;
    tracing::debug!(subject = %packet.subject(), id = %packet.id(), position = %r.position, "deposited");
    Ok(r)
}

/// Deposit many packets: all are queued first (in input order, so one
/// subject's packets keep their order in its partition), then the
/// acknowledgements are collected in order.
pub(crate) async fn deposit_many(
    producer: &Producer,
    topic: &str,
    packets: &[EncodedPacket],
    timeout: Duration,
) -> Result<Vec<Receipt>> {
    let mut in_flight: VecDeque<DeliveryFuture> = VecDeque::with_capacity(packets.len());
    let mut done: Vec<OwnedDeliveryResult> = Vec::with_capacity(packets.len());
    for p in packets {
        let f = enqueue(producer, topic, p, &mut in_flight, &mut done, timeout).await?;
        in_flight.push_back(f);
    }
    while let Some(f) = in_flight.pop_front() {
        done.push(settle(f).await?);
    }
    let receipts = packets
        .iter()
        .zip(done)
        .map(|(p, r)| receipt(p, r))
        .collect::<Result<Vec<_>>>()?;
    tracing::debug!(count = receipts.len(), "deposited batch");
    Ok(receipts)
}

/// Put raw bytes on the topic with `subject` as the key and no headers, the
/// way a foreign producer would: no validation at all.
pub(crate) async fn raw(
    producer: &Producer,
    topic: &str,
    subject: &str,
    body: &[u8],
) -> Result<()> {
    let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).key(subject).payload(body);
    let f = producer
        .send_result(record)
        .map_err(|(e, _)| kafka_error("could not queue a raw record", e))?;
    match settle(f).await? {
        Ok(_) => Ok(()),
        Err((e, _)) => Err(kafka_error("a raw record was not stored", e)),
    }
}
