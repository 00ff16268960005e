//! The checking layer (`Checked`), on the memory transport and on a
//! transport that claims no capabilities: what it refuses, and the spans it
//! opens.

use std::sync::Arc;
use std::time::Duration;

mod common;

use common::{packet, record_spans, Doctored};
use futures::StreamExt;
use qis_core::{
    deliveries, Capabilities, Checked, ConsumerConfig, DurableConsumer, EncodedPacket, ErrorKind,
    MemoryTransport, OutcomeTransport, OutcomeTransportExt, Result, StartPosition, Subject,
    SubjectPattern,
};

fn pattern(s: &str) -> SubjectPattern {
    SubjectPattern::new(s).unwrap()
}

fn kind<T>(r: Result<T>) -> ErrorKind {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.kind(),
    }
}

async fn consumer(t: &dyn OutcomeTransport, name: &str) -> Arc<dyn DurableConsumer> {
    t.consumer(ConsumerConfig::new(name, pattern("qis.iot.>")).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_closed_transport_refuses_everything_and_closes_once() {
    let t = MemoryTransport::new(Subject::default());
    let c = consumer(&t, "c").await;
    t.close().await.unwrap();
    t.close().await.unwrap();
    assert_eq!(kind(t.deposit(&packet("a", 1)).await), ErrorKind::Closed);
    assert_eq!(kind(t.publish(&packet("a", 1)).await), ErrorKind::Closed);
    assert_eq!(
        kind(
            t.consumer(ConsumerConfig::new("d", pattern("qis.iot.>")).unwrap())
                .await
        ),
        ErrorKind::Closed
    );
    assert_eq!(
        kind(t.subscribe(pattern("qis.iot.>")).await),
        ErrorKind::Closed
    );
    assert_eq!(kind(c.fetch(1, Duration::ZERO).await), ErrorKind::Closed);
    assert_eq!(kind(c.ack(&[]).await), ErrorKind::Closed);
    // Another handle on the same store is not closed.
    let other = t.handle();
    other.deposit(&packet("a", 1)).await.unwrap();
}

#[tokio::test]
async fn a_closed_consumer_refuses_fetch_and_ack() {
    let t = MemoryTransport::new(Subject::default());
    t.deposit(&packet("a", 1)).await.unwrap();
    let quick = || {
        ConsumerConfig::new("c", pattern("qis.iot.>"))
            .unwrap()
            .ack_wait(Duration::from_millis(50))
    };
    let c = t.consumer(quick()).await.unwrap();
    let got = c.fetch(10, Duration::from_millis(100)).await.unwrap();
    assert_eq!(got.len(), 1);
    c.close().await.unwrap();
    c.close().await.unwrap();
    assert_eq!(kind(c.fetch(1, Duration::ZERO).await), ErrorKind::Closed);
    assert_eq!(kind(c.ack(&got).await), ErrorKind::Closed);
    // Reopened by name: the unacked delivery is still owed.
    let again = t.consumer(quick()).await.unwrap();
    let back = again.fetch(10, Duration::from_secs(2)).await.unwrap();
    assert_eq!(
        back.len(),
        1,
        "the unacked packet came back to the reopened consumer"
    );
}

#[tokio::test]
async fn subjects_and_patterns_outside_the_prefix_are_refused_before_anything_is_stored() {
    let t = MemoryTransport::new(Subject::new("plant.one").unwrap());
    let outside =
        EncodedPacket::readable(&packet("a", 1), &Subject::new("plant.two").unwrap()).unwrap();
    assert_eq!(
        kind(t.deposit_encoded(&outside).await),
        ErrorKind::InvalidSubject
    );
    let inside = EncodedPacket::readable(&packet("a", 2), t.prefix()).unwrap();
    assert_eq!(
        kind(t.deposit_encoded_batch(&[inside, outside.clone()]).await),
        ErrorKind::InvalidSubject
    );
    assert_eq!(
        kind(t.publish_encoded(&outside).await),
        ErrorKind::InvalidSubject
    );
    assert_eq!(t.stored(), (0, 0), "nothing of a refused batch is stored");
    for p in ["plant.two.>", "plant.one", "other"] {
        let cfg = ConsumerConfig::new("c", pattern(p)).unwrap();
        assert_eq!(
            kind(t.consumer(cfg).await),
            ErrorKind::InvalidSubject,
            "{p}"
        );
        assert_eq!(
            kind(t.subscribe(pattern(p)).await),
            ErrorKind::InvalidSubject,
            "{p}"
        );
    }
    assert!(t.deposit_encoded_batch(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn fetching_nothing_is_invalid_input() {
    let t = MemoryTransport::new(Subject::default());
    let c = consumer(&t, "c").await;
    assert_eq!(
        kind(c.fetch(0, Duration::ZERO).await),
        ErrorKind::InvalidInput
    );
}

#[tokio::test]
async fn a_delivery_acked_on_a_consumer_that_did_not_hand_it_out_is_invalid_input() {
    let t = MemoryTransport::new(Subject::default());
    t.deposit(&packet("a", 1)).await.unwrap();
    let a = consumer(&t, "a").await;
    let b = consumer(&t, "b").await;
    let a2 = consumer(&t, "a").await; // another handle on the same named consumer
    let elsewhere = MemoryTransport::new(Subject::default());
    let foreign = consumer(&elsewhere, "a").await;

    let got = a.fetch(10, Duration::from_millis(200)).await.unwrap();
    assert_eq!(got.len(), 1);
    for (who, c) in [
        ("b", &b),
        ("a's other handle", &a2),
        ("another transport", &foreign),
    ] {
        assert_eq!(
            kind(c.ack(&got).await),
            ErrorKind::InvalidInput,
            "ack on {who}"
        );
        assert_eq!(
            kind(c.nak(&got[0], Duration::ZERO).await),
            ErrorKind::InvalidInput,
            "nak on {who}"
        );
    }
    // Nothing was acked by the refused calls: b still gets the packet.
    let b_got = b.fetch(10, Duration::from_millis(200)).await.unwrap();
    assert_eq!(b_got.len(), 1);
    // A mixed batch is refused whole.
    let mut mixed = got.clone();
    mixed.extend(b_got);
    assert_eq!(kind(a.ack(&mixed).await), ErrorKind::InvalidInput);
    a.ack(&got).await.unwrap();
}

#[tokio::test]
async fn what_the_capabilities_rule_out_is_unsupported() {
    let none = Checked::new(Doctored::new(Capabilities::default()));
    assert_eq!(
        kind(none.publish(&packet("a", 1)).await),
        ErrorKind::Unsupported
    );
    assert_eq!(
        kind(none.subscribe(pattern("qis.iot.>")).await),
        ErrorKind::Unsupported
    );
    assert_eq!(
        kind(
            none.consumer(ConsumerConfig::new("c", pattern("qis.iot.>")).unwrap())
                .await
        ),
        ErrorKind::Unsupported
    );

    let durable_only = Checked::new(Doctored::new(Capabilities {
        durable: true,
        ..Default::default()
    }));
    let since = ConsumerConfig::new("c", pattern("qis.iot.>"))
        .unwrap()
        .start(StartPosition::Since(std::time::SystemTime::now()));
    assert_eq!(
        kind(durable_only.consumer(since).await),
        ErrorKind::Unsupported
    );
    durable_only.deposit(&packet("a", 1)).await.unwrap();
    let c = consumer(&durable_only, "c").await;
    let got = c.fetch(1, Duration::from_millis(200)).await.unwrap();
    assert_eq!(
        kind(c.nak(&got[0], Duration::ZERO).await),
        ErrorKind::Unsupported
    );
    // The memory store underneath can count; the layer refuses anyway, as
    // the capabilities say it cannot.
    assert_eq!(kind(c.backlog().await), ErrorKind::Unsupported);
    assert_eq!(kind(durable_only.consumers().await), ErrorKind::Unsupported);
    c.ack(&got).await.unwrap();

    let counting = Checked::new(Doctored::new(Capabilities {
        durable: true,
        backlog: true,
        ..Default::default()
    }));
    counting.deposit(&packet("a", 1)).await.unwrap();
    let c = consumer(&counting, "c").await;
    assert_eq!(c.backlog().await.unwrap().waiting, 1);
    let listed = counting.consumers().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "c");
    assert_eq!(listed[0].backlog.waiting, 1);
}

#[tokio::test]
async fn the_delivery_stream_ends_once_the_consumer_is_closed() {
    let t = MemoryTransport::new(Subject::default());
    let c = consumer(&t, "c").await;
    let mut stream = deliveries(c.clone(), 10, Duration::from_millis(20));
    t.deposit(&packet("a", 1)).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(2), stream.next())
        .await
        .expect("a delivery within 2 s")
        .expect("the stream goes on")
        .expect("a delivery, not an error");
    c.ack(&[first]).await.unwrap();
    c.close().await.unwrap();
    let item = tokio::time::timeout(Duration::from_secs(2), stream.next())
        .await
        .expect("the stream answers within 2 s");
    assert_eq!(
        item.map(|r| r.map(|_| ()).unwrap_err().kind()),
        Some(ErrorKind::Closed)
    );
    let end = tokio::time::timeout(Duration::from_secs(2), stream.next())
        .await
        .expect("the stream ends instead of spinning on the permanent error");
    assert!(end.is_none(), "the stream ended after the permanent error");
}

#[tokio::test]
async fn every_operation_opens_a_span_with_the_shared_field_names() {
    // The span names and field names the layer opens, whatever the backend.
    let (spans, _guard) = record_spans();

    let t = MemoryTransport::new(Subject::default());
    t.deposit(&packet("a", 1)).await.unwrap();
    t.deposit_batch(&[packet("a", 2), packet("a", 3)])
        .await
        .unwrap();
    t.publish(&packet("a", 4)).await.unwrap();
    let _live = t.subscribe(pattern("qis.iot.>")).await.unwrap();
    let c = consumer(&t, "c").await;
    let got = c.fetch(10, Duration::from_millis(100)).await.unwrap();
    c.nak(&got[0], Duration::ZERO).await.unwrap();
    c.ack(&got).await.unwrap();
    let _ = c.backlog().await.unwrap();
    let _ = t.consumers().await.unwrap();
    // Here, not in tests/similar.rs: a test binary whose other tests reach
    // the same call site with no subscriber can miss the span (tracing
    // caches a call site's interest per process).
    let query = qis_core::SimilarityQuery::new(pattern("qis.iot.>"), vec![1.0], 5).unwrap();
    t.similar(&query).await.unwrap();

    let seen = spans.0.lock().unwrap().clone();
    let fields_of = |name: &str| {
        seen.iter()
            .find(|(n, _)| n == name)
            .map(|(_, f)| f.clone())
            .unwrap_or_else(|| panic!("no span {name} in {seen:?}"))
    };
    assert_eq!(
        fields_of("qis.deposit"),
        ["transport", "subject", "packet_id"]
    );
    assert_eq!(fields_of("qis.deposit_batch"), ["transport", "count"]);
    assert_eq!(
        fields_of("qis.publish"),
        ["transport", "subject", "packet_id"]
    );
    assert_eq!(fields_of("qis.subscribe"), ["transport", "pattern"]);
    assert_eq!(
        fields_of("qis.consumer"),
        ["transport", "consumer", "pattern"]
    );
    assert_eq!(
        fields_of("qis.fetch"),
        ["transport", "consumer", "max", "count"]
    );
    assert_eq!(fields_of("qis.nak"), ["transport", "consumer", "packet_id"]);
    assert_eq!(fields_of("qis.ack"), ["transport", "consumer", "count"]);
    assert_eq!(fields_of("qis.backlog"), ["transport", "consumer"]);
    assert_eq!(fields_of("qis.consumers"), ["transport", "count"]);
    assert_eq!(
        fields_of("qis.similar"),
        ["transport", "pattern", "max", "count"]
    );
}
