//! The shared conformance suite (`qis-conformance`) on NATS JetStream, twice:
//!
//! - `nats::…`: the single server at `QIS_NATS_URL`
//!   (`scripts/servers/nats.sh start DIR` writes it);
//! - `nats-cluster::…`: the three-node cluster at `QIS_NATS_CLUSTER_URL`
//!   (`scripts/servers/nats-cluster.sh start DIR` writes it), every stream
//!   and durable consumer with three replicas.
//!
//! Each prefix gets its own stream, named from the prefix
//! (`qt1a2b3c4d.iot` → `QIS_QT1A2B3C4D_IOT`), so cases never see each
//! other's data. The restart case starts a nats-server of its own
//! (`tests/common`), never restarting the shared one.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use qis_conformance::support::{inject_once, unblock, EnvConfig};
use qis_conformance::{async_trait, Backend, PrivateServer, Restartable, Stop};
use qis_core::{DynTransport, Result, Subject};
use qis_transport_nats::{NatsConfig, NatsTransport};

struct Nats {
    name: &'static str,
    /// The server's settings from the environment, or why there are none.
    config: EnvConfig<NatsConfig>,
}

impl Nats {
    /// The backend `name` on the URL in `var`, with `replicas`.
    fn from_env(name: &'static str, var: &str, how: &str, replicas: usize) -> Arc<Self> {
        let config = EnvConfig::read("nats", var, how).map(|c: NatsConfig| c.replicas(replicas));
        Arc::new(Nats { name, config })
    }

    fn config(&self, prefix: &Subject) -> Result<NatsConfig> {
        Ok(self.config.get()?.prefix(prefix.clone()))
    }
}

#[async_trait]
impl Backend for Nats {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn unavailable(&self) -> Option<String> {
        self.config.unreachable(|c| c.servers.clone()).await
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
        inject_once(raw, subject, body).await
    }

    fn restartable(&self) -> Option<&dyn Restartable> {
        Some(self)
    }
}

#[async_trait]
impl Restartable for Nats {
    fn unavailable(&self) -> Option<String> {
        common::server_binary().err()
    }

    async fn start(&self) -> Result<Box<dyn PrivateServer>> {
        let server = unblock("nats", || common::OwnServer::start(&[])).await?;
        Ok(Box::new(OwnNats {
            url: server.url(),
            server: Arc::new(Mutex::new(server)),
        }))
    }
}

/// A nats-server of this test's own, stopped (by PID) when dropped.
struct OwnNats {
    url: String,
    server: Arc<Mutex<common::OwnServer>>,
}

#[async_trait]
impl PrivateServer for OwnNats {
    async fn open(&self, prefix: &Subject) -> Result<DynTransport> {
        // A short request timeout: deposits fail fast while the server is
        // away, and are retried.
        let config = NatsConfig::from_url(&self.url)?
            .prefix(prefix.clone())
            .request_timeout(Duration::from_secs(2));
        Ok(Arc::new(NatsTransport::connect(config).await?))
    }

    async fn restart(&self, stop: Stop) -> Result<()> {
        let server = self.server.clone();
        unblock("nats", move || {
            let mut server = server.lock().unwrap_or_else(|e| e.into_inner());
            server.stop(stop == Stop::Graceful)?;
            server.restart()
        })
        .await
    }
}

fn main() {
    let single = Nats::from_env(
        "nats",
        "QIS_NATS_URL",
        "run scripts/servers/nats.sh start DIR and source DIR/nats.env",
        1,
    );
    let cluster = Nats::from_env(
        "nats-cluster",
        "QIS_NATS_CLUSTER_URL",
        "run scripts/servers/nats-cluster.sh start DIR and source DIR/nats-cluster.env",
        3,
    );
    qis_conformance::run(vec![single, cluster]);
}
