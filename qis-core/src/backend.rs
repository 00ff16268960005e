//! For backend authors: what a transport implementation needs from the core,
//! and what users of a transport never touch.
//!
//! A backend implements [`OutcomeTransport`](crate::OutcomeTransport) and
//! [`DurableConsumer`](crate::DurableConsumer) for its own types and keeps
//! only what is truly its own. Its `connect` returns the transport wrapped in
//! [`Checked`](crate::Checked), the one checking layer, which refuses calls
//! on a closed transport or consumer, subjects outside the prefix, patterns
//! that can match nothing, what the capabilities rule out and deliveries
//! acked on a consumer that did not hand them out; and which opens the same
//! `tracing` spans on every backend. So a backend does not repeat those
//! checks.
//!
//! This module holds the rest of what a backend needs:
//!
//! - **Ack tokens**: [`seq_token`] (a number kept inline, no allocation per
//!   delivery), [`words_token`] (three numbers inline: a partition and an
//!   offset, a stream and an entry id) or [`value_token`] (any value, in an
//!   `Arc`: an allocation per delivery) to put in a [`Delivery`];
//!   [`token_seq`] / [`token_words`] / [`token_value`] to read it back on
//!   ack and nak, with the same error on every backend for a token that is
//!   not its own.
//! - **The checks** the layer applies, for a backend that must repeat one on
//!   its own path: [`check_under_prefix`], [`check_pattern_overlaps`]; and
//!   [`is_plain_name`], the rule for consumer names.
//! - **Raw injection** for tests of malformed-message handling:
//!   [`InjectRaw`] writes bytes the way a foreign publisher of garbage would.
//! - **Open handles**: [`OpenHandles`] remembers the consumer handles a
//!   transport opened, to close them all when the transport closes.
//!
//! ```
//! use qis_core::backend::{seq_token, token_seq};
//! use qis_core::{Delivery, OutcomePacket, Position, Received};
//!
//! let body = br#"{"agent_id":"a","domain":"hvac","problem_class":"x","conclusion":"c","confidence":0.5,"context_vector":[],"timestamp":1.0,"source_node":"n"}"#;
//! let delivery = Delivery {
//!     received: Received::decode("qis.iot.hvac.x", body).unwrap(),
//!     position: Position::Sequence(7),
//!     delivery_count: 1,
//!     token: seq_token(7),
//! };
//! assert_eq!(token_seq("mine", &delivery).unwrap(), 7);
//! ```

use std::any::Any;
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;

use crate::error::{Error, ErrorKind, Result};
use crate::subject::{Subject, SubjectPattern};
use crate::transport::{AckToken, Delivery, TokenValue};

/// A token holding a number (a sequence, a row id, an offset): no allocation.
pub fn seq_token(seq: u64) -> AckToken {
    AckToken {
        owner: 0,
        value: TokenValue::Seq(seq),
    }
}

/// A token holding three numbers (what finds a delivery again: a
/// partition and an offset, a stream's number and an entry id): no
/// allocation.
pub fn words_token(words: [u64; 3]) -> AckToken {
    AckToken {
        owner: 0,
        value: TokenValue::Words(words),
    }
}

/// A token holding any value of the backend's own.
pub fn value_token<T: Any + Send + Sync>(value: T) -> AckToken {
    AckToken {
        owner: 0,
        value: TokenValue::Any(Arc::new(value)),
    }
}

fn foreign(transport: &'static str, d: &Delivery) -> Error {
    Error::new(
        ErrorKind::InvalidInput,
        transport,
        format!(
            "packet {} was not delivered by this {transport} transport: ack or nak it on the consumer that fetched it",
            d.id()
        ),
    )
}

/// The number in a token made by [`seq_token`]; [`ErrorKind::InvalidInput`]
/// for a delivery whose token is not one.
pub fn token_seq(transport: &'static str, d: &Delivery) -> Result<u64> {
    match d.token.value {
        TokenValue::Seq(s) => Ok(s),
        _ => Err(foreign(transport, d)),
    }
}

/// The numbers in a token made by [`words_token`];
/// [`ErrorKind::InvalidInput`] for a delivery whose token is not one.
pub fn token_words(transport: &'static str, d: &Delivery) -> Result<[u64; 3]> {
    match d.token.value {
        TokenValue::Words(w) => Ok(w),
        _ => Err(foreign(transport, d)),
    }
}

/// The value in a token made by [`value_token`]; [`ErrorKind::InvalidInput`]
/// for a delivery whose token holds something else.
pub fn token_value<'a, T: Any>(transport: &'static str, d: &'a Delivery) -> Result<&'a T> {
    match &d.token.value {
        TokenValue::Any(v) => v.downcast_ref::<T>().ok_or_else(|| foreign(transport, d)),
        _ => Err(foreign(transport, d)),
    }
}

/// Whether `name` is 1 to `max_len` of `A-Z a-z 0-9 _ -`: what a consumer
/// name may be ([`ConsumerConfig::new`](crate::ConsumerConfig::new)), and
/// what brokers accept in most names of their own (a NATS stream).
pub fn is_plain_name(name: &str, max_len: usize) -> bool {
    !name.is_empty()
        && name.len() <= max_len
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
}

/// Check that `subject` lies under the transport's prefix.
pub fn check_under_prefix(
    transport: &'static str,
    prefix: &Subject,
    subject: &Subject,
) -> Result<()> {
    if subject.as_str().len() > prefix.as_str().len() && prefix.contains(subject.as_str()) {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::InvalidSubject,
            transport,
            format!("subject {subject} is not under this transport's prefix {prefix}: deposit under {prefix}.> or configure another prefix"),
        ))
    }
}

/// Check that a consumer or subscription pattern can match something under the
/// transport's prefix.
pub fn check_pattern_overlaps(
    transport: &'static str,
    prefix: &Subject,
    pattern: &SubjectPattern,
) -> Result<()> {
    if pattern.overlaps(prefix) {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::InvalidSubject,
            transport,
            format!("pattern {pattern} can match nothing under this transport's prefix {prefix}: use a pattern under {prefix}.>"),
        ))
    }
}

/// Writing raw bytes on a subject with no check at all, the way a foreign
/// publisher of garbage would: for tests of malformed-message handling
/// (SPEC §6.7). Every backend implements it on its transport type; the
/// conformance suite's `Backend::inject_raw` calls it.
#[async_trait]
pub trait InjectRaw {
    /// Store `body` on `subject` bypassing every check. The subject need not
    /// be valid or under the prefix, and the body need not be a packet.
    async fn inject_raw(&self, subject: &str, body: &[u8]) -> Result<()>;
}

/// The handles (consumers, sessions) a transport opened and must close when
/// it closes. Kept weakly: a handle its user dropped is not kept alive, and
/// is forgotten on the next [`insert`](Self::insert).
#[derive(Debug)]
pub struct OpenHandles<T> {
    handles: Mutex<Vec<Weak<T>>>,
}

impl<T> Default for OpenHandles<T> {
    fn default() -> Self {
        OpenHandles {
            handles: Mutex::new(Vec::new()),
        }
    }
}

impl<T> OpenHandles<T> {
    /// Remember `handle`.
    pub fn insert(&self, handle: Weak<T>) {
        let mut handles = self.handles.lock().unwrap_or_else(|e| e.into_inner());
        handles.retain(|h| h.strong_count() > 0);
        handles.push(handle);
    }

    /// Close every handle still alive with `close` (each one, even after a
    /// failure) and forget them all; the first error, if any.
    pub async fn close_all<F, Fut>(&self, mut close: F) -> Result<()>
    where
        F: FnMut(Arc<T>) -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let handles = std::mem::take(&mut *self.handles.lock().unwrap_or_else(|e| e.into_inner()));
        let mut first_error = None;
        for handle in handles.iter().filter_map(Weak::upgrade) {
            if let Err(e) = close(handle).await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::Received;
    use crate::transport::Position;

    fn delivery(token: AckToken) -> Delivery {
        let body = br#"{"agent_id":"a","domain":"hvac","problem_class":"x","conclusion":"c","confidence":0.5,"context_vector":[],"timestamp":1.0,"source_node":"n"}"#;
        Delivery {
            received: Received::decode("qis.iot.hvac.x", body).unwrap(),
            position: Position::Sequence(1),
            delivery_count: 1,
            token,
        }
    }

    #[test]
    fn each_token_reads_back_only_as_its_own_kind() {
        let seq = delivery(seq_token(7));
        let words = delivery(words_token([3, u64::MAX, 0]));
        let value = delivery(value_token(String::from("reply")));
        assert_eq!(token_seq("t", &seq).unwrap(), 7);
        assert_eq!(token_words("t", &words).unwrap(), [3, u64::MAX, 0]);
        assert_eq!(token_value::<String>("t", &value).unwrap(), "reply");
        for (d, kind) in [(&words, "words"), (&value, "value")] {
            let e = token_seq("t", d).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{kind} read as seq");
        }
        for (d, kind) in [(&seq, "seq"), (&value, "value")] {
            let e = token_words("t", d).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{kind} read as words");
        }
        for (d, kind) in [(&seq, "seq"), (&words, "words")] {
            let e = token_value::<String>("t", d).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{kind} read as a value");
        }
        assert_eq!(
            token_value::<u32>("t", &value).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        assert!(format!("{:?}", words.token).contains("3/18446744073709551615/0"));
    }
}
