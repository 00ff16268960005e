//! What a bridge reports.

use serde::Serialize;

use crate::transport::Backlog;

/// What a bridge has done so far ([`Bridge::status`](super::Bridge::status)).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BridgeStatus {
    /// The bridge's consumer name.
    pub name: String,
    /// Packets the destination stored (new to it).
    pub forwarded: u64,
    /// Packets the destination recognised as already stored (sent again
    /// after a crash or a lost ack, or already there).
    pub duplicates: u64,
    /// Packets the origin rule kept back (acked on the source, not sent).
    pub skipped: u64,
    /// Batches forwarded and acked.
    pub batches: u64,
    /// The source consumer's backlog when last asked (about once a second
    /// while running); `None` where the source cannot count it.
    pub backlog: Option<Backlog>,
    /// The last failure, if any, as `side: error`.
    pub last_error: Option<String>,
    /// Failures of either side so far.
    pub failures: u64,
    /// Whether the source and the destination are connected now.
    pub source_connected: bool,
    /// See [`source_connected`](Self::source_connected).
    pub destination_connected: bool,
    /// Whether the destination recognises re-deposits (its `dedup` capability).
    pub destination_dedup: Option<bool>,
}

impl BridgeStatus {
    pub(crate) fn new(name: &str) -> Self {
        BridgeStatus {
            name: name.to_string(),
            ..Default::default()
        }
    }
}
