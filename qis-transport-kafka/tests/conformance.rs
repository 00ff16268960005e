//! The shared conformance suite (`qis-conformance`) on Kafka: a broker at
//! `QIS_KAFKA_URL` (e.g. `kafka://127.0.0.1:19092`, started by
//! `scripts/servers/kafka.sh`). Each prefix gets its own topic.

use std::sync::Arc;

use qis_conformance::support::{ByPrefix, EnvConfig};
use qis_conformance::{async_trait, Backend};
use qis_core::backend::InjectRaw;
use qis_core::{DynTransport, Result, Subject};
use qis_transport_kafka::{KafkaConfig, KafkaTransport};

struct Kafka {
    /// The broker's settings from `QIS_KAFKA_URL`, or why there are none.
    config: EnvConfig<KafkaConfig>,
    /// The last transport opened on each prefix, for `inject_raw`.
    opened: ByPrefix<KafkaTransport>,
}

#[async_trait]
impl Backend for Kafka {
    fn name(&self) -> &'static str {
        "kafka"
    }

    async fn unavailable(&self) -> Option<String> {
        self.config
            .unreachable(|c| c.bootstrap_servers.split(',').map(String::from).collect())
            .await
    }

    async fn open(&self, prefix: &Subject) -> Result<DynTransport> {
        let t = KafkaTransport::connect(self.config.get()?.prefix(prefix.clone())).await?;
        self.opened.insert(prefix, t.inner().clone());
        Ok(Arc::new(t))
    }

    async fn inject_raw(&self, transport: &DynTransport, subject: &str, body: &[u8]) -> Result<()> {
        let t = self.opened.get(transport.prefix(), "kafka")?;
        t.inject_raw(subject, body).await
    }
}

fn main() {
    let config = EnvConfig::read(
        "kafka",
        "QIS_KAFKA_URL",
        "run scripts/servers/kafka.sh start DIR and source DIR/kafka.env",
    );
    qis_conformance::run(vec![Arc::new(Kafka {
        config,
        opened: ByPrefix::default(),
    })]);
}
