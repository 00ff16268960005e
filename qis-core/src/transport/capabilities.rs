//! What a transport can do, and what it is.

use crate::subject::Subject;

/// What a transport can do. A backend fills in what it supports; asking for
/// something it lacks returns an [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported) error, never a
/// silent no-op. In JSON (the gateway's `GET /v1/info`), field for field;
/// `backlog` and `similarity` are false when absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Capabilities {
    /// Deposits are stored and durable consumers deliver them at least once.
    pub durable: bool,
    /// What was stored survives a restart of the server (or process).
    pub persistent: bool,
    /// [`OutcomeTransport::subscribe`](crate::OutcomeTransport::subscribe): live, at-most-once delivery to connected subscribers.
    pub live: bool,
    /// [`OutcomeTransport::publish_encoded`](crate::OutcomeTransport::publish_encoded): fire-and-forget, at-most-once, nothing stored.
    pub fire_and_forget: bool,
    /// The server matches subject patterns itself (otherwise the transport filters).
    pub native_wildcards: bool,
    /// An identical re-deposit (same packet id) is recognised and stored once.
    pub dedup: bool,
    /// [`DurableConsumer::nak`](crate::DurableConsumer::nak): a delivery can be handed back for redelivery at once or after a delay.
    pub nak: bool,
    /// [`StartPosition::Since`](crate::StartPosition::Since) is supported.
    pub start_since: bool,
    /// Several handles on one named consumer share its work (a work queue):
    /// each packet goes to one of them.
    pub shared_consumers: bool,
    /// [`DurableConsumer::backlog`](crate::DurableConsumer::backlog) and [`OutcomeTransport::consumers`](crate::OutcomeTransport::consumers):
    /// the transport can say how much each durable consumer still has to do.
    #[serde(default)]
    pub backlog: bool,
    /// [`OutcomeTransport::similar`](crate::OutcomeTransport::similar): the stored packets under a pattern
    /// whose context vectors are most like a given one (see
    /// [`crate::similar`]).
    #[serde(default)]
    pub similarity: bool,
}

impl Capabilities {
    /// Every capability. A backend names what it lacks and takes the rest
    /// from here: `Capabilities { nak: false, ..Capabilities::ALL }`.
    pub const ALL: Capabilities = Capabilities {
        durable: true,
        persistent: true,
        live: true,
        fire_and_forget: true,
        native_wildcards: true,
        dedup: true,
        nak: true,
        start_since: true,
        shared_consumers: true,
        backlog: true,
        similarity: true,
    };

    /// No capability at all: what a backend that can do little starts
    /// from, naming what it has: `Capabilities { similarity: true,
    /// ..Capabilities::NONE }`. The same as `Capabilities::default()`, but
    /// usable in a `const`.
    pub const NONE: Capabilities = Capabilities {
        durable: false,
        persistent: false,
        live: false,
        fire_and_forget: false,
        native_wildcards: false,
        dedup: false,
        nak: false,
        start_since: false,
        shared_consumers: false,
        backlog: false,
        similarity: false,
    };
}

/// What a transport is: its backend's short name, what it can do and the
/// subject prefix it stores. A backend builds it once when it connects and
/// hands it out from [`OutcomeTransport::info`](crate::OutcomeTransport::info); the trait's
/// [`name`](crate::OutcomeTransport::name), [`capabilities`](crate::OutcomeTransport::capabilities)
/// and [`prefix`](crate::OutcomeTransport::prefix) read it.
///
/// ```
/// use qis_core::{Capabilities, Subject, TransportInfo};
///
/// let info = TransportInfo::new(
///     "mine",
///     Capabilities { nak: false, ..Capabilities::ALL },
///     Subject::new("qis.iot")?,
/// );
/// assert_eq!(info.name(), "mine");
/// assert!(!info.capabilities().nak);
/// assert_eq!(info.prefix().as_str(), "qis.iot");
/// # Ok::<(), qis_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportInfo {
    name: &'static str,
    capabilities: Capabilities,
    prefix: Subject,
}

impl TransportInfo {
    /// A transport's description: its backend name (`"sqlite"`, `"nats"`,
    /// …), its capabilities and the prefix it stores.
    pub fn new(name: &'static str, capabilities: Capabilities, prefix: Subject) -> Self {
        TransportInfo {
            name,
            capabilities,
            prefix,
        }
    }

    /// The backend's short name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// What the transport can do.
    pub fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    /// The subject prefix the transport stores.
    pub fn prefix(&self) -> &Subject {
        &self.prefix
    }
}
