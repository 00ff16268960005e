//! The in-memory backend: always available.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use qis::backend::InjectRaw;
use qis::{async_trait, DynTransport, MemoryTransport, Result, Subject};

use crate::harness::{Backend, DynBackend};

#[derive(Default)]
struct Memory {
    stores: Mutex<HashMap<Subject, MemoryTransport>>,
}

pub fn backend() -> DynBackend {
    Arc::new(Memory::default())
}

#[async_trait]
impl Backend for Memory {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn unavailable(&self) -> Option<String> {
        None
    }

    async fn open(&self, prefix: &Subject) -> Result<DynTransport> {
        let mut stores = self.stores.lock().unwrap();
        let store = stores
            .entry(prefix.clone())
            .or_insert_with(|| MemoryTransport::new(prefix.clone()).inner().clone());
        Ok(Arc::new(store.handle()))
    }

    async fn inject_raw(&self, transport: &DynTransport, subject: &str, body: &[u8]) -> Result<()> {
        let store = self
            .stores
            .lock()
            .unwrap()
            .get(transport.prefix())
            .cloned()
            .expect("inject_raw on a prefix opened by this backend");
        store.inject_raw(subject, body).await
    }
}
