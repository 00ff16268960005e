//! # qis-transport-chroma
//!
//! QIS outcome packets in a [ChromaDB](https://www.trychroma.com/) server:
//! every deposit is a record whose embedding is the packet's context
//! vector, and similar twins ([`OutcomeTransport::similar`], SPEC §9) are
//! found by Chroma's nearest-neighbour index: the seed's vector-store lane.
//!
//! ```no_run
//! use qis_core::{OutcomePacket, OutcomeTransport, OutcomeTransportExt, SimilarityQuery};
//! use qis_transport_chroma::ChromaTransport;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> qis_core::Result<()> {
//! // `chroma run --path DIR --port 18000` (scripts/servers/chroma.sh start DIR)
//! let transport = ChromaTransport::connect_url("chroma://127.0.0.1:18000").await?;
//! let packet = OutcomePacket {
//!     agent_id: "hvac-building-a".into(),
//!     domain: "hvac".into(),
//!     problem_class: "energy-anomaly".into(),
//!     conclusion: "Compressor draw 18% above baseline.".into(),
//!     confidence: 0.87,
//!     context_vector: vec![0.18, 0.92, 0.03, 0.71],
//!     timestamp: 1_764_000_000.0,
//!     source_node: "building-a-floor-3".into(),
//! };
//! let receipt = transport.deposit(&packet).await?;
//! assert!(transport.deposit(&packet).await?.duplicate); // the packet id is the record id
//!
//! let mine = vec![0.2, 0.9, 0.05, 0.7];
//! let pattern = "qis.iot.hvac.>".parse()?;
//! let twins = transport.similar(&SimilarityQuery::new(pattern, mine, 10)?).await?;
//! assert_eq!(twins[0].id(), receipt.id);
//! transport.close().await?;
//! # Ok(()) }
//! ```
//!
//! [`ChromaTransport::connect`] returns the transport behind
//! [`qis_core::Checked`], the checking layer every backend shares.
//!
//! ## How it is stored
//!
//! - **Collections.** One per prefix and vector length,
//!   `qis_{prefix}_d{length}` (Chroma requires one dimension per
//!   collection), created on first use in the configured tenant and database
//!   with an HNSW index in cosine space and no full-text index. A packet
//!   with an empty context vector (which never matches) is stored in
//!   `qis_{prefix}_d0` under a placeholder embedding and never queried.
//! - **Records.** The id is the packet id (64 hex), the embedding the
//!   context vector (as `f32`), the document the packet's exact body (its
//!   compact JSON), and the metadata the subject, its tokens `t0`, `t1`, …
//!   and their count `ntok`, `packet_id`, `deposited_at_us`, and the
//!   packet's fields `agent_id`, `domain`, `problem_class`, `conclusion`,
//!   `confidence`, `timestamp`, `source_node`, so other Chroma clients can
//!   filter on them.
//! - **Re-deposits.** A deposit first looks its packet ids up (`get`) and
//!   adds only the new ones; a packet already stored gets the original's
//!   receipt (subject and position) marked `duplicate`
//!   ([`Capabilities::dedup`], with no window: for as long as the record
//!   exists). Chroma's `add` ignores an id it holds, so two handles
//!   depositing the same new packet at the same instant store it once but
//!   may both be told it is new.
//! - **Positions.** Chroma keeps no sequence: a receipt's position is
//!   [`Position::Sequence`] of the deposit time in microseconds since the
//!   Unix epoch, as stored with the record.
//! - **No retention.** Records stay until their collection is deleted.
//!
//! ## Similar twins
//!
//! A query goes to the collection of its vector's length (another length
//! never matches: it is in another collection). The pattern becomes a Chroma
//! `where` filter on the token fields (literal tokens as equalities, the
//! token count pinned, or bounded below after `>`), so Chroma ranks only
//! matching records; every result is checked against the pattern again.
//! Chroma ranks by its `f32` cosine distance; the transport asks for
//! `k + max(16, k/4)` candidates, decodes their bodies, recomputes the
//! cosine similarity in `f64` from the stored packet (the score every QIS
//! backend reports), drops what never matches (a stored zero vector) and
//! what is below the minimum score, and keeps the best `k` in
//! [`qis_core::similar::rank`] order, asking for four times as many when too
//! many candidates fell out. Chroma's HNSW search is approximate: on large
//! collections a true neighbour can be missed (its recall), unlike the exact
//! search of the memory and SQLite transports.
//!
//! ## What it does not do
//!
//! Chroma has no consumer groups, no change feed and no publish path, so
//! [`Capabilities`] says `durable`, `live`, `fire_and_forget`, `nak`,
//! `start_since` and `shared_consumers` are false, and the checking layer
//! answers [`OutcomeTransport::consumer`], [`OutcomeTransport::subscribe`]
//! and [`OutcomeTransport::publish_encoded`] with
//! [`ErrorKind::Unsupported`](qis_core::ErrorKind::Unsupported). Use it
//! beside a durable transport (deposit to both, or bridge into it), or as
//! the store devices query for similar twins.

use std::sync::Arc;

use async_trait::async_trait;
use qis_core::backend::InjectRaw;
use qis_core::{
    Capabilities, Checked, ConsumerConfig, DurableConsumer, EncodedPacket, Error, LiveSubscription,
    OutcomeTransport, Receipt, Result, Scored, SimilarityQuery, Subject, SubjectPattern,
    TransportInfo,
};

mod client;
mod collection;
mod config;
mod deposit;
mod similar;

pub use config::{
    ChromaConfig, DEFAULT_DATABASE, DEFAULT_PORT, DEFAULT_REQUEST_TIMEOUT, DEFAULT_TENANT,
};

#[cfg(doc)]
use qis_core::Position;

use client::Client;
use collection::Collections;

/// The transport's name in errors and [`OutcomeTransport::name`].
pub const NAME: &str = "chroma";

/// The Chroma transport. Clones share one HTTP connection pool and the
/// collection ids looked up so far; each [`connect`](Self::connect) opens an
/// independent handle.
#[derive(Debug, Clone)]
pub struct ChromaTransport {
    inner: Arc<Inner>,
}

/// A store to search by similarity: persistent and deduplicated, with
/// no consumers, live delivery or publish.
const CAPABILITIES: Capabilities = Capabilities {
    persistent: true,
    dedup: true,
    similarity: true,
    ..Capabilities::NONE
};

#[derive(Debug)]
struct Inner {
    info: TransportInfo,
    config: ChromaConfig,
    client: Client,
    collections: Collections,
}

impl ChromaTransport {
    /// Reach the server, check that the tenant exists and create the
    /// database if it does not.
    ///
    /// Fails with [`ErrorKind::Unavailable`](qis_core::ErrorKind::Unavailable)
    /// or [`Timeout`](qis_core::ErrorKind::Timeout) when the server does not
    /// answer, [`NotFound`](qis_core::ErrorKind::NotFound) for a missing
    /// tenant, [`InvalidInput`](qis_core::ErrorKind::InvalidInput) for a bad
    /// configuration.
    #[tracing::instrument(level = "debug", skip_all, fields(url = %config.url, prefix = %config.prefix))]
    pub async fn connect(config: ChromaConfig) -> Result<Checked<Self>> {
        config.check()?;
        let client = Client::new(&config)?;
        client.open_database().await?;
        Ok(Checked::new(ChromaTransport {
            inner: Arc::new(Inner {
                info: TransportInfo::new(NAME, CAPABILITIES, config.prefix.clone()),
                config,
                client,
                collections: Collections::default(),
            }),
        }))
    }

    /// Connect to the server a URL names (see [`ChromaConfig::from_url`]).
    pub async fn connect_url(url: &str) -> Result<Checked<Self>> {
        Self::connect(url.parse()?).await
    }

    /// The configuration this handle was opened with.
    pub fn config(&self) -> &ChromaConfig {
        &self.inner.config
    }

    /// The name of the collection that holds this prefix's packets whose
    /// context vectors have `length` numbers.
    pub fn collection_name(&self, length: usize) -> String {
        collection::name(&self.inner.config.prefix, length)
    }

    pub(crate) fn client(&self) -> &Client {
        &self.inner.client
    }

    pub(crate) fn collections(&self) -> &Collections {
        &self.inner.collections
    }

    pub(crate) fn prefix_subject(&self) -> &Subject {
        &self.inner.config.prefix
    }
}

#[async_trait]
impl OutcomeTransport for ChromaTransport {
    fn info(&self) -> &TransportInfo {
        &self.inner.info
    }

    async fn deposit_encoded_batch(&self, packets: &[EncodedPacket]) -> Result<Vec<Receipt>> {
        deposit::deposit(self, packets).await
    }

    async fn consumer(&self, _config: ConsumerConfig) -> Result<Arc<dyn DurableConsumer>> {
        // The checking layer answers first (Capabilities::durable is false).
        Err(Error::unsupported(NAME, "a durable consumer"))
    }

    async fn subscribe(&self, _pattern: SubjectPattern) -> Result<LiveSubscription> {
        // The checking layer answers first (Capabilities::live is false).
        Err(Error::unsupported(NAME, "a live subscription"))
    }

    async fn similar(&self, query: &SimilarityQuery) -> Result<Vec<Scored>> {
        similar::similar(self, query).await
    }

    /// Nothing to flush: every call has finished when it returns. The HTTP
    /// connections close when the last clone is dropped.
    async fn close(&self) -> Result<()> {
        Ok(())
    }
}

#[async_trait]
impl InjectRaw for ChromaTransport {
    async fn inject_raw(&self, subject: &str, body: &[u8]) -> Result<()> {
        deposit::inject_raw(self, subject, body).await
    }
}
