//! The URL parts every backend's URL goes through (`ServerUrl`,
//! `UrlOptions` and each typed option reader): never a panic.
#![no_main]

#[path = "../../qis-core/tests/props/mod.rs"]
mod props;

use libfuzzer_sys::fuzz_target;
use props::read_all_options;
use qis_core::config::{ServerUrl, UrlOptions};

fuzz_target!(|data: &[u8]| {
    let Ok(url) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(parsed) = ServerUrl::parse("fuzz", url, &["nats", "tls"], 4222) {
        assert!(!parsed.hosts.is_empty());
        let _ = parsed.host_list();
        let _ = format!("{:?}", parsed.credentials);
        read_all_options(parsed.options);
    }
    if let Ok(options) = UrlOptions::parse("fuzz", url) {
        read_all_options(options);
    }
});
