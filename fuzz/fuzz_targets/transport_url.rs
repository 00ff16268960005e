//! Every backend's URL parser at once, through the facade's
//! `TransportConfig::from_url` with all backends compiled in: never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qis::{Subject, TransportConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(url) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = TransportConfig::from_url(url) {
        let _ = format!("{config:?}");
        let _ = config.with_prefix(Subject::default());
    }
});
