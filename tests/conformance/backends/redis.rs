//! The Redis backend: a server at `QIS_REDIS_URL` (e.g.
//! `redis://127.0.0.1:16379`, started by `scripts/servers/redis.sh`).

use std::sync::Arc;

use qis::backend::InjectRaw;
use qis::{async_trait, DynTransport, Error, ErrorKind, OutcomeTransport, Result, Subject};
use qis_transport_redis::{RedisConfig, RedisTransport};

use crate::harness::{Backend, DynBackend};

const ENV: &str = "QIS_REDIS_URL";

struct Redis;

pub fn backend() -> DynBackend {
    Arc::new(Redis)
}

fn config() -> Result<RedisConfig> {
    let url = std::env::var(ENV).map_err(|_| {
        Error::new(
            ErrorKind::InvalidInput,
            "redis",
            format!("{ENV} is not set"),
        )
    })?;
    RedisConfig::from_url(&url)
}

#[async_trait]
impl Backend for Redis {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn unavailable(&self) -> Option<String> {
        if std::env::var(ENV).is_err() {
            return Some(format!(
                "{ENV} is not set: run scripts/servers/redis.sh start DIR and source DIR/redis.env"
            ));
        }
        let config = match config() {
            Ok(c) => c,
            Err(e) => return Some(format!("{ENV} is not usable: {e}")),
        };
        match RedisTransport::connect(config).await {
            Ok(t) => {
                let _ = t.close().await;
                None
            }
            Err(e) => Some(format!("no Redis answers at {ENV}: {e}")),
        }
    }

    async fn open(&self, prefix: &Subject) -> Result<DynTransport> {
        // A new transport is a new set of connections: "another process".
        let t = RedisTransport::connect(config()?.prefix(prefix.clone())).await?;
        Ok(Arc::new(t))
    }

    async fn inject_raw(&self, transport: &DynTransport, subject: &str, body: &[u8]) -> Result<()> {
        // A foreign publisher: its own connection, writing straight to the
        // subject's stream and live channel.
        let t = RedisTransport::connect(config()?.prefix(transport.prefix().clone())).await?;
        t.inject_raw(subject, body).await?;
        t.close().await
    }
}
