//! Consumer sessions: the gateway's handles on its backend's durable
//! consumers, and the deliveries they handed out, kept by an opaque handle
//! until acked, nak-ed or expired.
//!
//! - A session is one backend consumer handle, opened by name: several
//!   sessions on one name share its work where the backend does
//!   ([`Capabilities::shared_consumers`](qis_core::Capabilities)).
//! - Each fetched [`Delivery`] is kept under a handle (a number from one
//!   gateway-wide counter, so a handle never names another session's
//!   delivery), for twice the consumer's ack wait and at least a minute:
//!   after the ack wait the backend delivers the packet again anyway, under
//!   a new handle. A session keeps at most `max_pending` deliveries.
//! - A session unused for `session_idle` (no request on it, none in
//!   progress) is closed (acks flushed); so are all of them at shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use qis_core::{ConsumerConfig, Delivery, DurableConsumer};

use crate::config::GatewayConfig;
use crate::error::ApiError;
use crate::state::Shared;

/// The shortest time a handle is kept.
const MIN_HANDLE_LIFE: Duration = Duration::from_secs(60);

/// Every open session, by id.
pub(crate) struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
    /// The next delivery handle (gateway-wide).
    next_handle: AtomicU64,
    max_sessions: usize,
    max_pending: usize,
    idle: Duration,
}

/// One consumer session.
pub(crate) struct Session {
    pub id: String,
    pub config: ConsumerConfig,
    pub consumer: Arc<dyn DurableConsumer>,
    pending: Mutex<HashMap<u64, Pending>>,
    last_used: Mutex<Instant>,
    /// Requests using it now: an idle sweep leaves it alone meanwhile.
    active: AtomicUsize,
    closed: AtomicBool,
}

/// A session in use by one request; the session counts as used until the
/// request ends.
pub(crate) struct InUse(Arc<Session>);

/// As a handler argument: the session named by the request path
/// (`/v1/consumers/{session}/…`); an unknown one is a 404.
impl FromRequestParts<Shared> for InUse {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &Shared) -> Result<Self, ApiError> {
        let Path(id) = Path::<String>::from_request_parts(parts, s)
            .await
            .map_err(|e| ApiError::invalid_input(e.body_text()))?;
        s.sessions.get(&id)
    }
}

impl std::ops::Deref for InUse {
    type Target = Session;
    fn deref(&self) -> &Session {
        &self.0
    }
}

impl Drop for InUse {
    fn drop(&mut self) {
        self.0.touch();
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Pending {
    delivery: Delivery,
    expires: Instant,
}

/// What an ack or nak found for its handles.
pub(crate) struct Taken {
    /// Deliveries this session held, removed from it.
    pub deliveries: Vec<(u64, Delivery)>,
    /// Handles it handed out and no longer holds.
    pub expired: Vec<String>,
}

impl Sessions {
    pub fn new(config: &GatewayConfig) -> Sessions {
        Sessions {
            map: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            max_sessions: config.max_sessions,
            max_pending: config.max_pending,
            idle: config.session_idle,
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether one more session may open.
    pub fn check_room(&self) -> Result<(), ApiError> {
        let open = self.map().len();
        if open >= self.max_sessions {
            return Err(ApiError::busy(format!(
                "this gateway has {open} consumer sessions open (max_sessions): close some (DELETE /v1/consumers/{{session}}) or retry later"
            )));
        }
        Ok(())
    }

    /// Register a session on `consumer`; its id.
    pub fn insert(
        &self,
        config: ConsumerConfig,
        consumer: Arc<dyn DurableConsumer>,
    ) -> Arc<Session> {
        let id = format!("c{:032x}", rand::random::<u128>());
        let session = Arc::new(Session {
            id: id.clone(),
            config,
            consumer,
            pending: Mutex::new(HashMap::new()),
            last_used: Mutex::new(Instant::now()),
            active: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        });
        self.map().insert(id, session.clone());
        session
    }

    /// The session `id`, in use until the result is dropped, or 404.
    pub fn get(&self, id: &str) -> Result<InUse, ApiError> {
        let session = self.map().get(id).cloned().ok_or_else(|| {
            ApiError::not_found(format!(
                "consumer session {id} is not open on this gateway (closed, idle too long, or the gateway restarted): open the consumer again by name (POST /v1/consumers)"
            ))
        })?;
        session.active.fetch_add(1, Ordering::AcqRel);
        session.touch();
        Ok(InUse(session))
    }

    /// Remove the session `id` (to close it), or 404.
    pub fn remove(&self, id: &str) -> Result<Arc<Session>, ApiError> {
        self.map()
            .remove(id)
            .ok_or_else(|| ApiError::not_found(format!("consumer session {id} is not open")))
    }

    /// Every open session.
    pub fn all(&self) -> Vec<Arc<Session>> {
        self.map().values().cloned().collect()
    }

    /// Remove the sessions idle for longer than `session_idle`, and drop
    /// expired handles of the others; the removed ones, to be closed.
    pub fn sweep(&self) -> Vec<Arc<Session>> {
        let now = Instant::now();
        let mut map = self.map();
        let idle: Vec<String> = map
            .iter()
            .filter(|(_, s)| {
                s.active.load(Ordering::Acquire) == 0
                    && now.duration_since(s.last_used()) > self.idle
            })
            .map(|(id, _)| id.clone())
            .collect();
        let removed = idle.iter().filter_map(|id| map.remove(id)).collect();
        for s in map.values() {
            s.purge(now);
        }
        removed
    }

    /// Remove every session, to close them at shutdown.
    pub fn drain(&self) -> Vec<Arc<Session>> {
        self.map().drain().map(|(_, s)| s).collect()
    }

    /// How many deliveries `session` may still take, or 429 when full.
    pub fn room(&self, session: &Session) -> Result<usize, ApiError> {
        session.purge(Instant::now());
        let held = session.pending().len();
        let room = self.max_pending.saturating_sub(held);
        if room == 0 {
            return Err(ApiError::busy(format!(
                "consumer session {} holds {held} unacked deliveries (max_pending): ack or nak some first",
                session.id
            )));
        }
        Ok(room)
    }

    /// Keep `deliveries` in `session`; their handles, in order.
    pub fn hand_out(&self, session: &Session, deliveries: &[Delivery]) -> Vec<String> {
        let life = (session.config.ack_wait * 2).max(MIN_HANDLE_LIFE);
        let expires = Instant::now() + life;
        let mut pending = session.pending();
        deliveries
            .iter()
            .map(|d| {
                let h = self.next_handle.fetch_add(1, Ordering::Relaxed);
                pending.insert(
                    h,
                    Pending {
                        delivery: d.clone(),
                        expires,
                    },
                );
                h.to_string()
            })
            .collect()
    }

    /// Take the deliveries `handles` name out of `session`. A handle this
    /// gateway never handed out is 400 and nothing is taken.
    pub fn take(&self, session: &Session, handles: &[String]) -> Result<Taken, ApiError> {
        let next = self.next_handle.load(Ordering::Relaxed);
        let mut numbers = Vec::with_capacity(handles.len());
        for h in handles {
            match h.parse::<u64>() {
                Ok(n) if n > 0 && n < next => numbers.push(n),
                _ => {
                    return Err(ApiError::invalid_input(format!(
                        "handle {h:?} was not handed out by this gateway: give the handle of a delivery fetched on this session"
                    )))
                }
            }
        }
        let mut pending = session.pending();
        let mut taken = Taken {
            deliveries: Vec::with_capacity(numbers.len()),
            expired: Vec::new(),
        };
        for (n, h) in numbers.into_iter().zip(handles) {
            match pending.remove(&n) {
                Some(p) => taken.deliveries.push((n, p.delivery)),
                None => taken.expired.push(h.clone()),
            }
        }
        Ok(taken)
    }

    /// Put back deliveries whose ack or nak failed, so it can be retried.
    pub fn put_back(&self, session: &Session, deliveries: Vec<(u64, Delivery)>) {
        let life = (session.config.ack_wait * 2).max(MIN_HANDLE_LIFE);
        let expires = Instant::now() + life;
        let mut pending = session.pending();
        for (n, delivery) in deliveries {
            pending.insert(n, Pending { delivery, expires });
        }
    }
}

impl Session {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn last_used(&self) -> Instant {
        *self.last_used.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn touch(&self) {
        *self.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn purge(&self, now: Instant) {
        self.pending().retain(|_, p| p.expires > now);
    }

    /// Unacked deliveries held.
    pub fn held(&self) -> usize {
        self.pending().len()
    }

    /// Close the backend consumer (flushing its acks), once.
    pub async fn close(&self) -> qis_core::Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.pending().clear();
        self.consumer.close().await
    }
}
