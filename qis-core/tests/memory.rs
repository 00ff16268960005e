//! The memory transport's own rules: retention by size and age, and the
//! receipt of a duplicate naming where the original is.

use std::time::Duration;

use qis_core::memory::MemoryConfig;
use qis_core::{
    ConsumerConfig, OutcomePacket, OutcomeTransport, OutcomeTransportExt, Position, SubjectPattern,
};

mod common;

/// Packet `n`, from an agent of its own.
fn packet(n: usize) -> OutcomePacket {
    common::packet(&format!("agent-{n}"), n)
}

#[tokio::test]
async fn retention_by_size_keeps_the_newest() {
    let body = packet(0).encode().unwrap().len() as u64;
    let t = MemoryConfig::default()
        .max_bytes(body * 5)
        .connect()
        .unwrap();
    for n in 0..20 {
        t.deposit(&packet(n)).await.unwrap();
    }
    let (count, bytes) = t.stored();
    assert!(
        bytes <= body * 5,
        "{bytes} bytes stored, limit {}",
        body * 5
    );
    assert!((4..=5).contains(&count), "{count} packets kept");
    let c = t
        .consumer(ConsumerConfig::new("c", SubjectPattern::new("qis.iot.>").unwrap()).unwrap())
        .await
        .unwrap();
    let got = c.fetch(100, Duration::from_millis(100)).await.unwrap();
    let newest: Vec<String> = got.iter().map(|d| d.packet().agent_id.clone()).collect();
    assert_eq!(newest.last().map(String::as_str), Some("agent-19"));
    assert!(!newest.contains(&"agent-0".to_string()), "{newest:?}");
}

#[tokio::test]
async fn retention_by_age_applies_to_an_idle_store_too() {
    let t = MemoryConfig::default()
        .max_age(Duration::from_millis(200))
        .connect()
        .unwrap();
    t.deposit(&packet(1)).await.unwrap();
    let c = t
        .consumer(ConsumerConfig::new("c", SubjectPattern::new("qis.iot.>").unwrap()).unwrap())
        .await
        .unwrap();
    // Let the packet grow older than max_age with no deposit in between.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = c.fetch(10, Duration::ZERO).await.unwrap();
    assert!(got.is_empty(), "a packet older than max_age was delivered");
    assert_eq!(t.stored(), (0, 0));
}

#[tokio::test]
async fn a_duplicate_receipt_names_the_original() {
    let t = MemoryConfig::default().connect().unwrap();
    let p = packet(1);
    let first = t.deposit(&p).await.unwrap();
    let again = t.deposit_fingerprinted(&p, 4).await.unwrap();
    assert!(again.duplicate);
    assert_eq!(
        again.subject, first.subject,
        "the receipt names where the packet is stored"
    );
    assert_eq!(again.position, Position::Sequence(1));
    assert_eq!(t.stored().0, 1);
}

#[tokio::test]
async fn backlog_counts_waiting_and_unacked() {
    let t = MemoryConfig::default().connect().unwrap();
    for n in 0..5 {
        t.deposit(&packet(n)).await.unwrap();
    }
    let mut other = packet(9);
    other.problem_class = "elsewhere".into();
    t.deposit(&other).await.unwrap();
    let c = t
        .twins_consumer("c", "hvac", "energy-anomaly")
        .await
        .unwrap();
    let b = c.backlog().await.unwrap();
    assert_eq!((b.waiting, b.unacked), (5, 0), "only matching packets wait");
    let got = c.fetch(2, Duration::ZERO).await.unwrap();
    let b = c.backlog().await.unwrap();
    assert_eq!((b.waiting, b.unacked, b.total()), (3, 2, 5));
    c.ack(&got).await.unwrap();
    assert_eq!(c.backlog().await.unwrap().total(), 3);
    let listed = t.consumers().await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].name, "c");
    assert_eq!(
        listed[0].pattern.as_deref(),
        Some("qis.iot.hvac.energy-anomaly")
    );
    assert_eq!(listed[0].backlog, c.backlog().await.unwrap());
}
