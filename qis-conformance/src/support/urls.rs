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

/// `url` (with a key the backend does not know) is refused, and the error
/// names every key of `named`: the unknown one and those it knows.
pub fn assert_names_keys<C: FromStr<Err = Error>>(url: &str, named: &[&str]) {
    let Err(e) = url.parse::<C>() else {
        panic!("{url} was accepted");
    };
    for key in named {
        assert!(e.message().contains(key), "{key}: {e}");
    }
}
