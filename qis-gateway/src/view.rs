//! The gateway's view of the swarm, for `/v1/synthesis` and the dashboard:
//! per problem class what was seen, and its synthesis.
//!
//! The view learns from a live subscription to everything under the prefix
//! (from the deposits made through the gateway when the backend has no live
//! subscriptions), so it holds what arrived since the gateway started,
//! bounded in memory: per domain the latest packet of each agent (at most
//! [`MAX_AGENTS`], the least recently heard dropped first), and at most
//! [`MAX_CLASSES`] problem classes.
//!
//! **Synthesis for a class** `domain/problem_class` is what the agent that
//! reported that class last would compute with [`qis_core::synthesize`]: its
//! packet as its own, and as twins the latest packet of every agent of the
//! same domain heard within the view window (an hour by default). So the
//! consensus problem, its strength (the agreement) and the alert say
//! whether the domain's agents agree with that class. A result is reused
//! for up to a second, so a dashboard polling under load costs little.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::Json;
use futures::StreamExt;
use qis_core::{synthesize, OutcomePacket, Synthesis};
use serde::Serialize;

use crate::error::ApiError;
use crate::state::Shared;

/// Most agents remembered per domain.
pub const MAX_AGENTS: usize = 1024;
/// Most problem classes remembered.
pub const MAX_CLASSES: usize = 256;
/// How long a computed synthesis is reused.
const REUSE: Duration = Duration::from_secs(1);

/// What was seen, per class and per agent.
pub(crate) struct View {
    inner: Mutex<Seen>,
    window: Duration,
}

#[derive(Default)]
struct Seen {
    classes: HashMap<(String, String), Class>,
    /// domain → agent → its latest packet.
    agents: HashMap<String, HashMap<String, Vote>>,
}

struct Class {
    packets: u64,
    last: OutcomePacket,
    last_subject: String,
    heard: Instant,
    last_seen_unix: f64,
    cached: Option<(Instant, ClassSynthesis)>,
}

struct Vote {
    packet: OutcomePacket,
    heard: Instant,
}

/// One class in `/v1/synthesis`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ClassSynthesis {
    domain: String,
    problem_class: String,
    /// Packets of this class seen since the gateway started.
    packets: u64,
    /// Agents of the domain whose latest packet is of this class.
    agents_reporting: usize,
    /// When the last one arrived, in seconds since the Unix epoch.
    last_seen: f64,
    /// The subject of the last one.
    last_subject: String,
    /// The synthesis, as the last reporter of the class would compute it.
    synthesis: Synthesis,
}

impl View {
    pub fn new(window: Duration) -> View {
        View {
            inner: Mutex::new(Seen::default()),
            window,
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take note of `packet`, seen on `subject`.
    pub fn observe(&self, subject: &str, packet: &OutcomePacket) {
        let now = Instant::now();
        let mut seen = self.seen();
        let key = (packet.domain.clone(), packet.problem_class.clone());
        if !seen.classes.contains_key(&key) && seen.classes.len() >= MAX_CLASSES {
            if let Some(oldest) = seen
                .classes
                .iter()
                .min_by_key(|(_, c)| c.heard)
                .map(|(k, _)| k.clone())
            {
                seen.classes.remove(&oldest);
            }
        }
        let class = seen.classes.entry(key).or_insert_with(|| Class {
            packets: 0,
            last: packet.clone(),
            last_subject: String::new(),
            heard: now,
            last_seen_unix: 0.0,
            cached: None,
        });
        class.packets += 1;
        class.last = packet.clone();
        class.last_subject = subject.to_string();
        class.heard = now;
        class.last_seen_unix = qis_core::timestamp_now();
        let agents = seen.agents.entry(packet.domain.clone()).or_default();
        if !agents.contains_key(&packet.agent_id) && agents.len() >= MAX_AGENTS {
            if let Some(oldest) = agents
                .iter()
                .min_by_key(|(_, v)| v.heard)
                .map(|(k, _)| k.clone())
            {
                agents.remove(&oldest);
            }
        }
        let newer = agents
            .get(&packet.agent_id)
            .is_none_or(|v| packet.timestamp >= v.packet.timestamp);
        if newer {
            agents.insert(
                packet.agent_id.clone(),
                Vote {
                    packet: packet.clone(),
                    heard: now,
                },
            );
        }
    }

    /// The synthesis of one class, if it was seen.
    pub fn class(&self, domain: &str, problem_class: &str) -> Option<ClassSynthesis> {
        let key = (domain.to_string(), problem_class.to_string());
        self.compute(&key)
    }

    /// Every class, the most recently heard first.
    pub fn all(&self) -> Vec<ClassSynthesis> {
        let mut keys: Vec<_> = {
            let seen = self.seen();
            seen.classes
                .iter()
                .map(|(k, c)| (c.heard, k.clone()))
                .collect()
        };
        keys.sort_by_key(|k| std::cmp::Reverse(k.0));
        keys.iter().filter_map(|(_, k)| self.compute(k)).collect()
    }

    fn compute(&self, key: &(String, String)) -> Option<ClassSynthesis> {
        let now = Instant::now();
        // Copy out what the synthesis needs; compute without the lock.
        let (own, twins, packets, last_seen, last_subject) = {
            let seen = self.seen();
            let class = seen.classes.get(key)?;
            if let Some((at, cached)) = &class.cached {
                if now.duration_since(*at) < REUSE {
                    return Some(cached.clone());
                }
            }
            let twins: Vec<OutcomePacket> = seen
                .agents
                .get(&key.0)
                .map(|agents| {
                    agents
                        .values()
                        .filter(|v| now.duration_since(v.heard) <= self.window)
                        .map(|v| v.packet.clone())
                        .collect()
                })
                .unwrap_or_default();
            (
                class.last.clone(),
                twins,
                class.packets,
                class.last_seen_unix,
                class.last_subject.clone(),
            )
        };
        let agents_reporting = twins.iter().filter(|p| p.problem_class == key.1).count();
        let result = ClassSynthesis {
            domain: key.0.clone(),
            problem_class: key.1.clone(),
            packets,
            agents_reporting,
            last_seen,
            last_subject,
            synthesis: synthesize(&own, twins.iter()),
        };
        if let Some(class) = self.seen().classes.get_mut(key) {
            class.cached = Some((now, result.clone()));
        }
        Some(result)
    }
}

/// Feed the view from a live subscription to everything under the prefix,
/// subscribing again (with a growing pause) when the subscription fails,
/// until the gateway shuts down.
pub(crate) async fn feed(s: Shared) {
    let pattern = s.transport.prefix().all_below();
    let mut pause = Duration::from_millis(100);
    while !s.shutdown.is_cancelled() {
        let mut live = match s.transport.subscribe(pattern.clone()).await {
            Ok(live) => live,
            Err(e) => {
                tracing::warn!(error = %e, "the dashboard view cannot subscribe; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = s.shutdown.cancelled() => return,
                }
                pause = (pause * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        pause = Duration::from_millis(100);
        loop {
            tokio::select! {
                item = live.next() => match item {
                    Some(Ok(r)) => s.view.observe(&r.subject, &r.packet),
                    Some(Err(e)) => tracing::warn!(error = %e, "the dashboard view's subscription reported an error"),
                    None => break,
                },
                _ = s.shutdown.cancelled() => return,
            }
        }
    }
}

/// `GET /v1/synthesis`: every class seen, the most recent first.
pub(crate) async fn all(State(s): State<Shared>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "window_secs": s.view.window.as_secs_f64(),
        "classes": s.view.all(),
    }))
}

/// `GET /v1/synthesis/{domain}/{problem_class}`; 404 if nothing of it was seen.
pub(crate) async fn one(
    State(s): State<Shared>,
    Path((domain, problem_class)): Path<(String, String)>,
) -> Result<Json<ClassSynthesis>, ApiError> {
    s.view
        .class(&domain, &problem_class)
        .map(Json)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no packet of {domain}.{problem_class} was seen since this gateway started"
            ))
        })
}
