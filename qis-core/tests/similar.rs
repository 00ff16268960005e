//! The checking layer on similarity queries: what it refuses, what it
//! answers without the backend, and the span it opens.

use std::sync::{Arc, Mutex};

use qis_core::{
    async_trait, Capabilities, Checked, ConsumerConfig, DurableConsumer, EncodedPacket, ErrorKind,
    LiveSubscription, MemoryTransport, OutcomePacket, OutcomeTransport, OutcomeTransportExt,
    Receipt, Result, Scored, SimilarityQuery, Subject, SubjectPattern,
};

fn packet(agent: &str, cv: Vec<f64>) -> OutcomePacket {
    OutcomePacket {
        agent_id: agent.into(),
        domain: "hvac".into(),
        problem_class: "energy-anomaly".into(),
        conclusion: "c".into(),
        confidence: 0.5,
        context_vector: cv,
        timestamp: 1_764_000_000.0,
        source_node: "n".into(),
    }
}

fn query(pattern: &str, v: Vec<f64>) -> SimilarityQuery {
    SimilarityQuery::new(SubjectPattern::new(pattern).unwrap(), v, 5).unwrap()
}

/// A memory store claiming `caps`, counting the queries that reach it.
#[derive(Debug)]
struct Counting(Checked<MemoryTransport>, Capabilities, Arc<Mutex<usize>>);

#[async_trait]
impl OutcomeTransport for Counting {
    fn name(&self) -> &'static str {
        "counting"
    }
    fn capabilities(&self) -> Capabilities {
        self.1
    }
    fn prefix(&self) -> &Subject {
        self.0.prefix()
    }
    async fn deposit_encoded(&self, p: &EncodedPacket) -> Result<Receipt> {
        self.0.deposit_encoded(p).await
    }
    async fn deposit_encoded_batch(&self, p: &[EncodedPacket]) -> Result<Vec<Receipt>> {
        self.0.deposit_encoded_batch(p).await
    }
    async fn consumer(&self, c: ConsumerConfig) -> Result<Arc<dyn DurableConsumer>> {
        self.0.consumer(c).await
    }
    async fn subscribe(&self, p: SubjectPattern) -> Result<LiveSubscription> {
        self.0.subscribe(p).await
    }
    async fn similar(&self, q: &SimilarityQuery) -> Result<Vec<Scored>> {
        *self.2.lock().unwrap() += 1;
        self.0.similar(q).await
    }
    async fn close(&self) -> Result<()> {
        self.0.close().await
    }
}

fn counting(similarity: bool) -> (Checked<Counting>, Arc<Mutex<usize>>) {
    let calls = Arc::new(Mutex::new(0));
    let caps = Capabilities {
        durable: true,
        similarity,
        ..Default::default()
    };
    let t = Checked::new(Counting(
        MemoryTransport::new(Subject::default()),
        caps,
        calls.clone(),
    ));
    (t, calls)
}

#[tokio::test]
async fn without_the_capability_a_query_is_unsupported_and_never_reaches_the_backend() {
    let (t, calls) = counting(false);
    t.deposit(&packet("a", vec![1.0])).await.unwrap();
    let e = t.similar(&query("qis.iot.>", vec![1.0])).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    let e = t
        .similar_twins(&packet("b", vec![1.0]), 5, None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    assert_eq!(*calls.lock().unwrap(), 0);
}

#[tokio::test]
async fn patterns_outside_the_prefix_closed_transports_and_zero_vectors() {
    let (t, calls) = counting(true);
    t.deposit(&packet("a", vec![1.0, 0.0])).await.unwrap();
    let e = t
        .similar(&query("other.>", vec![1.0, 0.0]))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidSubject);
    // A zero vector has no direction: nothing, without asking the backend.
    for zero in [vec![0.0, 0.0], vec![]] {
        assert!(t
            .similar(&query("qis.iot.>", zero))
            .await
            .unwrap()
            .is_empty());
    }
    assert_eq!(*calls.lock().unwrap(), 0);
    let got = t
        .similar(&query("qis.iot.>", vec![2.0, 0.0]))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(*calls.lock().unwrap(), 1);
    t.close().await.unwrap();
    let e = t
        .similar(&query("qis.iot.>", vec![1.0, 0.0]))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed);
}

/// The span names and field names the layer opens.
type SpanLog = Arc<Mutex<Vec<(String, Vec<String>)>>>;

#[derive(Default, Clone)]
struct Spans(SpanLog);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Spans {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _: &tracing::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let fields = attrs
            .metadata()
            .fields()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        self.0
            .lock()
            .unwrap()
            .push((attrs.metadata().name().to_string(), fields));
    }
}

#[tokio::test]
async fn a_query_runs_in_a_qis_similar_span_with_the_shared_field_names() {
    use tracing_subscriber::layer::SubscriberExt;
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry()
        .with(spans.clone())
        .with(tracing_subscriber::filter::LevelFilter::DEBUG);
    let _guard = tracing::subscriber::set_default(subscriber);
    let t = MemoryTransport::new(Subject::default());
    t.deposit(&packet("a", vec![1.0])).await.unwrap();
    t.similar(&query("qis.iot.>", vec![1.0])).await.unwrap();
    let seen = spans.0.lock().unwrap().clone();
    let fields = seen
        .iter()
        .find(|(n, _)| n == "qis.similar")
        .map(|(_, f)| f.clone())
        .unwrap_or_else(|| panic!("no qis.similar span in {seen:?}"));
    assert_eq!(fields, ["transport", "pattern", "max", "count"]);
}
