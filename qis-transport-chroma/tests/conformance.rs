//! The shared conformance suite (`qis-conformance`) on a Chroma server
//! (`QIS_CHROMA_URL`, e.g. from `scripts/servers/chroma.sh start DIR`).
//!
//! Chroma stores deposits and answers similarity queries; it has no durable
//! consumers, no live subscriptions and no publish, so the cases needing
//! those are reported ignored with "chroma lacks capability `…`". Every case
//! runs on its own random prefix, hence in its own collections.

use std::sync::Arc;

use qis_conformance::support::{inject_once, EnvConfig};
use qis_conformance::{async_trait, Backend};
use qis_core::{DynTransport, Result, Subject};
use qis_transport_chroma::{ChromaConfig, ChromaTransport};

const HOW: &str = "scripts/servers/chroma.sh install && scripts/servers/chroma.sh start DIR, then source DIR/chroma.env";

struct Chroma {
    config: EnvConfig<ChromaConfig>,
}

impl Chroma {
    async fn connect(&self, prefix: &Subject) -> Result<qis_core::Checked<ChromaTransport>> {
        ChromaTransport::connect(self.config.get()?.prefix(prefix.clone())).await
    }
}

#[async_trait]
impl Backend for Chroma {
    fn name(&self) -> &'static str {
        "chroma"
    }

    async fn unavailable(&self) -> Option<String> {
        let why = self
            .config
            .unreachable(|c| vec![c.base_url().to_string()])
            .await?;
        Some(format!("{why}: {HOW}"))
    }

    async fn open(&self, prefix: &Subject) -> Result<DynTransport> {
        Ok(Arc::new(self.connect(prefix).await?))
    }

    async fn inject_raw(&self, transport: &DynTransport, subject: &str, body: &[u8]) -> Result<()> {
        inject_once(self.connect(transport.prefix()).await?, subject, body).await
    }
}

fn main() {
    let config = EnvConfig::read("chroma", "QIS_CHROMA_URL", HOW);
    qis_conformance::run(vec![Arc::new(Chroma { config })]);
}
