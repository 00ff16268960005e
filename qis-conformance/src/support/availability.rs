//! Servers a test needs: is one there, and what to do when it is not.
//!
//! Locally, a test whose server is missing is *ignored* with the reason; with
//! `QIS_REQUIRE_LIVE=1` (as `.ci/run` sets) it fails. It never passes silently.

use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::process::{Command, Stdio};
use std::time::Duration;

use libtest_mimic::{Completion, Failed, Trial};

use super::CaseResult;

/// The environment variable that turns a missing server into a failure.
pub const REQUIRE_LIVE: &str = "QIS_REQUIRE_LIVE";

/// Whether `QIS_REQUIRE_LIVE=1`: a missing server fails instead of being ignored.
pub fn require_live() -> bool {
    std::env::var(REQUIRE_LIVE).is_ok_and(|v| v == "1")
}

/// The URL in the environment variable `var`, or why there is none, with
/// `how` to get one (`"scripts/servers/redis.sh start DIR and source DIR/redis.env"`).
pub fn env_url(var: &str, how: &str) -> Result<String, String> {
    match std::env::var(var) {
        Ok(url) if !url.is_empty() => Ok(url),
        _ => Err(format!("{var} is not set: {how}")),
    }
}

/// Whether something accepts TCP connections at `addr` (`host:port`) within
/// `within` (per resolved address).
pub fn tcp_reachable(addr: &str, within: Duration) -> bool {
    addr.to_socket_addrs()
        .map(|addrs| {
            addrs
                .into_iter()
                .any(|a| TcpStream::connect_timeout(&a, within).is_ok())
        })
        .unwrap_or(false)
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("an ephemeral loopback port")
        .port()
}

/// Whether `program arg` runs and exits 0 (`installed("redis-server", "--version")`).
pub fn installed(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A trial that runs `body` with what `available` holds (a URL, a binary's
/// path, …), or, when it holds the reason something is missing, is
/// [`unavailable_trial`].
pub fn trial<T, F>(name: impl Into<String>, available: &Result<T, String>, body: F) -> Trial
where
    T: Clone + Send + 'static,
    F: FnOnce(T) -> CaseResult + Send + 'static,
{
    match available {
        Ok(what) => {
            let what = what.clone();
            Trial::test(name, move || body(what).map_err(Failed::from))
        }
        Err(why) => unavailable_trial(name, why),
    }
}

/// A trial that cannot run because `why`: ignored with the reason, or failed
/// with it when `QIS_REQUIRE_LIVE=1`.
pub fn unavailable_trial(name: impl Into<String>, why: &str) -> Trial {
    if require_live() {
        let why = format!("{why} (and {REQUIRE_LIVE}=1: a missing server is a failure)");
        Trial::test(name, move || Err(Failed::from(why)))
    } else {
        let why = why.to_string();
        Trial::ignorable_test(name, move || Ok(Completion::ignored_with(why)))
    }
}
