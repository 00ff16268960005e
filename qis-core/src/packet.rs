//! The outcome packet (SPEC §2): validation, the compact JSON wire form, the
//! 512-byte discipline and the packet id.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result};
use crate::fingerprint::Fingerprint;
use crate::subject::{check_token, Subject};

/// Largest body a packet may have on the wire, in bytes.
pub const MAX_PACKET_BYTES: usize = 512;

/// Longest `agent_id` / `source_node`, in bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// What one device learned, distilled: never raw telemetry.
///
/// The field names are the wire names; the JSON form has exactly these eight
/// keys, so the seed's Python agents (`OutcomePacket(**data)`) read it.
///
/// ```
/// use qis_core::OutcomePacket;
/// let p = OutcomePacket {
///     agent_id: "hvac-building-a".into(),
///     domain: "hvac".into(),
///     problem_class: "energy-anomaly".into(),
///     conclusion: "Compressor draw 18% above baseline.".into(),
///     confidence: 0.87,
///     context_vector: vec![0.18, 0.92, 0.03, 0.71],
///     timestamp: 1_764_000_000.25,
///     source_node: "building-a-floor-3".into(),
/// };
/// let body = p.encode().unwrap();
/// assert!(body.len() <= 512);
/// assert_eq!(OutcomePacket::decode(&body).unwrap(), p);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomePacket {
    /// The agent that reached the conclusion (1–128 bytes, no control characters).
    pub agent_id: String,
    /// Domain token, e.g. `hvac`.
    pub domain: String,
    /// Problem-class token, e.g. `energy-anomaly`.
    pub problem_class: String,
    /// What the agent concluded, for people (non-empty).
    pub conclusion: String,
    /// How sure the agent is, 0.0 to 1.0.
    pub confidence: f64,
    /// A compressed feature vector (finite numbers), never raw telemetry.
    pub context_vector: Vec<f64>,
    /// Seconds since the Unix epoch (finite, ≥ 0).
    pub timestamp: f64,
    /// The node (device, site) the agent runs on (1–128 bytes, no control characters).
    pub source_node: String,
}

/// The current time as an [`OutcomePacket::timestamp`]: seconds since the
/// Unix epoch (0 if the clock is set before it).
///
/// ```
/// let t = qis_core::timestamp_now();
/// assert!(t > 1.7e9);
/// ```
pub fn timestamp_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::core(ErrorKind::InvalidPacket, msg)
}

fn check_name(field: &str, v: &str) -> Result<()> {
    if v.is_empty() || v.len() > MAX_NAME_BYTES {
        return Err(invalid(format!(
            "{field} is {} bytes: it must be 1 to {MAX_NAME_BYTES} bytes",
            v.len()
        )));
    }
    if has_control(v) {
        return Err(invalid(format!(
            "{field} {v:?} contains a control character: remove it"
        )));
    }
    Ok(())
}

/// Whether `v` has a control character (`char::is_control`: U+0000–U+001F
/// and U+007F–U+009F). Every received packet is checked, so a branch-free
/// pass over the bytes comes first: in UTF-8 those characters are the
/// bytes below 0x20, 0x7f, and 0xc2 followed by 0x80–0x9f, so a name
/// without any of 0x00–0x1f, 0x7f and 0xc2 has none.
fn has_control(v: &str) -> bool {
    let maybe = v
        .bytes()
        .fold(false, |m, c| m | (c < 0x20) | (c == 0x7f) | (c == 0xc2));
    maybe && v.chars().any(char::is_control)
}

impl OutcomePacket {
    /// Check every field rule of SPEC §2 (not the size; see [`Self::encode`]).
    pub fn validate(&self) -> Result<()> {
        check_name("agent_id", &self.agent_id)?;
        check_token("domain", &self.domain).map_err(|e| invalid(e.message().to_string()))?;
        check_token("problem_class", &self.problem_class)
            .map_err(|e| invalid(e.message().to_string()))?;
        if self.conclusion.is_empty() {
            return Err(invalid("conclusion is empty: say what the agent concluded"));
        }
        if !self.confidence.is_finite() || !(0.0..=1.0).contains(&self.confidence) {
            return Err(invalid(format!(
                "confidence {} is outside 0.0..=1.0",
                self.confidence
            )));
        }
        if let Some(i) = self.context_vector.iter().position(|x| !x.is_finite()) {
            return Err(invalid(format!(
                "context_vector[{i}] is not a finite number"
            )));
        }
        if !self.timestamp.is_finite() || self.timestamp < 0.0 {
            return Err(invalid(format!(
                "timestamp {} must be finite seconds since the Unix epoch, ≥ 0",
                self.timestamp
            )));
        }
        check_name("source_node", &self.source_node)
    }

    /// Validate and encode as compact JSON with exactly the eight wire keys.
    ///
    /// Fails with [`ErrorKind::PacketTooLarge`] if the body would exceed
    /// [`MAX_PACKET_BYTES`], saying how large it is and what to shorten.
    pub fn encode(&self) -> Result<Bytes> {
        self.validate()?;
        let body = serde_json::to_vec(self)
            .map_err(|e| invalid("could not encode the packet as JSON").with_source(e))?;
        if body.len() > MAX_PACKET_BYTES {
            return Err(Error::core(
                ErrorKind::PacketTooLarge,
                format!(
                    "the packet encodes to {} bytes, over the {MAX_PACKET_BYTES}-byte limit: shorten conclusion ({} bytes) or compress context_vector ({} values); nothing was sent",
                    body.len(),
                    self.conclusion.len(),
                    self.context_vector.len()
                ),
            ));
        }
        Ok(Bytes::from(body))
    }

    /// Decode a received body: at most [`MAX_PACKET_BYTES`], JSON of an object
    /// with the eight keys (unknown keys are ignored), every field valid.
    pub fn decode(body: &[u8]) -> Result<Self> {
        if body.len() > MAX_PACKET_BYTES {
            return Err(Error::core(
                ErrorKind::PacketTooLarge,
                format!(
                    "received body is {} bytes, over the {MAX_PACKET_BYTES}-byte limit: rejected as malformed",
                    body.len()
                ),
            ));
        }
        let p: OutcomePacket = serde_json::from_slice(body).map_err(|e| {
            invalid(format!("body is not a valid outcome packet: {e}")).with_source(e)
        })?;
        p.validate()?;
        Ok(p)
    }

    /// The readable subject `{prefix}.{domain}.{problem_class}`.
    pub fn subject(&self, prefix: &Subject) -> Result<Subject> {
        Subject::readable(prefix, &self.domain, &self.problem_class)
    }

    /// The fingerprinted subject `{prefix}.{domain}.{problem_class}.{fingerprint}`.
    pub fn fingerprinted_subject(&self, prefix: &Subject, resolution: u32) -> Result<Subject> {
        let fp = Fingerprint::compute(
            &self.domain,
            &self.problem_class,
            &self.context_vector,
            resolution,
        )?;
        self.subject(prefix)?.child(fp.as_str())
    }

    /// `domain.problem_class`, the key synthesis votes on.
    pub fn problem_key(&self) -> String {
        format!("{}.{}", self.domain, self.problem_class)
    }
}

/// A packet id: the SHA-256 of the exact body bytes, shown as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PacketId([u8; 32]);

impl PacketId {
    /// The id of a body.
    pub fn of(body: &[u8]) -> Self {
        PacketId(Sha256::digest(body).into())
    }

    /// A packet id from a stored digest (the transport kept it; no re-hash).
    pub const fn from_bytes(digest: [u8; 32]) -> Self {
        PacketId(digest)
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex (64 characters).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for PacketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for PacketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PacketId({})", &self.to_hex()[..12])
    }
}

/// The value of each byte as a hex digit (either case), or `0xff`.
const HEX_DIGITS: [u8; 256] = {
    let mut t = [0xff; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// 64 hex digits as 32 bytes, or `None`. Every delivery that carries its
/// id (NATS, Redis, SQLite) is read through this, so it is one table
/// look-up per digit; `hex::decode_to_slice` took three times as many
/// instructions. Errors are left to `hex`, which says what is wrong.
fn decode_id(s: &str) -> Option<[u8; 32]> {
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    let mut bad = 0;
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        let (hi, lo) = (HEX_DIGITS[pair[0] as usize], HEX_DIGITS[pair[1] as usize]);
        bad |= hi | lo;
        *o = (hi << 4) | (lo & 0x0f);
    }
    // A valid digit is below 16; 0xff marks one that is not.
    (bad < 16).then_some(out)
}

impl FromStr for PacketId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        if let Some(digest) = decode_id(s) {
            return Ok(PacketId(digest));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|e| {
            Error::core(
                ErrorKind::InvalidInput,
                format!("{s:?} is not a packet id (64 hex characters)"),
            )
            .with_source(e)
        })?;
        Ok(PacketId(out))
    }
}

/// A packet ready to send: its subject, its id and its body, all checked.
/// Building one is where validation and the size limit are enforced, so a
/// transport never sees an invalid packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedPacket {
    subject: Subject,
    id: PacketId,
    body: Bytes,
}

impl EncodedPacket {
    /// Encode `packet` for `subject`.
    pub fn new(packet: &OutcomePacket, subject: Subject) -> Result<Self> {
        let body = packet.encode()?;
        Ok(EncodedPacket {
            subject,
            id: PacketId::of(&body),
            body,
        })
    }

    /// Encode `packet` for its readable subject under `prefix`.
    pub fn readable(packet: &OutcomePacket, prefix: &Subject) -> Result<Self> {
        EncodedPacket::new(packet, packet.subject(prefix)?)
    }

    /// The subject it goes to.
    pub fn subject(&self) -> &Subject {
        &self.subject
    }

    /// Its id (SHA-256 of the body).
    pub fn id(&self) -> PacketId {
        self.id
    }

    /// The body bytes (compact JSON).
    pub fn body(&self) -> &Bytes {
        &self.body
    }
}

/// `packet()`, `id()` and `subject()` for a type that holds a [`Received`]
/// in its field `received`.
macro_rules! received_accessors {
    ($ty:ty) => {
        impl $ty {
            /// The packet.
            pub fn packet(&self) -> &$crate::OutcomePacket {
                &self.received.packet
            }

            /// The packet id.
            pub fn id(&self) -> $crate::PacketId {
                self.received.id
            }

            /// The subject it was deposited on.
            pub fn subject(&self) -> &str {
                &self.received.subject
            }
        }
    };
}
pub(crate) use received_accessors;

/// A packet as received from a transport: the subject it came on, its id
/// (carried by the transport or computed from the body) and the decoded packet.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    /// The subject the packet was deposited on.
    pub subject: String,
    /// The packet id.
    pub id: PacketId,
    /// The decoded packet.
    pub packet: OutcomePacket,
}

impl Received {
    /// Decode a body received on `subject`; the id is computed from the bytes.
    pub fn decode(subject: impl Into<String>, body: &[u8]) -> Result<Self> {
        let packet = OutcomePacket::decode(body)?;
        Ok(Received {
            subject: subject.into(),
            id: PacketId::of(body),
            packet,
        })
    }

    /// Decode a body whose packet id the transport itself computed when it
    /// stored it (no re-hash).
    pub fn decode_with_known_id(
        subject: impl Into<String>,
        body: &[u8],
        id: PacketId,
    ) -> Result<Self> {
        Ok(Received {
            subject: subject.into(),
            id,
            packet: OutcomePacket::decode(body)?,
        })
    }

    /// Decode a body whose packet id the transport carried beside it (a
    /// message-id header, a stored column). The carried id is used when it is
    /// 64 hex characters, which saves hashing every delivered body; otherwise
    /// the id is computed from the bytes. Synthesis does not rely on it: it
    /// identifies packets by their content.
    pub fn decode_with_id(
        subject: impl Into<String>,
        body: &[u8],
        carried: Option<&str>,
    ) -> Result<Self> {
        let packet = OutcomePacket::decode(body)?;
        let id = carried
            .and_then(|s| s.parse::<PacketId>().ok())
            .unwrap_or_else(|| PacketId::of(body));
        Ok(Received {
            subject: subject.into(),
            id,
            packet,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> OutcomePacket {
        OutcomePacket {
            agent_id: "a".into(),
            domain: "hvac".into(),
            problem_class: "energy-anomaly".into(),
            conclusion: "c".into(),
            confidence: 0.5,
            context_vector: vec![0.1],
            timestamp: 1.0,
            source_node: "n".into(),
        }
    }

    #[test]
    fn too_large_is_refused_with_size() {
        let mut p = sample();
        p.conclusion = "x".repeat(600);
        let e = p.encode().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PacketTooLarge);
        assert!(e.message().contains("bytes"), "{e}");
    }

    #[test]
    fn control_characters_refused() {
        let mut p = sample();
        p.agent_id = "a\nb".into();
        assert_eq!(p.encode().unwrap_err().kind(), ErrorKind::InvalidPacket);
    }

    #[test]
    fn carried_id_is_used_when_well_formed() {
        let body = sample().encode().unwrap();
        let other = PacketId::of(b"other");
        let r = Received::decode_with_id("s", &body, Some(&other.to_hex())).unwrap();
        assert_eq!(r.id, other);
        let r = Received::decode_with_id("s", &body, Some("not-an-id")).unwrap();
        assert_eq!(r.id, PacketId::of(&body));
        let r = Received::decode_with_id("s", &body, None).unwrap();
        assert_eq!(r.id, PacketId::of(&body));
    }

    #[test]
    fn decoding_and_encoding_again_gives_the_same_bytes() {
        // A bridge forwards a decoded packet re-encoded: the bytes, hence the
        // packet id, must not change (serde_json's float_roundtrip).
        let mut p = sample();
        for x in [
            0.1 + 0.2,
            1e-300,
            123_456.789_012_345_68,
            0.991_234_567_890_123_4,
            5e-324,
        ] {
            p.context_vector = vec![x, -x, x / 3.0];
            p.confidence = (x / 1e6).clamp(0.0, 1.0);
            p.timestamp = 1_764_000_000.123_456_7 + x;
            let body = p.encode().unwrap();
            let again = OutcomePacket::decode(&body).unwrap().encode().unwrap();
            assert_eq!(body, again, "{x}");
        }
    }

    #[test]
    fn control_characters_found_byte_by_byte_as_char_by_char() {
        let mut samples: Vec<String> = (0u32..0x800)
            .chain([0x2028, 0xfeff, 0x1f600])
            .filter_map(char::from_u32)
            .map(|c| format!("a{c}b"))
            .collect();
        samples.extend(["", "plain", "\u{85}", "é\u{9f}", "\u{a0}x", "¢"].map(String::from));
        for v in &samples {
            assert_eq!(has_control(v), v.chars().any(char::is_control), "{v:?}");
        }
    }

    #[test]
    fn ids_are_read_in_either_case_and_bad_ones_refused() {
        let id = PacketId::of(b"x");
        assert_eq!(id.to_hex().to_uppercase().parse::<PacketId>().unwrap(), id);
        let hex = id.to_hex();
        for bad in [
            String::new(),
            hex[..62].to_string(),
            format!("{hex}00"),
            format!("g{}", &hex[1..]),
            format!("{}-", &hex[..63]),
            format!("{}é", &hex[..62]),
        ] {
            let e = bad.parse::<PacketId>().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad:?}");
        }
        for (i, c) in hex.char_indices() {
            for other in ['0', '9', 'a', 'f', 'A', 'F', 'g', 'G', '/', ':', '@', '`'] {
                let mut s = hex.clone();
                s.replace_range(i..=i, other.encode_utf8(&mut [0; 4]));
                let by_hex = hex::decode(&s).ok();
                let ours = s.parse::<PacketId>().ok().map(|p| p.as_bytes().to_vec());
                assert_eq!(ours, by_hex, "{s} (digit {i} {c} -> {other})");
            }
        }
    }

    #[test]
    fn id_round_trip() {
        let id = PacketId::of(b"x");
        assert_eq!(id.to_hex().parse::<PacketId>().unwrap(), id);
        assert_eq!(id.to_hex().len(), 64);
    }

    #[test]
    fn exactly_eight_keys() {
        let body = sample().encode().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys.len(), 8);
    }
}
