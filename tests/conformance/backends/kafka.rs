//! The Kafka backend: a broker at `QIS_KAFKA_URL` (e.g.
//! `kafka://127.0.0.1:19092`, started by `scripts/servers/kafka.sh`).

use std::collections::HashMap;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use qis::backend::InjectRaw;
use qis::{async_trait, DynTransport, Error, ErrorKind, Result, Subject};
use qis_transport_kafka::{KafkaConfig, KafkaTransport};

use crate::harness::{Backend, DynBackend};

const ENV: &str = "QIS_KAFKA_URL";

#[derive(Default)]
struct Kafka {
    /// The last transport opened on each prefix, for `inject_raw`.
    opened: Mutex<HashMap<Subject, KafkaTransport>>,
}

pub fn backend() -> DynBackend {
    Arc::new(Kafka::default())
}

fn config() -> Result<KafkaConfig> {
    let url = std::env::var(ENV).map_err(|_| {
        Error::new(
            ErrorKind::InvalidInput,
            "kafka",
            format!("{ENV} is not set"),
        )
    })?;
    KafkaConfig::from_url(&url)
}

#[async_trait]
impl Backend for Kafka {
    fn name(&self) -> &'static str {
        "kafka"
    }

    async fn unavailable(&self) -> Option<String> {
        if std::env::var(ENV).is_err() {
            return Some(format!(
                "{ENV} is not set: run scripts/servers/kafka.sh start DIR and source DIR/kafka.env"
            ));
        }
        let config = match config() {
            Ok(c) => c,
            Err(e) => return Some(format!("{ENV} is not usable: {e}")),
        };
        let first = config
            .bootstrap_servers
            .split(',')
            .next()
            .unwrap_or_default()
            .to_string();
        let reachable = tokio::task::spawn_blocking(move || {
            first
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .is_some_and(|addr| {
                    TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
                })
        })
        .await
        .unwrap_or(false);
        if reachable {
            None
        } else {
            Some(format!(
                "no Kafka broker answers at {}",
                config.bootstrap_servers
            ))
        }
    }

    async fn open(&self, prefix: &Subject) -> Result<DynTransport> {
        let t = KafkaTransport::connect(config()?.prefix(prefix.clone())).await?;
        self.opened
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(prefix.clone(), t.inner().clone());
        Ok(Arc::new(t))
    }

    async fn inject_raw(&self, transport: &DynTransport, subject: &str, body: &[u8]) -> Result<()> {
        let t = self
            .opened
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(transport.prefix())
            .cloned()
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::NotFound,
                    "kafka",
                    "inject_raw on a prefix this backend did not open",
                )
            })?;
        t.inject_raw(subject, body).await
    }
}
