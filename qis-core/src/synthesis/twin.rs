//! What synthesis takes in ([`Twin`]) and how it tells packets apart.

use std::hash::{Hash, Hasher};

use crate::packet::{OutcomePacket, PacketId, Received};
use crate::transport::Delivery;

/// One input to synthesis: a twin's packet and, where the transport delivered
/// one, its packet id.
///
/// A packet delivered twice counts once. When the twin carries the id the
/// transport delivered ([`Delivery`], [`Received`], `(PacketId, &OutcomePacket)`),
/// identity is that id: nothing is re-encoded or re-hashed. A bare
/// `&OutcomePacket` has no id; identity is then its content (every field equal,
/// `-0.0` equal to `0.0`), compared only against packets of the same agent.
///
/// Pass a collection by reference: `synthesize(&own, &batch)` where `batch` is
/// a `Vec<Delivery>` (or `Vec<Received>`, `Vec<OutcomePacket>`), or any
/// iterator of these. A twin is kept as it came while the votes are counted
/// (one pointer for a `&Delivery`), hence `Copy`.
///
/// ```
/// use qis_core::{synthesize, OutcomePacket, PacketId, Twin};
/// # let p = OutcomePacket { agent_id: "a".into(), domain: "hvac".into(),
/// #   problem_class: "energy-anomaly".into(), conclusion: "c".into(), confidence: 0.5,
/// #   context_vector: vec![], timestamp: 1.0, source_node: "n".into() };
/// let id = PacketId::of(&p.encode().unwrap());
/// assert_eq!((id, &p).id(), Some(id));
/// assert_eq!((&p).id(), None);
/// ```
pub trait Twin<'a>: Copy {
    /// The packet.
    fn packet(&self) -> &'a OutcomePacket;

    /// The packet id the transport delivered it under, if known.
    fn id(&self) -> Option<PacketId>;
}

impl<'a> Twin<'a> for &'a OutcomePacket {
    fn packet(&self) -> &'a OutcomePacket {
        self
    }
    fn id(&self) -> Option<PacketId> {
        None
    }
}

impl<'a> Twin<'a> for &'a Delivery {
    fn packet(&self) -> &'a OutcomePacket {
        &self.received.packet
    }
    fn id(&self) -> Option<PacketId> {
        Some(self.received.id)
    }
}

impl<'a> Twin<'a> for &'a Received {
    fn packet(&self) -> &'a OutcomePacket {
        &self.packet
    }
    fn id(&self) -> Option<PacketId> {
        Some(self.id)
    }
}

impl<'a> Twin<'a> for (PacketId, &'a OutcomePacket) {
    fn packet(&self) -> &'a OutcomePacket {
        self.1
    }
    fn id(&self) -> Option<PacketId> {
        Some(self.0)
    }
}

impl<'a> Twin<'a> for &'a (PacketId, OutcomePacket) {
    fn packet(&self) -> &'a OutcomePacket {
        &self.1
    }
    fn id(&self) -> Option<PacketId> {
        Some(self.0)
    }
}

/// A twin's identity in the set of packets already counted.
pub(crate) fn identity<'a, T: Twin<'a>>(t: &T) -> Identity<'a> {
    match t.id() {
        Some(id) => Identity::Id(id),
        None => Identity::Content(t.packet()),
    }
}

/// `-0.0` and `0.0` are one value; every NaN has its own bits (invalid anyway).
fn bits(x: f64) -> u64 {
    if x == 0.0 {
        0
    } else {
        x.to_bits()
    }
}

/// Every field equal (`-0.0` equal to `0.0`).
pub(crate) fn same_content(a: &OutcomePacket, b: &OutcomePacket) -> bool {
    std::ptr::eq(a, b)
        || (a.agent_id == b.agent_id
            && bits(a.timestamp) == bits(b.timestamp)
            && bits(a.confidence) == bits(b.confidence)
            && a.domain == b.domain
            && a.problem_class == b.problem_class
            && a.conclusion == b.conclusion
            && a.source_node == b.source_node
            && a.context_vector.len() == b.context_vector.len()
            && a.context_vector
                .iter()
                .zip(&b.context_vector)
                .all(|(x, y)| bits(*x) == bits(*y)))
}

/// A packet's identity in the set of packets already counted.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Identity<'a> {
    Id(PacketId),
    Content(&'a OutcomePacket),
}

impl PartialEq for Identity<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Identity::Id(a), Identity::Id(b)) => a == b,
            (Identity::Content(a), Identity::Content(b)) => same_content(a, b),
            _ => false,
        }
    }
}

impl Eq for Identity<'_> {}

impl Hash for Identity<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            // Already a SHA-256: its first eight bytes are as good as any hash.
            Identity::Id(id) => {
                let b = id.as_bytes();
                state.write_u64(u64::from_le_bytes([
                    b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
                ]));
            }
            Identity::Content(p) => {
                p.agent_id.hash(state);
                state.write_u64(bits(p.timestamp));
                state.write_u64(bits(p.confidence));
                p.problem_class.hash(state);
                p.conclusion.hash(state);
                state.write_usize(p.context_vector.len());
                for x in &p.context_vector {
                    state.write_u64(bits(*x));
                }
            }
        }
    }
}
