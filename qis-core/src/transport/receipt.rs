//! What a deposit returns: where the packet was stored.

use std::fmt;

use crate::packet::PacketId;
use crate::subject::Subject;

/// Where a transport stored a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Position {
    /// A stream sequence or row id (NATS JetStream, SQLite, memory).
    Sequence(u64),
    /// A Kafka partition and offset.
    Offset {
        /// Partition.
        partition: i32,
        /// Offset within the partition.
        offset: i64,
    },
    /// A Redis stream entry id `ms-seq`.
    StreamId {
        /// Milliseconds part.
        ms: u64,
        /// Sequence part.
        seq: u64,
    },
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Sequence(s) => write!(f, "seq {s}"),
            Position::Offset { partition, offset } => {
                write!(f, "partition {partition} offset {offset}")
            }
            Position::StreamId { ms, seq } => write!(f, "id {ms}-{seq}"),
        }
    }
}

/// Proof that a deposit is durably stored.
///
/// De-duplication is per transport, not per subject: a packet is one fact,
/// identified by its packet id, and is stored once wherever it is deposited
/// first. A re-deposit that the transport recognises (on any subject, within
/// its de-duplication window) is not stored again; its receipt says
/// `duplicate` and names where the original is: its subject and position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The subject it is stored under (for a duplicate: the original's).
    pub subject: Subject,
    /// The packet id.
    pub id: PacketId,
    /// Where it is stored (for a duplicate: where the original is).
    pub position: Position,
    /// The transport recognised an identical earlier deposit and did not store it again.
    pub duplicate: bool,
}
