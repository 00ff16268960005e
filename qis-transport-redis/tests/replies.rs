//! Replies of an unexpected shape, as a foreign writer or a misbehaving
//! server can produce: described in an error, never a panic. (Found by the
//! `redis_reply` fuzz target; its entry point is `fuzzing::reply`.)

use qis_transport_redis::fuzzing::reply;

/// A bulk string of multi-byte characters: the error message that shows a
/// reply cut it at a byte that is not a character boundary, and panicked.
#[test]
fn a_long_non_ascii_reply_is_described_without_panicking() {
    for len in 60..140 {
        let text = "é".repeat(len);
        let mut resp = format!("*1\r\n${}\r\n", text.len()).into_bytes();
        resp.extend_from_slice(text.as_bytes());
        resp.extend_from_slice(b"\r\n");
        reply(&resp);
    }
}
