//! The shared conformance suite (`qis-conformance`) on the `http://`
//! transport, through a `qis serve` gateway started in this process on a
//! free loopback port, in front of two backends:
//!
//! - `http-sqlite`: SQLite, a database file per prefix under Cargo's test
//!   temp dir (always available);
//! - `http-nats`: NATS JetStream at `QIS_NATS_URL`, a stream per prefix
//!   (ignored without it; failed with `QIS_REQUIRE_LIVE=1`).
//!
//! Every case runs on a fresh prefix, so each gets its own gateway; each
//! `open` connects a new `HttpTransport` (a new connection pool: "another
//! process") to it. Garbage for the malformed-message cases is written on
//! the gateway's backend directly, as a foreign publisher would. The
//! processes the fault cases start run a gateway of their own in front of
//! the same backend (the same SQLite file: the directory is handed down in
//! `QIS_HTTP_CONFORMANCE_DIR`), as separate devices would.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use qis_conformance::support::{inject_once, random_hex, EnvConfig};
use qis_conformance::{async_trait, Backend, DynBackend};
use qis_core::{DynTransport, Result, Subject};
use qis_gateway::{GatewayConfig, RunningGateway};
use qis_transport_http::{HttpConfig, HttpTransport};
use qis_transport_nats::{NatsConfig, NatsTransport};
use qis_transport_sqlite::{SqliteConfig, SqliteTransport};
use tokio::sync::Mutex;

/// What the gateway fronts.
#[allow(clippy::large_enum_variant)] // two values for the whole run
enum Behind {
    Sqlite { dir: PathBuf },
    Nats { config: EnvConfig<NatsConfig> },
}

impl Behind {
    /// The backend's name in this run.
    fn name(&self) -> &'static str {
        match self {
            Behind::Sqlite { .. } => "http-sqlite",
            Behind::Nats { .. } => "http-nats",
        }
    }

    fn nats(&self, prefix: &Subject) -> Result<NatsConfig> {
        match self {
            Behind::Nats { config } => Ok(config.get()?.prefix(prefix.clone())),
            Behind::Sqlite { .. } => unreachable!("only for NATS"),
        }
    }

    fn sqlite(&self, prefix: &Subject) -> SqliteConfig {
        match self {
            Behind::Sqlite { dir } => {
                SqliteConfig::new(dir.join(format!("{prefix}.db"))).prefix(prefix.clone())
            }
            Behind::Nats { .. } => unreachable!("only for SQLite"),
        }
    }

    /// A backend transport on `prefix`, for the gateway.
    async fn connect(&self, prefix: &Subject) -> Result<DynTransport> {
        Ok(match self {
            Behind::Sqlite { .. } => Arc::new(SqliteTransport::connect(self.sqlite(prefix)).await?),
            Behind::Nats { .. } => Arc::new(NatsTransport::connect(self.nats(prefix)?).await?),
        })
    }

    /// Raw bytes on `subject`, on the backend itself: its own connection,
    /// no checks.
    async fn inject_raw(&self, prefix: &Subject, subject: &str, body: &[u8]) -> Result<()> {
        match self {
            Behind::Sqlite { .. } => {
                let raw = SqliteTransport::connect(self.sqlite(prefix)).await?;
                inject_once(raw, subject, body).await
            }
            Behind::Nats { .. } => {
                let raw = NatsTransport::connect(self.nats(prefix)?).await?;
                inject_once(raw, subject, body).await
            }
        }
    }
}

struct ViaGateway {
    behind: Behind,
    /// One gateway per prefix, kept for the run.
    gateways: Mutex<HashMap<Subject, RunningGateway>>,
}

impl ViaGateway {
    fn backend(behind: Behind) -> DynBackend {
        Arc::new(ViaGateway {
            behind,
            gateways: Mutex::new(HashMap::new()),
        })
    }

    /// The URL of the gateway for `prefix`, started on first use.
    async fn gateway(&self, prefix: &Subject) -> Result<String> {
        let mut gateways = self.gateways.lock().await;
        if let Some(g) = gateways.get(prefix) {
            return Ok(g.url());
        }
        let backend = self.behind.connect(prefix).await?;
        let config = GatewayConfig::default().listen("127.0.0.1:0".parse().expect("an address"));
        let g = qis_gateway::start(backend, config).await?;
        let url = g.url();
        gateways.insert(prefix.clone(), g);
        Ok(url)
    }
}

#[async_trait]
impl Backend for ViaGateway {
    fn name(&self) -> &'static str {
        self.behind.name()
    }

    async fn unavailable(&self) -> Option<String> {
        let Behind::Nats { config } = &self.behind else {
            return None;
        };
        config.unreachable(|c| c.servers.clone()).await
    }

    async fn open(&self, prefix: &Subject) -> Result<DynTransport> {
        let url = self.gateway(prefix).await?;
        let config = HttpConfig::new(url).prefix(prefix.clone());
        Ok(Arc::new(HttpTransport::connect(config).await?))
    }

    async fn inject_raw(&self, transport: &DynTransport, subject: &str, body: &[u8]) -> Result<()> {
        self.behind
            .inject_raw(transport.prefix(), subject, body)
            .await
    }
}

/// Where this run keeps its SQLite files, handed down to the processes the
/// fault cases start (each runs its own gateway, in front of the same files).
const DIR_VAR: &str = "QIS_HTTP_CONFORMANCE_DIR";

fn main() {
    let dir = match std::env::var_os(DIR_VAR) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join("qis-conformance-http")
                .join(format!("run-{}-{}", std::process::id(), random_hex(4)));
            // Before any thread starts: the children inherit it.
            std::env::set_var(DIR_VAR, &dir);
            dir
        }
    };
    std::fs::create_dir_all(&dir).expect("a directory for the SQLite files");
    let nats = EnvConfig::read(
        "nats",
        "QIS_NATS_URL",
        "run scripts/servers/nats.sh start DIR and source DIR/nats.env",
    );
    qis_conformance::run(vec![
        ViaGateway::backend(Behind::Sqlite { dir }),
        ViaGateway::backend(Behind::Nats { config: nats }),
    ]);
}
