//! A backend's settings from the URL in an environment variable, as every
//! backend's `tests/conformance.rs` reads them, and whether its server
//! answers.

use std::fmt::Display;
use std::str::FromStr;
use std::time::Duration;

use qis_core::{Error, ErrorKind};

use super::{env_url, tcp_reachable};

/// The settings parsed from the URL in an environment variable, or why
/// there are none (the variable is unset, or its URL does not parse).
///
/// ```
/// use qis_conformance::support::EnvConfig;
/// use qis_core::memory::MemoryConfig;
///
/// let config: EnvConfig<MemoryConfig> =
///     EnvConfig::read("memory", "QIS_NO_SUCH_URL", "set it to memory://");
/// assert!(config.missing().unwrap().contains("QIS_NO_SUCH_URL is not set"));
/// assert!(config.get().is_err());
/// ```
#[derive(Debug, Clone)]
pub struct EnvConfig<C> {
    backend: &'static str,
    config: Result<C, String>,
}

impl<C: Clone> EnvConfig<C> {
    /// Parse the URL in `var` for `backend`; without it, the reason says
    /// `how` to start the server (see [`env_url`]).
    pub fn read(backend: &'static str, var: &str, how: &str) -> Self
    where
        C: FromStr,
        C::Err: Display,
    {
        let config = env_url(var, how)
            .and_then(|url| url.parse::<C>().map_err(|e| format!("{var}={url}: {e}")));
        EnvConfig { backend, config }
    }

    /// The same with the settings changed by `change` (say, replicas).
    pub fn map(self, change: impl FnOnce(C) -> C) -> Self {
        EnvConfig {
            backend: self.backend,
            config: self.config.map(change),
        }
    }

    /// The settings, or an `Unavailable` error saying why there are none.
    pub fn get(&self) -> qis_core::Result<C> {
        self.config
            .clone()
            .map_err(|why| Error::new(ErrorKind::Unavailable, self.backend, why))
    }

    /// Why there are no settings, if there are none.
    pub fn missing(&self) -> Option<String> {
        self.config.as_ref().err().cloned()
    }

    /// What [`Backend::unavailable`](crate::Backend::unavailable) says: why
    /// there are no settings, or that nothing answers at any of the
    /// `servers` they name (`scheme://host:port` or `host:port`, each given
    /// two seconds).
    pub async fn unreachable(&self, servers: impl FnOnce(&C) -> Vec<String>) -> Option<String> {
        let servers = match &self.config {
            Ok(config) => servers(config),
            Err(why) => return Some(why.clone()),
        };
        let probe = servers.clone();
        let answers = tokio::task::spawn_blocking(move || {
            probe.iter().any(|server| {
                let addr = server.split_once("://").map_or(server.as_str(), |(_, a)| a);
                tcp_reachable(addr, Duration::from_secs(2))
            })
        })
        .await
        .unwrap_or(false);
        (!answers).then(|| {
            format!(
                "no {} server answers at {}",
                self.backend,
                servers.join(", ")
            )
        })
    }
}
