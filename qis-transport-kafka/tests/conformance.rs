//! The shared conformance suite (`qis-conformance`) on Kafka: a broker at
//! `QIS_KAFKA_URL` (e.g. `kafka://127.0.0.1:19092`, started by
//! `scripts/servers/kafka.sh`). Each prefix gets its own topic.

use std::sync::Arc;
use std::time::Duration;

use qis_conformance::support::{env_url, tcp_reachable, ByPrefix};
use qis_conformance::{async_trait, Backend};
use qis_core::backend::InjectRaw;
use qis_core::{DynTransport, Error, ErrorKind, Result, Subject};
use qis_transport_kafka::{KafkaConfig, KafkaTransport};

const ENV: &str = "QIS_KAFKA_URL";

struct Kafka {
    /// The broker's settings from `QIS_KAFKA_URL`, or why there are none.
    config: std::result::Result<KafkaConfig, String>,
    /// The last transport opened on each prefix, for `inject_raw`.
    opened: ByPrefix<KafkaTransport>,
}

impl Kafka {
    fn config(&self) -> Result<KafkaConfig> {
        self.config
            .clone()
            .map_err(|why| Error::new(ErrorKind::Unavailable, "kafka", why))
    }
}

#[async_trait]
impl Backend for Kafka {
    fn name(&self) -> &'static str {
        "kafka"
    }

    async fn unavailable(&self) -> Option<String> {
        let servers = match &self.config {
            Ok(config) => config.bootstrap_servers.clone(),
            Err(why) => return Some(why.clone()),
        };
        let first = servers.split(',').next().unwrap_or_default().to_string();
        let reachable =
            tokio::task::spawn_blocking(move || tcp_reachable(&first, Duration::from_secs(2)))
                .await
                .unwrap_or(false);
        (!reachable).then(|| format!("no Kafka broker answers at {servers}"))
    }

    async fn open(&self, prefix: &Subject) -> Result<DynTransport> {
        let t = KafkaTransport::connect(self.config()?.prefix(prefix.clone())).await?;
        self.opened.insert(prefix, t.inner().clone());
        Ok(Arc::new(t))
    }

    async fn inject_raw(&self, transport: &DynTransport, subject: &str, body: &[u8]) -> Result<()> {
        let t = self.opened.get(transport.prefix(), "kafka")?;
        t.inject_raw(subject, body).await
    }
}

fn main() {
    let config = env_url(
        ENV,
        "run scripts/servers/kafka.sh start DIR and source DIR/kafka.env",
    )
    .and_then(|url| KafkaConfig::from_url(&url).map_err(|e| format!("{ENV}={url}: {e}")));
    qis_conformance::run(vec![Arc::new(Kafka {
        config,
        opened: ByPrefix::default(),
    })]);
}
