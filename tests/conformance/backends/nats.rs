//! The NATS JetStream backend: the server at `QIS_NATS_URL`
//! (scripts/servers/nats.sh start DIR writes it). Each prefix gets its own
//! stream, named from the prefix (`qt1a2b3c4d.iot` → `QIS_QT1A2B3C4D_IOT`),
//! so cases never see each other's data.

use std::sync::Arc;
use std::time::Duration;

use qis::backend::InjectRaw;
use qis::nats::{NatsConfig, NatsTransport};
use qis::{async_trait, DynTransport, Error, ErrorKind, OutcomeTransport, Result, Subject};

use crate::harness::{Backend, DynBackend};

struct Nats {
    url: Option<String>,
}

pub fn backend() -> DynBackend {
    Arc::new(Nats {
        url: std::env::var("QIS_NATS_URL").ok().filter(|u| !u.is_empty()),
    })
}

impl Nats {
    fn config(&self, prefix: &Subject) -> Result<NatsConfig> {
        let url = self
            .url
            .as_deref()
            .ok_or_else(|| Error::new(ErrorKind::Unavailable, "nats", "QIS_NATS_URL is not set"))?;
        Ok(NatsConfig::from_url(url)?.prefix(prefix.clone()))
    }
}

#[async_trait]
impl Backend for Nats {
    fn name(&self) -> &'static str {
        "nats"
    }

    async fn unavailable(&self) -> Option<String> {
        let Some(url) = &self.url else {
            return Some(
                "QIS_NATS_URL is not set (scripts/servers/nats.sh start DIR writes it)".into(),
            );
        };
        let config = match NatsConfig::from_url(url) {
            Ok(c) => c,
            Err(e) => return Some(format!("QIS_NATS_URL={url}: {e}")),
        };
        let mut addrs = Vec::new();
        for server in &config.servers {
            let addr = server.split_once("://").map_or(server.as_str(), |(_, a)| a);
            match std::net::ToSocketAddrs::to_socket_addrs(addr) {
                Ok(a) => addrs.extend(a),
                Err(e) => return Some(format!("QIS_NATS_URL={url}: cannot resolve {addr}: {e}")),
            }
        }
        if addrs
            .iter()
            .any(|a| std::net::TcpStream::connect_timeout(a, Duration::from_secs(2)).is_ok())
        {
            None
        } else {
            Some(format!("the NATS server at {url} does not answer"))
        }
    }

    async fn open(&self, prefix: &Subject) -> Result<DynTransport> {
        Ok(Arc::new(
            NatsTransport::connect(self.config(prefix)?).await?,
        ))
    }

    async fn inject_raw(&self, transport: &DynTransport, subject: &str, body: &[u8]) -> Result<()> {
        // A foreign publisher: its own connection, a plain JetStream publish
        // with no packet id and no checks.
        let raw = NatsTransport::connect(self.config(transport.prefix())?).await?;
        let sent = raw.inject_raw(subject, body).await;
        let _ = raw.close().await;
        sent
    }
}
