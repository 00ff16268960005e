//! [`HttpTransport`]: connect, deposit, publish, open consumers, subscribe.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use qis_core::backend::OpenHandles;
use qis_core::{
    Capabilities, Checked, ConsumerConfig, ConsumerInfo, DurableConsumer, EncodedPacket, Error,
    ErrorKind, LiveSubscription, OutcomeTransport, Receipt, Result, Subject, SubjectPattern,
    TransportInfo,
};
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, RequestBuilder};
use serde::Serialize;

use crate::client::Api;
use crate::config::HttpConfig;
use crate::consumer::{ConsumerState, HttpConsumer};
use crate::wire::{BatchReceipts, Info, ReceiptJson, StoredConsumers, API};
use crate::{live, NAME};

/// Room kept in a batch request body for its JSON framing.
const BATCH_FRAMING: usize = 64;

/// The `OutcomeTransport` of a device that only has HTTP: every call is a
/// request to a `qis serve` gateway, which performs it on its backend.
///
/// What goes through HTTP, and how ([`capabilities`](OutcomeTransport::capabilities)
/// are the backend's, read from the gateway at connect):
///
/// | call | request |
/// |---|---|
/// | deposit | `POST /v1/packets?subject=…` (201 + receipt) |
/// | batch deposit | `POST /v1/packets/batch`, split to the gateway's `max_batch` and `max_body`, in order |
/// | fire-and-forget | `POST /v1/publish?subject=…` (only if the backend has it) |
/// | consumer | `POST /v1/consumers` opens a session on the backend's consumer |
/// | fetch / ack / nak | `POST /v1/consumers/{session}/fetch` (long-poll) / `ack` / `nak` |
/// | backlog | `GET /v1/consumers/{session}/backlog` |
/// | consumers | `GET /v1/stored-consumers` |
/// | live | `GET /v1/live?pattern=…`, Server-Sent Events |
/// | close | `DELETE /v1/consumers/{session}` for every open consumer |
#[derive(Clone)]
pub struct HttpTransport {
    inner: Arc<Inner>,
}

struct Inner {
    api: Api,
    config: HttpConfig,
    /// What this transport is (the gateway's backend, less similarity).
    about: TransportInfo,
    /// What the gateway said about itself.
    info: Info,
    consumers: OpenHandles<ConsumerState>,
}

impl fmt::Debug for HttpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpTransport")
            .field("gateway", &self.inner.config.base_url)
            .field("backend", &self.inner.info.transport)
            .field("prefix", self.inner.about.prefix())
            .finish_non_exhaustive()
    }
}

impl HttpTransport {
    /// Connect to the gateway: read what it fronts (`GET /v1/info`) and check
    /// that it serves `config.prefix`. An unreachable gateway is
    /// [`ErrorKind::Unavailable`] (or [`ErrorKind::Timeout`]), a refused
    /// token [`ErrorKind::InvalidInput`], another prefix
    /// [`ErrorKind::Conflict`].
    pub async fn connect(config: HttpConfig) -> Result<Checked<HttpTransport>> {
        let api = Api::new(&config)?;
        let wait = config.connect_timeout;
        let info: Info = api
            .call(api.request(Method::GET, &format!("{API}/info"), wait))
            .await?;
        if info.service != "qis-gateway" {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                NAME,
                format!(
                    "{} is a {:?} service, not a qis-gateway",
                    config.base_url, info.service
                ),
            ));
        }
        if info.prefix != config.prefix.as_str() {
            return Err(Error::new(
                ErrorKind::Conflict,
                NAME,
                format!(
                    "the gateway at {} serves prefix {}, not {}: connect with ?prefix={}",
                    config.base_url, info.prefix, config.prefix, info.prefix
                ),
            ));
        }
        let prefix = Subject::new(info.prefix.clone()).map_err(|e| e.in_transport(NAME))?;
        tracing::debug!(gateway = %config.base_url, backend = %info.transport, "connected to the gateway");
        Ok(Checked::new(HttpTransport {
            inner: Arc::new(Inner {
                api,
                // The gateway has no similarity endpoint (yet).
                about: TransportInfo::new(
                    NAME,
                    Capabilities {
                        similarity: false,
                        ..info.capabilities
                    },
                    prefix,
                ),
                info,
                config,
                consumers: OpenHandles::default(),
            }),
        }))
    }

    /// What the gateway said about itself at connect: its backend's name,
    /// prefix and capabilities, and its request limits.
    pub fn gateway(&self) -> &Info {
        &self.inner.info
    }

    /// The base URL of the gateway.
    pub fn base_url(&self) -> &str {
        &self.inner.config.base_url
    }

    fn api(&self) -> &Api {
        &self.inner.api
    }

    fn deposit_request(&self, path: &str, packet: &EncodedPacket) -> RequestBuilder {
        self.api()
            .request(
                Method::POST,
                &format!("{API}/{path}?subject={}", packet.subject()),
                Duration::ZERO,
            )
            .header(CONTENT_TYPE, "application/json")
            .body(packet.body().clone())
    }

    /// One batch request body: the packets' own bytes, not re-encoded.
    fn batch_body(packets: &[EncodedPacket]) -> Vec<u8> {
        let mut body =
            Vec::with_capacity(BATCH_FRAMING + packets.iter().map(item_size).sum::<usize>());
        body.extend_from_slice(b"{\"packets\":[");
        for (i, p) in packets.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(b"{\"subject\":\"");
            // A subject is tokens of a-z 0-9 _ - and dots: nothing to escape.
            body.extend_from_slice(p.subject().as_str().as_bytes());
            body.extend_from_slice(b"\",\"packet\":");
            body.extend_from_slice(p.body());
            body.push(b'}');
        }
        body.extend_from_slice(b"]}");
        body
    }

    /// Split `packets` into requests within the gateway's limits, in order.
    fn chunks<'a>(&self, packets: &'a [EncodedPacket]) -> Vec<&'a [EncodedPacket]> {
        let limits = self.inner.info.limits;
        let max_bytes = (limits.max_body as usize).saturating_sub(BATCH_FRAMING);
        let max_count = limits.max_batch.max(1);
        let mut out = Vec::new();
        let (mut start, mut bytes) = (0, 0);
        for (i, p) in packets.iter().enumerate() {
            let size = item_size(p);
            if i > start && (i - start >= max_count || bytes + size > max_bytes) {
                out.push(&packets[start..i]);
                start = i;
                bytes = 0;
            }
            bytes += size;
        }
        if start < packets.len() {
            out.push(&packets[start..]);
        }
        out
    }

    fn check_receipt(packet: &EncodedPacket, receipt: &Receipt) {
        if receipt.id != packet.id() {
            tracing::warn!(
                sent = %packet.id(),
                stored = %receipt.id,
                "the gateway stored the packet under another id than its body's: it re-encoded it differently"
            );
        }
    }
}

fn item_size(p: &EncodedPacket) -> usize {
    p.body().len() + p.subject().as_str().len() + 28
}

/// A JSON request body.
pub(crate) fn json<T: Serialize>(request: RequestBuilder, body: &T) -> Result<RequestBuilder> {
    let bytes = serde_json::to_vec(body).map_err(|e| {
        Error::new(
            ErrorKind::InvalidInput,
            NAME,
            format!("cannot encode the request: {e}"),
        )
    })?;
    Ok(request.header(CONTENT_TYPE, "application/json").body(bytes))
}

#[async_trait]
impl OutcomeTransport for HttpTransport {
    fn info(&self) -> &TransportInfo {
        &self.inner.about
    }

    /// The backend's durable consumers, through `GET /v1/stored-consumers`.
    async fn consumers(&self) -> Result<Vec<ConsumerInfo>> {
        let request = self.api().request(
            Method::GET,
            &format!("{API}/stored-consumers"),
            Duration::ZERO,
        );
        let answer: StoredConsumers = self.api().call(request).await?;
        Ok(answer.consumers.into_iter().map(Into::into).collect())
    }

    async fn deposit_encoded(&self, packet: &EncodedPacket) -> Result<Receipt> {
        let r: ReceiptJson = self
            .api()
            .call(self.deposit_request("packets", packet))
            .await?;
        let receipt = r.into_receipt(NAME)?;
        Self::check_receipt(packet, &receipt);
        Ok(receipt)
    }

    async fn deposit_encoded_batch(&self, packets: &[EncodedPacket]) -> Result<Vec<Receipt>> {
        let mut receipts = Vec::with_capacity(packets.len());
        for chunk in self.chunks(packets) {
            let request = self
                .api()
                .request(
                    Method::POST,
                    &format!("{API}/packets/batch"),
                    Duration::ZERO,
                )
                .header(CONTENT_TYPE, "application/json")
                .body(Self::batch_body(chunk));
            let answer: BatchReceipts = self.api().call(request).await?;
            if answer.receipts.len() != chunk.len() {
                return Err(Error::new(
                    ErrorKind::Backend,
                    NAME,
                    format!(
                        "the gateway answered {} receipts for a batch of {}",
                        answer.receipts.len(),
                        chunk.len()
                    ),
                ));
            }
            for (p, r) in chunk.iter().zip(answer.receipts) {
                let receipt = r.into_receipt(NAME)?;
                Self::check_receipt(p, &receipt);
                receipts.push(receipt);
            }
        }
        Ok(receipts)
    }

    async fn publish_encoded(&self, packet: &EncodedPacket) -> Result<()> {
        self.api()
            .send(self.deposit_request("publish", packet))
            .await
            .map(drop)
    }

    async fn consumer(&self, config: ConsumerConfig) -> Result<Arc<dyn DurableConsumer>> {
        let consumer =
            HttpConsumer::open(self.inner.api.clone(), self.inner.info.limits, config).await?;
        self.inner.consumers.insert(consumer.state());
        Ok(Arc::new(consumer))
    }

    async fn subscribe(&self, pattern: SubjectPattern) -> Result<LiveSubscription> {
        live::subscribe(self.api(), &pattern, self.inner.config.connect_timeout).await
    }

    async fn close(&self) -> Result<()> {
        self.inner
            .consumers
            .close_all(|state| async move { state.close().await })
            .await
    }
}
