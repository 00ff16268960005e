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
}

/// A backend as a shareable value.
pub type DynBackend = Arc<dyn Backend>;
