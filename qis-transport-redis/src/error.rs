//! Redis client errors as QIS errors.

use qis_core::{Error, ErrorKind};
use redis::Value;

use crate::NAME;

/// The URL with its password hidden, for logs and errors.
pub(crate) fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparsable url>".to_string(),
    }
}

/// Turn a client error into a QIS error: connection trouble is
/// [`ErrorKind::Unavailable`], a reply that took too long is
/// [`ErrorKind::Timeout`], anything else [`ErrorKind::Backend`].
pub(crate) fn redis_error(e: redis::RedisError, doing: &str) -> Error {
    use redis::{ErrorKind as K, ServerErrorKind as S};
    let (kind, hint) = if e.is_timeout() {
        (
            ErrorKind::Timeout,
            "Redis did not answer in time; retry, or raise response_timeout",
        )
    } else if e.kind() == K::AuthenticationFailed
        || e.code() == Some("NOAUTH")
        || e.code() == Some("WRONGPASS")
    {
        (
            ErrorKind::Unavailable,
            "Redis refused the credentials: check user and password in the URL",
        )
    } else if e.is_io_error()
        || e.is_connection_refusal()
        || e.is_connection_dropped()
        || matches!(
            e.kind(),
            K::Server(S::BusyLoading) | K::Server(S::MasterDown) | K::Server(S::TryAgain)
        )
    {
        (
            ErrorKind::Unavailable,
            "Redis cannot be reached right now; retry (the connection is re-established automatically)",
        )
    } else {
        (ErrorKind::Backend, "Redis reported an error")
    };
    Error::new(kind, NAME, format!("{doing}: {hint}: {e}")).with_source(e)
}

/// An error for a reply that does not have the expected shape.
pub(crate) fn unexpected(doing: &str, v: &Value) -> Error {
    let mut shown = format!("{v:?}");
    // At a character boundary: the reply may hold any UTF-8.
    if let Some((cut, _)) = shown.char_indices().nth(200) {
        shown.truncate(cut);
    }
    Error::new(
        ErrorKind::Backend,
        NAME,
        format!("{doing}: unexpected reply from Redis: {shown}"),
    )
}

/// Whether a server error carries `code` (`NOGROUP`, `BUSYGROUP`, …).
pub(crate) fn is_code(e: &redis::RedisError, code: &str) -> bool {
    e.code() == Some(code) || e.to_string().contains(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_hidden() {
        let s = redacted("redis://user:secret@127.0.0.1:1/0");
        assert!(!s.contains("secret"), "{s}");
        assert!(s.contains("user"), "{s}");
    }
}
