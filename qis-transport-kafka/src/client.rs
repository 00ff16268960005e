//! What every librdkafka client of this transport shares: the base client
//! properties (brokers, security, the user's librdkafka options) and
//! librdkafka's log lines routed to `tracing`.

use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::KafkaError;

use crate::config::KafkaConfig;

/// The librdkafka client context of every client here: log lines and errors
/// go to `tracing` (target `librdkafka`) instead of the `log` crate.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TracingContext;

impl ClientContext for TracingContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", facility = fac, "{log_message}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", facility = fac, "{log_message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", facility = fac, "{log_message}")
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", facility = fac, "{log_message}")
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Connection failures are retried by librdkafka and surface as
        // timeouts of the operation that needed the broker.
        tracing::warn!(target: "librdkafka", error = %error, "{reason}");
    }
}

impl ConsumerContext for TracingContext {}

/// The properties every client gets: brokers, connection timeout, and the
/// security the shared settings imply ([`security`]). Each client adds its
/// own, then [`user_options`] (last, so they win).
pub(crate) fn base_config(config: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.bootstrap_servers)
        .set("client.id", "qis-transport-kafka")
        .set(
            "socket.connection.setup.timeout.ms",
            ms(config.connect_timeout).max(1000).to_string(),
        )
        .set("log.connection.close", "false");
    security(&mut c, config);
    c
}

/// SASL credentials and TLS files as librdkafka properties, with the
/// `security.protocol` they need (and SASL mechanism `PLAIN`); explicit
/// `librdkafka` options override them.
fn security(c: &mut ClientConfig, config: &KafkaConfig) {
    let creds = &config.credentials;
    let sasl = match (&creds.user, &creds.password) {
        (Some(user), Some(password)) => {
            c.set("sasl.username", user)
                .set("sasl.password", password)
                .set("sasl.mechanism", "PLAIN");
            true
        }
        _ => false,
    };
    let tls = &config.tls;
    for (key, file) in [
        ("ssl.ca.location", &tls.ca),
        ("ssl.certificate.location", &tls.client_cert),
        ("ssl.key.location", &tls.client_key),
    ] {
        if let Some(path) = file {
            c.set(key, path.to_string_lossy());
        }
    }
    let protocol = match (sasl, tls.is_set()) {
        (false, false) => None,
        (true, false) => Some("sasl_plaintext"),
        (false, true) => Some("ssl"),
        (true, true) => Some("sasl_ssl"),
    };
    if let Some(p) = protocol {
        c.set("security.protocol", p);
    }
}

/// Apply the user's librdkafka options on top of `c`.
pub(crate) fn user_options(c: &mut ClientConfig, config: &KafkaConfig) {
    for (k, v) in &config.librdkafka {
        c.set(k, v);
    }
}

/// A duration as whole milliseconds (at least 1 when non-zero).
pub(crate) fn ms(d: Duration) -> u64 {
    let m = d.as_millis().min(i32::MAX as u128) as u64;
    if m == 0 && !d.is_zero() {
        1
    } else {
        m
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn client_config(url: &str) -> ClientConfig {
        let config = KafkaConfig::from_url(url).unwrap();
        let mut c = base_config(&config);
        user_options(&mut c, &config);
        c
    }

    #[test]
    fn credentials_and_tls_files_become_librdkafka_properties() {
        let c = client_config("kafka://h?connect_timeout=3s");
        assert_eq!(c.get("security.protocol"), None);
        assert_eq!(c.get("socket.connection.setup.timeout.ms"), Some("3000"));

        let c = client_config("kafka://edge:p%40ss@h");
        assert_eq!(c.get("sasl.username"), Some("edge"));
        assert_eq!(c.get("sasl.password"), Some("p@ss"));
        assert_eq!(c.get("sasl.mechanism"), Some("PLAIN"));
        assert_eq!(c.get("security.protocol"), Some("sasl_plaintext"));

        let c = client_config("kafka://h?tls_ca=/ca.pem&tls_cert=/c.pem&tls_key=/c.key");
        assert_eq!(c.get("ssl.ca.location"), Some("/ca.pem"));
        assert_eq!(c.get("ssl.certificate.location"), Some("/c.pem"));
        assert_eq!(c.get("ssl.key.location"), Some("/c.key"));
        assert_eq!(c.get("security.protocol"), Some("ssl"));

        let c = client_config(
            "kafka://u:p@h?tls_ca=/ca.pem&librdkafka.sasl.mechanism=SCRAM-SHA-256&librdkafka.client.id=me",
        );
        assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(c.get("sasl.mechanism"), Some("SCRAM-SHA-256"));
        assert_eq!(c.get("client.id"), Some("me"));

        let c = client_config("kafka://u:p@h?librdkafka.security.protocol=sasl_ssl");
        assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
    }
}
