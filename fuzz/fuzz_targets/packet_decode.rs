//! A received body, as every transport decodes it: never a panic; what
//! decodes re-encodes to a body that decodes to the same packet, and the
//! packet id is the SHA-256 of the bytes received.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qis_core::{OutcomePacket, PacketId, Received};

fuzz_target!(|body: &[u8]| {
    let decoded = OutcomePacket::decode(body);
    let received = Received::decode("qis.iot.hvac.energy-anomaly", body);
    assert_eq!(decoded.is_ok(), received.is_ok());
    if let Ok(r) = &received {
        assert_eq!(r.id, PacketId::of(body));
    }
    if let Ok(packet) = decoded {
        // Re-encoding may be refused (compact JSON of the same numbers can
        // be longer than what was received), never panic.
        if let Ok(encoded) = packet.encode() {
            let again = OutcomePacket::decode(&encoded).expect("an encoded packet decodes");
            assert_eq!(again, packet, "decode(encode(p)) != p");
            assert_eq!(
                again.encode().expect("encodes again"),
                encoded,
                "encoding is not stable"
            );
        }
    }
});
