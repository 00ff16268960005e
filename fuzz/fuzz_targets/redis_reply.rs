//! Redis replies: the RESP parser of the `redis` crate, then this
//! transport's readers of what is in a reply. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    qis_transport_redis::fuzzing::reply(data);
});
