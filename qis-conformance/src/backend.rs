//! What a backend gives the suite.

use std::sync::Arc;

use qis_core::{async_trait, DynTransport, Result, Subject};

/// One backend under test: how to reach it, open a transport on a prefix, and
/// write raw bytes the way a foreign publisher would.
///
/// Every case gets a fresh random prefix (`qt1a2b3c4d5e.iot`), so a backend
/// keeps the prefixes apart (one stream, topic, key space or file each) and
/// runs never see each other's data.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Short name, the first part of each test name (`nats::deposit_returns_receipt`).
    fn name(&self) -> &'static str;

    /// Why this backend cannot run here (its server is not configured or does
    /// not answer), or `None` when it can. A reason marks every case ignored
    /// with it; with `QIS_REQUIRE_LIVE=1` it fails every case instead.
    ///
    /// The default is `None`: the backend needs no server.
    async fn unavailable(&self) -> Option<String> {
        None
    }

    /// A transport on `prefix`. Calling it again with the same prefix gives
    /// an independent handle (a new connection: "another process") on the
    /// same store, so resuming a consumer by name can be tested.
    async fn open(&self, prefix: &Subject) -> Result<DynTransport>;

    /// Put raw `body` bytes on `subject`, bypassing every check, the way a
    /// foreign publisher would (for the malformed-message cases).
    /// `transport` was opened by [`Backend::open`] on the prefix in use.
    async fn inject_raw(&self, transport: &DynTransport, subject: &str, body: &[u8]) -> Result<()>;

    /// What a child process of this test binary needs in its environment
    /// so that its [`Backend::open`] reaches the same stores as this one
    /// (say, the directory of the SQLite files). The fault cases run
    /// consumers and writers in such children and kill them; a server's
    /// URL in the environment is inherited anyway.
    ///
    /// The default is nothing.
    fn process_env(&self) -> Vec<(String, String)> {
        Vec::new()
    }

    /// How to start a private server of this backend that a case may stop
    /// and start again (the shared one must not be restarted: other cases
    /// use it at the same time). `None`, the default, when there is none:
    /// the restart cases are ignored ("cannot restart its server here").
    fn restartable(&self) -> Option<&dyn Restartable> {
        None
    }
}

/// A backend that can start a private server for the restart cases
/// ([`Backend::restartable`]).
#[async_trait]
pub trait Restartable: Send + Sync {
    /// Why no private server can be started here (its program is not
    /// installed, say), or `None` when one can. Like
    /// [`Backend::unavailable`]: the case is ignored with the reason, or
    /// fails with it under `QIS_REQUIRE_LIVE=1`.
    fn unavailable(&self) -> Option<String> {
        None
    }

    /// Start a server of the test's own: loopback, a free port, its data in
    /// a temporary directory. It is stopped (by its PID) when dropped.
    async fn start(&self) -> Result<Box<dyn PrivateServer>>;
}

/// A running private server ([`Restartable::start`]).
#[async_trait]
pub trait PrivateServer: Send + Sync {
    /// A transport on `prefix` on this server (a new connection each time).
    async fn open(&self, prefix: &Subject) -> Result<DynTransport>;

    /// Stop the server as `stop` says and start it again on the same port
    /// and data; returns once it accepts connections again.
    async fn restart(&self, stop: Stop) -> Result<()>;
}

/// How [`PrivateServer::restart`] stops the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM: the server shuts down cleanly.
    Graceful,
    /// SIGKILL: the server dies where it is.
    Kill,
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stop::Graceful => "SIGTERM",
            Stop::Kill => "SIGKILL",
        })
    }
}

/// A backend as a shareable value.
pub type DynBackend = Arc<dyn Backend>;
