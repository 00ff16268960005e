//! What this crate's tests share beyond `qis_conformance::support`: where
//! the broker is, a transport on a prefix, and a trial that needs the broker.

// Each test binary uses part of this module.
#![allow(dead_code)]

use std::future::Future;

use qis_conformance::libtest_mimic::Trial;
use qis_conformance::support::{block_on, env_url, trial};
use qis_conformance::CASE_LIMIT;
use qis_core::{Checked, Subject};
use qis_transport_kafka::{KafkaConfig, KafkaTransport};

/// The broker's URL from `QIS_KAFKA_URL`, or why there is none.
pub fn broker() -> Result<String, String> {
    env_url(
        "QIS_KAFKA_URL",
        "run scripts/servers/kafka.sh start DIR and source DIR/kafka.env",
    )
}

/// A trial running `test` (which panics on failure) with the broker's URL,
/// bounded by [`CASE_LIMIT`]; without a broker it is ignored with the reason
/// (a failure with `QIS_REQUIRE_LIVE=1`).
pub fn broker_trial<F, Fut>(name: &str, broker: &Result<String, String>, test: F) -> Trial
where
    F: FnOnce(String) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    trial(name, broker, |url| {
        block_on(CASE_LIMIT, async {
            test(url).await;
            Ok(())
        })
    })
}

/// `broker_trials!(&broker; test_a, test_b)`: a [`broker_trial`] for each
/// test, named after it.
macro_rules! broker_trials {
    ($broker:expr; $($test:ident),+ $(,)?) => {
        vec![$($crate::common::broker_trial(stringify!($test), $broker, $test)),+]
    };
}

/// A transport on `prefix` at the broker `url`.
pub async fn transport(url: &str, prefix: &Subject) -> Checked<KafkaTransport> {
    KafkaTransport::connect(KafkaConfig::from_url(url).unwrap().prefix(prefix.clone()))
        .await
        .expect("connect")
}
