//! The shared conformance suite (`qis-conformance`) on Redis: the server at
//! `QIS_REDIS_URL` (e.g. `redis://127.0.0.1:16379`, started by
//! `scripts/servers/redis.sh`). Keys are namespaced by the prefix, so cases
//! never see each other's data.

use std::sync::Arc;

use qis_conformance::support::env_url;
use qis_conformance::{async_trait, Backend};
use qis_core::backend::InjectRaw;
use qis_core::{DynTransport, Error, ErrorKind, OutcomeTransport, Result, Subject};
use qis_transport_redis::{RedisConfig, RedisTransport};

const ENV: &str = "QIS_REDIS_URL";

struct Redis {
    /// The server's settings from `QIS_REDIS_URL`, or why there are none.
    config: std::result::Result<RedisConfig, String>,
}

impl Redis {
    fn config(&self, prefix: &Subject) -> Result<RedisConfig> {
        let config = self
            .config
            .as_ref()
            .map_err(|why| Error::new(ErrorKind::Unavailable, "redis", why.clone()))?;
        Ok(config.clone().prefix(prefix.clone()))
    }
}

#[async_trait]
impl Backend for Redis {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn unavailable(&self) -> Option<String> {
        let config = match &self.config {
            Ok(config) => config.clone(),
            Err(why) => return Some(why.clone()),
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
        Ok(Arc::new(
            RedisTransport::connect(self.config(prefix)?).await?,
        ))
    }

    async fn inject_raw(&self, transport: &DynTransport, subject: &str, body: &[u8]) -> Result<()> {
        // A foreign publisher: its own connection, writing straight to the
        // subject's stream and live channel.
        let t = RedisTransport::connect(self.config(transport.prefix())?).await?;
        t.inject_raw(subject, body).await?;
        t.close().await
    }
}

fn main() {
    let config = env_url(
        ENV,
        "run scripts/servers/redis.sh start DIR and source DIR/redis.env",
    )
    .and_then(|url| RedisConfig::from_url(&url).map_err(|e| format!("{ENV}={url}: {e}")));
    qis_conformance::run(vec![Arc::new(Redis { config })]);
}
