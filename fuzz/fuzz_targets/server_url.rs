//! The URL parts every backend's URL goes through (`ServerUrl`,
//! `UrlOptions` and each typed option reader): never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qis_core::config::{Retention, ServerUrl, TlsFiles, UrlOptions};

fn read_all(mut o: UrlOptions) {
    let _ = o.prefix();
    let _ = o.retention(&mut Retention::default());
    o.tls(&mut TlsFiles::default());
    let _ = o.duration("wait");
    let _ = o.bytes("size");
    let _ = o.number::<u64>("count");
    let _ = o.number::<i32>("signed");
    let _ = o.number::<f64>("ratio");
    let _ = o.boolean("flag");
    let _ = o.path("file");
    let _ = o.choice("mode", &["file", "memory"]);
    let _ = o.string("name");
    let _ = o.passthrough("librdkafka.");
    let _ = o.finish();
}

fuzz_target!(|data: &[u8]| {
    let Ok(url) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(parsed) = ServerUrl::parse("fuzz", url, &["nats", "tls"], 4222) {
        assert!(!parsed.hosts.is_empty());
        let _ = parsed.host_list();
        let _ = format!("{:?}", parsed.credentials);
        read_all(parsed.options);
    }
    if let Ok(options) = UrlOptions::parse("fuzz", url) {
        read_all(options);
    }
});
