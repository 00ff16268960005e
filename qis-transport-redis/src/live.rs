//! Live subscriptions over Redis Pub/Sub (at-most-once).

use futures::StreamExt;

use qis_core::{Error, ErrorKind, LiveSubscription, Received, Result, SubjectPattern};

use crate::error::redis_error;
use crate::{RedisTransport, NAME};

/// The Redis glob for a pattern: `*` and `>` both become `*`. A Redis glob
/// `*` also crosses dots, so the glob is wider than the pattern; every
/// message is filtered exactly with [`SubjectPattern::matches`]. Literal
/// tokens (`[a-z0-9_-]`) hold no glob metacharacters.
pub(crate) fn glob_of(pattern: &SubjectPattern) -> String {
    pattern
        .as_str()
        .split('.')
        .map(|t| if t == ">" { "*" } else { t })
        .collect::<Vec<_>>()
        .join(".")
}

impl RedisTransport {
    pub(crate) async fn subscribe_live(&self, pattern: SubjectPattern) -> Result<LiveSubscription> {
        let cfg = &self.inner.config;
        let live_prefix = self.keys().live_prefix().to_string();
        let glob = format!("{live_prefix}{}", glob_of(&pattern));
        let mut pubsub =
            tokio::time::timeout(cfg.connect_timeout, self.client().get_async_pubsub())
                .await
                .map_err(|_| {
                    Error::new(
                        ErrorKind::Timeout,
                        NAME,
                        "could not open a Pub/Sub connection to Redis in time",
                    )
                })?
                .map_err(|e| redis_error(e, "could not open a Pub/Sub connection"))?;
        // PSUBSCRIBE returns once Redis confirmed it: the subscription is active.
        tokio::time::timeout(cfg.response_timeout, pubsub.psubscribe(&glob))
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::Timeout,
                    NAME,
                    format!("PSUBSCRIBE {glob} was not confirmed in time"),
                )
            })?
            .map_err(|e| redis_error(e, &format!("PSUBSCRIBE {glob} failed")))?;
        tracing::debug!(%pattern, %glob, "live subscription active");
        let messages = pubsub.into_on_message().filter_map(move |msg| {
            let channel = msg.get_channel_name();
            let out = match channel.strip_prefix(live_prefix.as_str()) {
                Some(subject) if pattern.matches(subject) => {
                    match Received::decode(subject, msg.get_payload_bytes()) {
                        Ok(r) => Some(Ok(r)),
                        Err(e) => {
                            tracing::warn!(%subject, error = %e, "skipping malformed live message");
                            None
                        }
                    }
                }
                _ => None,
            };
            futures::future::ready(out)
        });
        let lost = futures::stream::once(async {
            Err(Error::new(
                ErrorKind::Unavailable,
                NAME,
                "the live subscription lost its Redis connection: subscribe again (packets published meanwhile were missed; durable consumers keep them)",
            ))
        });
        Ok(Box::pin(messages.chain(lost)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let g = |s: &str| glob_of(&s.parse().unwrap());
        assert_eq!(g("qis.iot.*.energy"), "qis.iot.*.energy");
        assert_eq!(g("qis.iot.>"), "qis.iot.*");
        assert_eq!(g("qis.iot.hvac.x"), "qis.iot.hvac.x");
    }
}
