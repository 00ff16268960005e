//! What a backend opened on each prefix, for the [`Backend`](crate::Backend)
//! calls that come back with only a transport (`inject_raw`).

use std::collections::HashMap;
use std::sync::Mutex;

use qis_core::{Error, ErrorKind, Subject};

/// A map from prefix to what was opened on it (a store, a transport), safe
/// to share between cases. A poisoned lock is taken over: a case that
/// panicked must not fail the others.
#[derive(Debug)]
pub struct ByPrefix<T> {
    opened: Mutex<HashMap<Subject, T>>,
}

impl<T> Default for ByPrefix<T> {
    fn default() -> Self {
        ByPrefix {
            opened: Mutex::new(HashMap::new()),
        }
    }
}

impl<T: Clone> ByPrefix<T> {
    /// What is kept for `prefix`, made by `make` on first use.
    pub fn get_or_insert_with(&self, prefix: &Subject, make: impl FnOnce() -> T) -> T {
        self.lock()
            .entry(prefix.clone())
            .or_insert_with(make)
            .clone()
    }

    /// Keep `value` for `prefix`, in place of what was kept before.
    pub fn insert(&self, prefix: &Subject, value: T) {
        self.lock().insert(prefix.clone(), value);
    }

    /// What is kept for `prefix`; a `NotFound` error of `transport` if
    /// nothing was opened on it.
    pub fn get(&self, prefix: &Subject, transport: &'static str) -> qis_core::Result<T> {
        self.lock().get(prefix).cloned().ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                transport,
                format!("nothing was opened on prefix {prefix} by this backend"),
            )
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Subject, T>> {
        self.opened.lock().unwrap_or_else(|e| e.into_inner())
    }
}
