//! A durable consumer through the gateway: a *session* on the backend's
//! consumer, fetched by long-poll, acked by the handles the gateway hands out.
//!
//! A session the gateway no longer knows (it closed it after a long idle
//! time, or the gateway restarted) is opened again by name on the next fetch
//! or backlog call, once: the consumer's place is the backend's, so nothing
//! acked comes back, and deliveries of the old session that were not acked
//! come back after their ack wait.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use qis_core::backend::{token_value, value_token};
use qis_core::{
    Backlog, ConsumerConfig, Delivery, DurableConsumer, Error, ErrorKind, Received, Result,
};
use reqwest::Method;

use crate::client::Api;
use crate::transport::json;
use crate::wire::{
    parse_id, AckRequest, AckResponse, ConsumerSession, DeliveryJson, FetchRequest, FetchResponse,
    Limits, NakRequest, OpenConsumer, API,
};
use crate::NAME;

/// What a delivery's ack token holds: the session that handed it out and
/// the gateway's handle.
#[derive(Debug)]
struct Handle {
    session: Arc<str>,
    handle: String,
}

/// A consumer handle of [`HttpTransport`](crate::HttpTransport).
pub(crate) struct HttpConsumer {
    state: Arc<ConsumerState>,
}

/// Shared with the transport, which closes what is still open on close.
pub(crate) struct ConsumerState {
    api: Api,
    limits: Limits,
    open: OpenConsumer,
    session: Mutex<Session>,
    /// Malformed messages skipped by sessions before the current one.
    malformed_before: AtomicU64,
    /// … and by the current one.
    malformed_now: AtomicU64,
    closed: AtomicBool,
}

struct Session {
    id: Arc<str>,
}

impl HttpConsumer {
    /// Open (create or resume) `config` on the gateway.
    pub(crate) async fn open(
        api: Api,
        limits: Limits,
        config: ConsumerConfig,
    ) -> Result<HttpConsumer> {
        let open = OpenConsumer {
            name: config.name,
            pattern: config.pattern.to_string(),
            start: config.start.into(),
            ack_wait_ms: Some(u64::try_from(config.ack_wait.as_millis()).unwrap_or(u64::MAX)),
        };
        let session = open_session(&api, &open).await?;
        Ok(HttpConsumer {
            state: Arc::new(ConsumerState {
                api,
                limits,
                open,
                session: Mutex::new(Session {
                    id: session.session.into(),
                }),
                malformed_before: AtomicU64::new(0),
                malformed_now: AtomicU64::new(0),
                closed: AtomicBool::new(false),
            }),
        })
    }

    pub(crate) fn state(&self) -> Weak<ConsumerState> {
        Arc::downgrade(&self.state)
    }
}

async fn open_session(api: &Api, open: &OpenConsumer) -> Result<ConsumerSession> {
    let request = json(
        api.request(Method::POST, &format!("{API}/consumers"), Duration::ZERO),
        open,
    )?;
    api.call(request).await
}

impl ConsumerState {
    fn session(&self) -> Arc<str> {
        self.session
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .id
            .clone()
    }

    fn path(session: &str, what: &str) -> String {
        format!("{API}/consumers/{session}/{what}")
    }

    /// `POST /v1/consumers/{session}/{verb}` (`ack` or `nak`) with `body`.
    async fn settle(
        &self,
        session: &str,
        verb: &str,
        body: &impl serde::Serialize,
    ) -> Result<AckResponse> {
        let request = json(
            self.api
                .request(Method::POST, &Self::path(session, verb), Duration::ZERO),
            body,
        )?;
        self.api.call(request).await
    }

    /// Open the consumer again by name after the gateway forgot `stale`.
    async fn reopen(&self, stale: &Arc<str>) -> Result<()> {
        let fresh = open_session(&self.api, &self.open).await?;
        let mut s = self.session.lock().unwrap_or_else(|e| e.into_inner());
        if Arc::ptr_eq(&s.id, stale) {
            tracing::info!(consumer = %self.open.name, old = %stale, new = %fresh.session, "the gateway forgot the consumer session; opened it again by name");
            s.id = fresh.session.into();
            let before = self.malformed_now.swap(0, Ordering::Relaxed);
            self.malformed_before.fetch_add(before, Ordering::Relaxed);
        }
        Ok(())
    }

    fn delivery(&self, session: &Arc<str>, d: DeliveryJson) -> Result<Delivery> {
        d.packet.validate().map_err(|e| {
            Error::new(
                ErrorKind::Backend,
                NAME,
                format!("the gateway delivered an invalid packet: {e}"),
            )
        })?;
        Ok(Delivery {
            received: Received {
                subject: d.subject,
                id: parse_id(NAME, &d.id)?,
                packet: d.packet,
            },
            position: d.position.into(),
            delivery_count: d.delivery_count,
            token: value_token(Handle {
                session: session.clone(),
                handle: d.handle,
            }),
        })
    }

    pub(crate) async fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let session = self.session();
        let request = self.api.request(
            Method::DELETE,
            &format!("{API}/consumers/{session}"),
            Duration::ZERO,
        );
        match self.api.send(request).await {
            Ok(_) => Ok(()),
            // Forgotten by the gateway: nothing of it is left to flush.
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Drop for HttpConsumer {
    /// A consumer dropped without `close` releases its gateway session in
    /// the background (the gateway would close it after its idle time).
    fn drop(&mut self) {
        if self.state.closed.load(Ordering::Acquire) {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let state = self.state.clone();
            runtime.spawn(async move {
                if let Err(e) = state.close().await {
                    tracing::debug!(consumer = %state.open.name, error = %e, "could not release the gateway session of a dropped consumer");
                }
            });
        }
    }
}

impl fmt::Debug for HttpConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpConsumer")
            .field("name", &self.state.open.name)
            .field("session", &self.state.session())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl DurableConsumer for HttpConsumer {
    fn name(&self) -> &str {
        &self.state.open.name
    }

    async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let st = &self.state;
        let deadline = Instant::now() + wait;
        let longest = Duration::from_millis(st.limits.max_wait_ms.max(1));
        let mut reopened = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let step = left.min(longest);
            let session = st.session();
            let body = FetchRequest {
                max: max.min(st.limits.max_fetch.max(1)),
                wait_ms: u64::try_from(step.as_millis()).unwrap_or(u64::MAX),
            };
            let request = json(
                st.api
                    .request(Method::POST, &ConsumerState::path(&session, "fetch"), step),
                &body,
            )?;
            match st.api.call::<FetchResponse>(request).await {
                Err(e) if e.kind() == ErrorKind::NotFound && !reopened => {
                    st.reopen(&session).await?;
                    reopened = true;
                }
                Err(e) => return Err(e),
                Ok(answer) => {
                    st.malformed_now
                        .fetch_max(answer.malformed_skipped, Ordering::Relaxed);
                    let got = answer
                        .deliveries
                        .into_iter()
                        .map(|d| st.delivery(&session, d))
                        .collect::<Result<Vec<_>>>()?;
                    if !got.is_empty() || left <= step {
                        return Ok(got);
                    }
                }
            }
        }
    }

    async fn ack(&self, deliveries: &[Delivery]) -> Result<()> {
        let st = &self.state;
        let session = st.session();
        let mut handles = Vec::with_capacity(deliveries.len());
        let mut stale = 0usize;
        for d in deliveries {
            let h = token_value::<Handle>(NAME, d)?;
            if Arc::ptr_eq(&h.session, &session) || *h.session == *session {
                handles.push(h.handle.clone());
            } else {
                stale += 1;
            }
        }
        if stale > 0 {
            tracing::debug!(consumer = %st.open.name, stale, "acks of a session the gateway forgot are dropped: those packets come back after their ack wait");
        }
        if handles.is_empty() {
            return Ok(());
        }
        let answer = st.settle(&session, "ack", &AckRequest { handles }).await?;
        if !answer.expired.is_empty() {
            tracing::debug!(consumer = %st.open.name, expired = answer.expired.len(), "acked handles the gateway no longer held (acked before or past twice the ack wait)");
        }
        Ok(())
    }

    async fn nak(&self, delivery: &Delivery, delay: Duration) -> Result<()> {
        let st = &self.state;
        let session = st.session();
        let h = token_value::<Handle>(NAME, delivery)?;
        if *h.session != *session {
            tracing::debug!(consumer = %st.open.name, "nak of a session the gateway forgot: the packet comes back after its ack wait");
            return Ok(());
        }
        let nak = NakRequest {
            handle: h.handle.clone(),
            delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        };
        st.settle(&session, "nak", &nak).await.map(drop)
    }

    fn malformed_skipped(&self) -> u64 {
        self.state.malformed_before.load(Ordering::Relaxed)
            + self.state.malformed_now.load(Ordering::Relaxed)
    }

    async fn backlog(&self) -> Result<Backlog> {
        let st = &self.state;
        let mut reopened = false;
        loop {
            let session = st.session();
            let request = st.api.request(
                Method::GET,
                &ConsumerState::path(&session, "backlog"),
                Duration::ZERO,
            );
            match st.api.call::<Backlog>(request).await {
                Err(e) if e.kind() == ErrorKind::NotFound && !reopened => {
                    st.reopen(&session).await?;
                    reopened = true;
                }
                other => return other,
            }
        }
    }

    async fn close(&self) -> Result<()> {
        self.state.close().await
    }
}
