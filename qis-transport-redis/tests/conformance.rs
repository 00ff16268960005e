//! The shared conformance suite (`qis-conformance`) on Redis: the server at
//! `QIS_REDIS_URL` (e.g. `redis://127.0.0.1:16379`, started by
//! `scripts/servers/redis.sh`). Keys are namespaced by the prefix, so cases
//! never see each other's data. The restart case starts a redis-server of
//! its own (`tests/common`), never restarting the shared one.

mod common;

use std::sync::{Arc, Mutex};

use qis_conformance::support::{inject_once, installed, unblock, EnvConfig};
use qis_conformance::{async_trait, Backend, PrivateServer, Restartable, Stop};
use qis_core::{DynTransport, OutcomeTransport, Result, Subject};
use qis_transport_redis::{RedisConfig, RedisTransport};

struct Redis {
    /// The server's settings from `QIS_REDIS_URL`, or why there are none.
    config: EnvConfig<RedisConfig>,
}

impl Redis {
    fn config(&self, prefix: &Subject) -> Result<RedisConfig> {
        Ok(self.config.get()?.prefix(prefix.clone()))
    }
}

#[async_trait]
impl Backend for Redis {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn unavailable(&self) -> Option<String> {
        let config = match self.config.get() {
            Ok(config) => config,
            Err(e) => return Some(e.to_string()),
        };
        match RedisTransport::connect(config).await {
            Ok(t) => {
                let _ = t.close().await;
                None
            }
            Err(e) => Some(format!("no Redis answers at QIS_REDIS_URL: {e}")),
        }
    }

    async fn open(&self, prefix: &Subject) -> Result<DynTransport> {
        // A new transport is a new set of connections: "another process".
        Ok(Arc::new(
            RedisTransport::connect(self.config(prefix)?).await?,
        ))
    }

    async fn inject_raw(&self, transport: &DynTransport, subject: &str, body: &[u8]) -> Result<()> {
        // A foreign publisher: its own connection, writing straight to the
        // subject's stream and live channel.
        let t = RedisTransport::connect(self.config(transport.prefix())?).await?;
        inject_once(t, subject, body).await
    }

    fn restartable(&self) -> Option<&dyn Restartable> {
        Some(self)
    }
}

#[async_trait]
impl Restartable for Redis {
    fn unavailable(&self) -> Option<String> {
        (!installed("redis-server", "--version"))
            .then(|| "redis-server is not installed (scripts/servers/redis.sh install)".into())
    }

    async fn start(&self) -> Result<Box<dyn PrivateServer>> {
        // Data in an append-only file, as scripts/servers/redis.sh runs it.
        let mut server =
            common::Server::new("conformance", &["--appendonly", "yes", "--save", ""], false);
        let server = unblock("redis", move || server.start().map(|()| server)).await?;
        Ok(Box::new(OwnRedis {
            url: format!("redis://127.0.0.1:{}", server.port),
            server: Arc::new(Mutex::new(server)),
        }))
    }
}

/// A redis-server of this test's own, stopped (by PID) when dropped.
struct OwnRedis {
    url: String,
    server: Arc<Mutex<common::Server>>,
}

#[async_trait]
impl PrivateServer for OwnRedis {
    async fn open(&self, prefix: &Subject) -> Result<DynTransport> {
        let config = RedisConfig::from_url(&self.url)?.prefix(prefix.clone());
        Ok(Arc::new(RedisTransport::connect(config).await?))
    }

    async fn restart(&self, stop: Stop) -> Result<()> {
        let server = self.server.clone();
        unblock("redis", move || {
            let mut server = server.lock().unwrap_or_else(|e| e.into_inner());
            match stop {
                Stop::Graceful => server.stop()?,
                Stop::Kill => server.kill()?,
            }
            server.start()
        })
        .await
    }
}

fn main() {
    let config = EnvConfig::read(
        "redis",
        "QIS_REDIS_URL",
        "run scripts/servers/redis.sh start DIR and source DIR/redis.env",
    );
    qis_conformance::run(vec![Arc::new(Redis { config })]);
}
