//! Store and forward: a [`Bridge`] moves packets from one transport to
//! another, any pair of backends, and survives either side going away.
//!
//! A device deposits to its local store (SQLite) whether or not its link is
//! up; a bridge forwards what it stored to the hub when the link returns
//! (**up**), and another brings the hub's packets on the device's problems
//! down into the local store (**down**), so the device synthesises its twins
//! while offline.
//!
//! # How a bridge forwards
//!
//! - It reads the source through a **durable consumer** named
//!   [`BridgeConfig::name`] (created with all retained history), deposits
//!   each batch on the destination with acknowledgements in flight
//!   ([`OutcomeTransport::deposit_encoded_batch`](crate::OutcomeTransport::deposit_encoded_batch)), and **acks the source
//!   only after the destination's receipts**. Batches are pipelined: while
//!   one is deposited, the source acks the one before and fetches the next;
//!   deposits stay one batch at a time, in order. A bridge killed at any
//!   point resumes by name: what it had not acked (at most the batch being
//!   deposited and the one fetched ahead) comes back to it after the ack
//!   wait and is sent again; nothing the source stored is lost.
//! - A packet sent again is recognised by its packet id where the destination
//!   has [`Capabilities::dedup`](crate::Capabilities::dedup) (within its
//!   de-duplication window); where it has not (Kafka), the bridge warns once
//!   at start, counts what it can, and synthesis still counts a packet once.
//! - The packet is forwarded in its compact encoding, on the same subject
//!   re-rooted under the destination's prefix
//!   (`{source prefix}.hvac.x` → `{destination prefix}.hvac.x`).
//! - When a side fails (the server is down, the link drops), the bridge
//!   backs off exponentially with jitter ([`Backoff`]), then connects that
//!   side again with its [`Endpoint`] connector and carries on. A batch
//!   already fetched is kept and deposited once the destination is back.
//! - On shutdown ([`Bridge::run_until`]) it finishes the batches in hand
//!   (fetches no more), acks them, and closes both sides (flushing their
//!   acks).
//! - Progress: [`Bridge::status`] (forwarded, duplicates, skipped, the
//!   source consumer's backlog about once a second, connection state, last
//!   error), an info-level `tracing` line every
//!   [`BridgeConfig::report_every`], and warnings on every failure.
//!
//! # On a device
//!
//! The device's outbox is a SQLite file: its default `when_full=refuse`
//! policy never prunes what the up bridge's consumer has not acked and
//! refuses new deposits with [`ErrorKind::StoreFull`] instead (see the
//! `qis-transport-sqlite` docs). `examples/edge_device.rs` is a complete
//! device agent: its own outcomes to the file, up and down bridges to a hub
//! that may be unreachable ([`Endpoint::connect`]), synthesis from the file
//! online or not. `qis bridge` runs a bridge from the shell and `qis status`
//! shows the consumers' backlog.
//!
//! # Two bridges both ways never loop
//!
//! Every packet names where it was produced: its `source_node`. That is the
//! origin marker ([`Origin`]). The **up** bridge forwards only packets whose
//! `source_node` is one of the device's own nodes; the **down** bridge
//! forwards every packet *except* those. A packet that came down therefore
//! never goes back up, and the device's own packets never come back down,
//! whatever local retention pruned in between, with no state to keep: the
//! rule is in the packet. ([`Bridge::up`] and [`Bridge::down`] set it.)
//! Packets that fail the origin rule are acked on the source and counted in
//! [`BridgeStatus::skipped`].
//!
//! ```
//! use std::time::Duration;
//! use qis_core::bridge::{Bridge, BridgeConfig};
//! use qis_core::{DynTransport, MemoryTransport, OutcomePacket, OutcomeTransportExt, Subject};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> qis_core::Result<()> {
//! let device: DynTransport = std::sync::Arc::new(MemoryTransport::new(Subject::default()));
//! let hub: DynTransport = std::sync::Arc::new(MemoryTransport::new(Subject::default()));
//! let packet = OutcomePacket {
//!     agent_id: "hvac-1".into(), domain: "hvac".into(), problem_class: "energy-anomaly".into(),
//!     conclusion: "spike".into(), confidence: 0.8, context_vector: vec![0.2, 0.9],
//!     timestamp: 1_764_000_000.0, source_node: "device-7".into(),
//! };
//! device.deposit(&packet).await?;                      // the link may be down: it is stored
//! let up = Bridge::up(device.clone(), hub.clone(), "device-7", BridgeConfig::new("up")?);
//! let status = up.drain(Duration::from_millis(200)).await?;   // forward what is there
//! assert_eq!(status.forwarded, 1);
//! let down = Bridge::down(hub.clone(), device.clone(), "device-7", BridgeConfig::new("down")?);
//! let status = down.drain(Duration::from_millis(200)).await?;
//! assert_eq!((status.forwarded, status.skipped), (0, 1)); // its own packet does not come back
//! # Ok(()) }
//! ```

mod backoff;
mod endpoint;
mod run;
mod status;

pub use backoff::Backoff;
pub use endpoint::{Connector, Endpoint};
pub use status::BridgeStatus;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::packet::OutcomePacket;
use crate::subject::SubjectPattern;
use crate::transport::ConsumerConfig;

/// Which packets a bridge forwards, by the node that produced them (their
/// `source_node`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Origin {
    /// Every packet (the default; a single one-way bridge needs no more).
    #[default]
    Any,
    /// Only packets produced on one of these nodes (the **up** direction:
    /// what this device produced). A name ending in `*` matches every node
    /// starting with the rest (`building-b-*`).
    Only(Vec<String>),
    /// Every packet except those produced on these nodes (the **down**
    /// direction: what the others produced).
    Except(Vec<String>),
}

impl Origin {
    fn named(nodes: &[String], node: &str) -> bool {
        nodes.iter().any(|n| match n.strip_suffix('*') {
            Some(stem) => node.starts_with(stem),
            None => n == node,
        })
    }

    /// Whether a packet passes this rule.
    pub fn admits(&self, packet: &OutcomePacket) -> bool {
        match self {
            Origin::Any => true,
            Origin::Only(nodes) => Origin::named(nodes, &packet.source_node),
            Origin::Except(nodes) => !Origin::named(nodes, &packet.source_node),
        }
    }
}

/// How a bridge runs. [`BridgeConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// The durable consumer's name on the source: a bridge restarted with the
    /// same name resumes where it stopped.
    pub name: String,
    /// What to forward (default: everything under the source's prefix).
    pub pattern: Option<SubjectPattern>,
    /// Which packets by origin (default [`Origin::Any`]).
    pub origin: Origin,
    /// Most packets per batch (default 500).
    pub batch: usize,
    /// How long one fetch waits for packets (default 1 s). It also bounds
    /// how long a shutdown waits for a fetch to return.
    pub fetch_wait: Duration,
    /// The source consumer's ack wait (default 30 s): a batch the bridge
    /// could not forward and ack in that time is delivered to it again.
    pub ack_wait: Duration,
    /// Pauses between attempts when a side fails.
    pub backoff: Backoff,
    /// How often a progress line is logged at info level while running
    /// (default 10 s).
    pub report_every: Duration,
}

impl BridgeConfig {
    /// The defaults, with the durable consumer named `name` (1–64 of
    /// `A-Z a-z 0-9 _ -`).
    pub fn new(name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        // The consumer config checks the name the same way every consumer's is.
        ConsumerConfig::new(name.clone(), SubjectPattern::new(">")?)?;
        Ok(BridgeConfig {
            name,
            pattern: None,
            origin: Origin::Any,
            batch: 500,
            fetch_wait: Duration::from_secs(1),
            ack_wait: Duration::from_secs(30),
            backoff: Backoff::default(),
            report_every: Duration::from_secs(10),
        })
    }

    /// Forward only subjects matching `pattern`.
    pub fn pattern(mut self, pattern: SubjectPattern) -> Self {
        self.pattern = Some(pattern);
        self
    }

    fn check(&self) -> Result<()> {
        let bad = |msg: &str| Err(Error::new(ErrorKind::InvalidInput, "bridge", msg));
        if self.batch == 0 {
            return bad("batch is 0: forward at least 1 packet per batch");
        }
        if self.ack_wait <= self.fetch_wait {
            return bad("ack_wait must be longer than fetch_wait, or batches come back before they are forwarded");
        }
        self.backoff.check()
    }
}

crate::setters!(BridgeConfig {
    /// Forward only packets this origin rule admits.
    origin: Origin,
    /// Most packets per batch.
    batch: usize,
    /// How long one fetch waits.
    fetch_wait: Duration,
    /// The source consumer's ack wait.
    ack_wait: Duration,
    /// Pauses between attempts when a side fails.
    backoff: Backoff,
    /// How often a progress line is logged while running.
    report_every: Duration,
});

/// Forwards packets from one transport to another (see the [module docs](self)).
/// Clones share one bridge and its status.
#[derive(Clone)]
pub struct Bridge {
    source: Endpoint,
    destination: Endpoint,
    config: BridgeConfig,
    status: Arc<Mutex<BridgeStatus>>,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bridge")
            .field("config", &self.config)
            .field("status", &self.status())
            .finish()
    }
}

impl Bridge {
    /// A bridge from `source` to `destination`.
    pub fn new(
        source: impl Into<Endpoint>,
        destination: impl Into<Endpoint>,
        config: BridgeConfig,
    ) -> Self {
        let status = BridgeStatus::new(&config.name);
        Bridge {
            source: source.into(),
            destination: destination.into(),
            config,
            status: Arc::new(Mutex::new(status)),
        }
    }

    /// The **up** direction of a device: forward from its local store to
    /// the hub only the packets produced on `node` (a name ending in `*`
    /// matches a family of nodes).
    pub fn up(
        device: impl Into<Endpoint>,
        hub: impl Into<Endpoint>,
        node: impl Into<String>,
        config: BridgeConfig,
    ) -> Self {
        Bridge::new(device, hub, config.origin(Origin::Only(vec![node.into()])))
    }

    /// The **down** direction of a device: bring every packet from the hub
    /// into its local store except those produced on `node`.
    pub fn down(
        hub: impl Into<Endpoint>,
        device: impl Into<Endpoint>,
        node: impl Into<String>,
        config: BridgeConfig,
    ) -> Self {
        Bridge::new(
            hub,
            device,
            config.origin(Origin::Except(vec![node.into()])),
        )
    }

    /// The configuration.
    pub fn config(&self) -> &BridgeConfig {
        &self.config
    }

    /// What the bridge has done so far.
    pub fn status(&self) -> BridgeStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Forward until `shutdown` completes, then finish the batch in flight,
    /// ack it, close both sides and return the final status. Failures of
    /// either side are retried with backoff and never end the run; only a
    /// permanent error in the configuration (an invalid pattern, a consumer
    /// name in use with another pattern, …) does.
    pub async fn run_until<F>(&self, shutdown: F) -> Result<BridgeStatus>
    where
        F: std::future::Future<Output = ()> + Send,
    {
        self.config.check()?;
        run::Run::new(self).forward(shutdown, None).await
    }

    /// Forward what the source holds now: run until a fetch has found
    /// nothing for `quiet`, then stop as [`run_until`](Self::run_until)
    /// does. For one-shot syncs and tests.
    pub async fn drain(&self, quiet: Duration) -> Result<BridgeStatus> {
        self.config.check()?;
        run::Run::new(self)
            .forward(std::future::pending(), Some(quiet))
            .await
    }
}
