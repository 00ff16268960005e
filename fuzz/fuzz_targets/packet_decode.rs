//! A received body, as every transport decodes it: never a panic; what
//! decodes re-encodes to a body that decodes to the same packet, and the
//! packet id is the SHA-256 of the bytes received.
#![no_main]

#[path = "../../qis-core/tests/props/mod.rs"]
mod props;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| props::decode_checked(body));
