//! What a backend gives the conformance suite.

use std::sync::Arc;

use qis::{async_trait, DynTransport, Result, Subject};

/// One backend under test.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Short name, used in test names (`nats::deposit_receipt`).
    fn name(&self) -> &'static str;

    /// Why this backend cannot run here (its server is not configured or not
    /// reachable), or `None` when it can. With `QIS_REQUIRE_LIVE=1` a reason
    /// fails the run instead of ignoring the cases.
    async fn unavailable(&self) -> Option<String>;

    /// A transport on `prefix`. Calling it again with the same prefix gives an
    /// independent handle (a new connection: "another process") on the same
    /// store, so resume-by-name can be tested.
    async fn open(&self, prefix: &Subject) -> Result<DynTransport>;

    /// Put raw bytes on `subject` the way a foreign publisher would, bypassing
    /// every check (for the malformed-message case). `transport` is one opened
    /// by [`Backend::open`] on the same prefix.
    async fn inject_raw(&self, transport: &DynTransport, subject: &str, body: &[u8]) -> Result<()>;
}

/// A backend as a shareable value.
pub type DynBackend = Arc<dyn Backend>;
