//! The whole conformance suite on a backend over `qis_core::MemoryTransport`,
//! through this crate's public API only: what a transport written outside
//! the QIS workspace puts in its own `tests/conformance.rs`.

use std::sync::Arc;

use qis_conformance::support::ByPrefix;
use qis_conformance::{async_trait, Backend};
use qis_core::backend::InjectRaw;
use qis_core::{DynTransport, MemoryTransport, Result, Subject};

/// One in-memory store per prefix; opening a prefix again gives another
/// handle on its store, as another process would get.
#[derive(Default)]
struct Memory {
    stores: ByPrefix<MemoryTransport>,
}

#[async_trait]
impl Backend for Memory {
    fn name(&self) -> &'static str {
        "memory"
    }

    // No server: the default `unavailable()` (always available) fits.

    async fn open(&self, prefix: &Subject) -> Result<DynTransport> {
        let store = self.stores.get_or_insert_with(prefix, || {
            MemoryTransport::new(prefix.clone()).inner().clone()
        });
        // A handle of its own (its own closed state), on the prefix's store.
        Ok(Arc::new(store.handle()))
    }

    async fn inject_raw(&self, transport: &DynTransport, subject: &str, body: &[u8]) -> Result<()> {
        let store = self.stores.get(transport.prefix(), "memory")?;
        store.inject_raw(subject, body).await
    }
}

fn main() {
    qis_conformance::run(vec![Arc::new(Memory::default())]);
}
