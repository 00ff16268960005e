//! What the core tests share: a valid test packet, and a tracing layer that
//! records the spans an operation opens.

// Each test binary uses part of this module.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use qis_core::{
    async_trait, Capabilities, Checked, ConsumerConfig, ConsumerInfo, DurableConsumer,
    EncodedPacket, Error, ErrorKind, LiveSubscription, MemoryTransport, OutcomePacket,
    OutcomeTransport, Receipt, Result, Scored, SimilarityQuery, Subject, SubjectPattern,
    TransportInfo,
};

/// A valid packet from `agent` on `hvac`/`energy-anomaly`; `n` goes into
/// the conclusion and the timestamp, so (agent, n) makes it unique.
pub fn packet(agent: &str, n: usize) -> OutcomePacket {
    OutcomePacket {
        agent_id: agent.into(),
        domain: "hvac".into(),
        problem_class: "energy-anomaly".into(),
        conclusion: format!("finding {n}"),
        confidence: 0.5,
        context_vector: vec![0.1, 0.2],
        timestamp: 1_764_000_000.0 + n as f64,
        source_node: "n".into(),
    }
}

/// The span names and field names opened, in order.
pub type SpanLog = Arc<Mutex<Vec<(String, Vec<String>)>>>;

/// A layer that records every new span's name and field names.
#[derive(Default, Clone)]
pub struct Spans(pub SpanLog);

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

/// Record the spans opened on this thread (down to DEBUG) until the guard
/// is dropped.
pub fn record_spans() -> (Spans, tracing::subscriber::DefaultGuard) {
    use tracing_subscriber::layer::SubscriberExt;
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry()
        .with(spans.clone())
        .with(tracing_subscriber::filter::LevelFilter::DEBUG);
    let guard = tracing::subscriber::set_default(subscriber);
    // Other tests of the binary, on other threads and with no subscriber,
    // may have registered a call site while this one was being set up;
    // tracing caches each call site's interest, so ask it again.
    tracing::callsite::rebuild_interest_cache();
    (spans, guard)
}

/// A memory store standing in for a backend that misbehaves: it claims
/// only the capabilities it is given, counts the similarity queries that
/// reach it, and can fail its next deposits as a link that is down. For
/// what the checking layer refuses before the backend sees it, and what a
/// bridge does when its destination fails.
#[derive(Debug)]
pub struct Doctored {
    inner: Checked<MemoryTransport>,
    info: TransportInfo,
    /// How many similarity queries reached the store.
    pub similar_calls: Arc<Mutex<usize>>,
    /// How many deposit calls still fail (`Unavailable`, "the link is down").
    failing: AtomicU32,
}

impl Doctored {
    /// A fresh memory store claiming `caps`.
    pub fn new(caps: Capabilities) -> Doctored {
        Doctored::on(MemoryTransport::new(Subject::default()), caps)
    }

    /// `store` (a handle on a memory store) claiming `caps`.
    pub fn on(store: Checked<MemoryTransport>, caps: Capabilities) -> Doctored {
        Doctored {
            info: TransportInfo::new("doctored", caps, store.prefix().clone()),
            inner: store,
            similar_calls: Arc::default(),
            failing: AtomicU32::new(0),
        }
    }

    /// A handle on `store` with all its capabilities whose next `deposits`
    /// deposit calls fail.
    pub fn failing(store: &Checked<MemoryTransport>, deposits: u32) -> Doctored {
        let doctored = Doctored::on(store.handle(), store.capabilities());
        doctored.failing.store(deposits, Ordering::SeqCst);
        doctored
    }

    /// Down (an `Unavailable` error) while `failing` counts down to zero.
    fn link(&self) -> Result<()> {
        match self
            .failing
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        {
            Ok(_) => Err(Error::new(
                ErrorKind::Unavailable,
                "doctored",
                "the link is down",
            )),
            Err(_) => Ok(()),
        }
    }
}

#[async_trait]
impl OutcomeTransport for Doctored {
    fn info(&self) -> &TransportInfo {
        &self.info
    }
    async fn deposit_encoded(&self, p: &EncodedPacket) -> Result<Receipt> {
        self.link()?;
        self.inner.deposit_encoded(p).await
    }
    async fn deposit_encoded_batch(&self, p: &[EncodedPacket]) -> Result<Vec<Receipt>> {
        self.link()?;
        self.inner.deposit_encoded_batch(p).await
    }
    async fn publish_encoded(&self, p: &EncodedPacket) -> Result<()> {
        self.inner.publish_encoded(p).await
    }
    async fn consumer(&self, c: ConsumerConfig) -> Result<Arc<dyn DurableConsumer>> {
        self.inner.consumer(c).await
    }
    async fn subscribe(&self, p: SubjectPattern) -> Result<LiveSubscription> {
        self.inner.subscribe(p).await
    }
    async fn consumers(&self) -> Result<Vec<ConsumerInfo>> {
        self.inner.consumers().await
    }
    async fn similar(&self, q: &SimilarityQuery) -> Result<Vec<Scored>> {
        *self.similar_calls.lock().unwrap() += 1;
        self.inner.similar(q).await
    }
    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}
