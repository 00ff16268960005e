//! The shared conformance suite (`qis-conformance`) on a Chroma server
//! (`QIS_CHROMA_URL`, e.g. from `scripts/servers/chroma.sh start DIR`).
//!
//! Chroma stores deposits and answers similarity queries; it has no durable
//! consumers, no live subscriptions and no publish, so the cases needing
//! those are reported ignored with "chroma lacks capability `…`". Every case
//! runs on its own random prefix, hence in its own collections.

use std::sync::Arc;
use std::time::Duration;

use qis_conformance::support::{env_url, tcp_reachable};
use qis_conformance::{async_trait, Backend};
use qis_core::backend::InjectRaw;
use qis_core::{DynTransport, Error, ErrorKind, OutcomeTransport, Result, Subject};
use qis_transport_chroma::{ChromaConfig, ChromaTransport};

const HOW: &str = "scripts/servers/chroma.sh install && scripts/servers/chroma.sh start DIR, then source DIR/chroma.env";

struct Chroma {
    config: std::result::Result<ChromaConfig, String>,
}

impl Chroma {
    fn new() -> Chroma {
        let config = env_url("QIS_CHROMA_URL", HOW).and_then(|url| {
            url.parse::<ChromaConfig>()
                .map_err(|e| format!("QIS_CHROMA_URL={url:?}: {e}"))
        });
        Chroma { config }
    }

    async fn connect(&self, prefix: &Subject) -> Result<qis_core::Checked<ChromaTransport>> {
        let config = self
            .config
            .clone()
            .map_err(|why| Error::new(ErrorKind::Unavailable, "chroma", why))?;
        ChromaTransport::connect(config.prefix(prefix.clone())).await
    }
}

#[async_trait]
impl Backend for Chroma {
    fn name(&self) -> &'static str {
        "chroma"
    }

    async fn unavailable(&self) -> Option<String> {
        let config = match &self.config {
            Ok(c) => c,
            Err(why) => return Some(why.clone()),
        };
        let addr = config
            .base_url()
            .split_once("://")
            .map(|(_, a)| a.to_string())
            .unwrap_or_default();
        if !tcp_reachable(&addr, Duration::from_secs(2)) {
            return Some(format!("nothing listens on {addr}: {HOW}"));
        }
        None
    }

    async fn open(&self, prefix: &Subject) -> Result<DynTransport> {
        Ok(Arc::new(self.connect(prefix).await?))
    }

    async fn inject_raw(&self, transport: &DynTransport, subject: &str, body: &[u8]) -> Result<()> {
        let writer = self.connect(transport.prefix()).await?;
        writer.inject_raw(subject, body).await?;
        writer.close().await
    }
}

fn main() {
    qis_conformance::run(vec![Arc::new(Chroma::new())]);
}
