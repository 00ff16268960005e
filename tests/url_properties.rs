//! `TransportConfig::from_url` never panics, whatever it is given: the
//! property the `transport_url` fuzz target checks, with every backend
//! compiled into this build.

use proptest::prelude::*;
use qis::{Subject, TransportConfig};

fn url_like() -> impl Strategy<Value = String> {
    let scheme = prop::sample::select(vec![
        "sqlite", "memory", "nats", "tls", "redis", "rediss", "kafka", "SQLITE", "ftp", "",
    ]);
    let sep = prop::sample::select(vec!["://", ":", ":/", "//"]);
    let rest = "([a-z0-9%@:.,/\\[\\]-]{0,16})(\\?([a-z_.%]{0,12}(=[a-zA-Z0-9%.]{0,10})?&?){0,4})?";
    (scheme, sep, rest, "\\PC{0,4}")
        .prop_map(|(scheme, sep, rest, junk)| format!("{scheme}{sep}{rest}{junk}"))
}

proptest! {
    #[test]
    fn from_url_never_panics(url in url_like()) {
        if let Ok(config) = TransportConfig::from_url(&url) {
            let _ = format!("{config:?}");
            let _ = config.with_prefix(Subject::default());
        }
    }

    #[test]
    fn from_url_never_panics_on_any_text(url in "\\PC{0,40}") {
        let _ = TransportConfig::from_url(&url);
    }
}
