//! Checks for a backend's URL parsing, for its config's unit tests: bad
//! URLs are refused with a typed error naming the backend, and an unknown
//! key is named along with the keys the backend knows.

use std::str::FromStr;

use qis_core::{Error, ErrorKind};

/// Every URL of `urls` is refused by `C::from_str` with
/// [`InvalidInput`](ErrorKind::InvalidInput) (or
/// [`InvalidSubject`](ErrorKind::InvalidSubject), for a bad prefix), and
/// the error names `transport`. Panics (a test failure) with the URL
/// otherwise.
///
/// ```
/// use qis_core::memory::MemoryConfig;
/// qis_conformance::support::assert_urls_refused::<MemoryConfig>(
///     "memory",
///     &["memory://?prefix=Bad", "memory://?colour=blue"],
/// );
/// ```
pub fn assert_urls_refused<C: FromStr<Err = Error>>(transport: &str, urls: &[&str]) {
    for url in urls {
        let Err(e) = url.parse::<C>() else {
            panic!("{url} was accepted");
        };
        assert!(
            matches!(
                e.kind(),
                ErrorKind::InvalidInput | ErrorKind::InvalidSubject
            ),
            "{url}: {e}"
        );
        assert_eq!(e.transport(), transport, "{url}");
    }
}

/// Each of `keys` (`key=value`: unknown, or an old spelling) appended to
/// `base` (a URL ending in `?`) is refused with
/// [`InvalidInput`](ErrorKind::InvalidInput) whose message names the key
/// and every key of `known`, so a user sees what to write instead.
///
/// ```
/// use qis_core::memory::MemoryConfig;
/// qis_conformance::support::assert_keys_refused::<MemoryConfig>(
///     "memory://?",
///     &["colour=blue", "max_age_s=60"],
///     &["prefix", "max_age", "max_bytes"],
/// );
/// ```
pub fn assert_keys_refused<C: FromStr<Err = Error>>(base: &str, keys: &[&str], known: &[&str]) {
    for key in keys {
        let url = format!("{base}{key}");
        let Err(e) = url.parse::<C>() else {
            panic!("{url} was accepted");
        };
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{url}: {e}");
        let name = key.split('=').next().unwrap_or(key);
        for named in std::iter::once(&name).chain(known) {
            assert!(
                e.message().contains(named),
                "{url}: {named} not named in {e}"
            );
        }
    }
}
