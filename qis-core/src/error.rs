//! One error type for every transport, with a kind to match on.

use std::fmt;

/// What went wrong, as a caller would branch on it. Tests and callers match on
/// the kind, never on the message text.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A packet failed validation (bad field, bad JSON, wrong type).
    InvalidPacket,
    /// A packet body is larger than [`crate::MAX_PACKET_BYTES`].
    PacketTooLarge,
    /// A token, subject or subject pattern breaks the subject rules.
    InvalidSubject,
    /// Some other argument or configuration value is not acceptable.
    InvalidInput,
    /// The transport cannot do this (see [`crate::Capabilities`]).
    Unsupported,
    /// The server or file could not be reached; retrying later may work.
    Unavailable,
    /// The operation did not finish in time.
    Timeout,
    /// A named thing (stream, consumer) does not exist.
    NotFound,
    /// Something exists already with a different configuration.
    Conflict,
    /// The transport or consumer has been closed.
    Closed,
    /// The local store is at its size limit and everything in it is still
    /// owed to a durable consumer, so storing more would lose packets that
    /// were never delivered. Nothing of the refused deposit was stored.
    /// Retry once the consumers have caught up (a bridge forwarding to its
    /// hub frees the space), raise the store's `max_bytes`, delete a consumer
    /// that is no longer used, or choose the `drop_oldest` policy.
    StoreFull,
    /// The backend reported an error not covered by the kinds above.
    Backend,
}

impl ErrorKind {
    /// Whether the same call may succeed if retried later: the server or file
    /// could not be reached ([`Unavailable`](Self::Unavailable)), a call timed
    /// out ([`Timeout`](Self::Timeout)), the backend failed in a way not
    /// covered by the other kinds ([`Backend`](Self::Backend)), or the local
    /// store is full until its consumers catch up
    /// ([`StoreFull`](Self::StoreFull)). Bad input, missing capabilities,
    /// conflicts and closed handles are permanent.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorKind::Unavailable | ErrorKind::Timeout | ErrorKind::Backend | ErrorKind::StoreFull
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ErrorKind::InvalidPacket => "invalid packet",
            ErrorKind::PacketTooLarge => "packet too large",
            ErrorKind::InvalidSubject => "invalid subject",
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::NotFound => "not found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Closed => "closed",
            ErrorKind::StoreFull => "store full",
            ErrorKind::Backend => "backend error",
        };
        f.write_str(s)
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The error of every QIS operation: a [`ErrorKind`], the transport that raised
/// it (`"core"` for packet and subject checks), a message a person can act on,
/// and the backend's own error as [`std::error::Error::source`].
#[derive(Debug, thiserror::Error)]
#[error("{transport}: {kind}: {message}")]
pub struct Error {
    kind: ErrorKind,
    transport: &'static str,
    message: String,
    #[source]
    source: Option<Source>,
}

impl Error {
    /// A new error of `kind` raised by `transport`.
    pub fn new(kind: ErrorKind, transport: &'static str, message: impl Into<String>) -> Self {
        Error {
            kind,
            transport,
            message: message.into(),
            source: None,
        }
    }

    /// An error raised by the core checks (packets, subjects, fingerprints).
    pub fn core(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error::new(kind, "core", message)
    }

    /// Attach the backend's error as the source.
    pub fn with_source(mut self, source: impl Into<Source>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// A shorthand for an [`ErrorKind::InvalidInput`] error: `message`
    /// says what is wrong and what to write instead.
    pub fn invalid_input(transport: &'static str, message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidInput, transport, message)
    }

    /// A shorthand for an [`ErrorKind::Unsupported`] error.
    pub fn unsupported(transport: &'static str, what: &str) -> Self {
        Error::new(
            ErrorKind::Unsupported,
            transport,
            format!(
                "{what} is not supported by the {transport} transport; check capabilities() first"
            ),
        )
    }

    /// A shorthand for the [`ErrorKind::Closed`] error of a transport used
    /// after [`close`](crate::OutcomeTransport::close).
    pub fn closed(transport: &'static str) -> Self {
        Error::new(
            ErrorKind::Closed,
            transport,
            "the transport is closed: connect again",
        )
    }

    /// A shorthand for the [`ErrorKind::Closed`] error of a durable
    /// consumer used (or fetching) after its
    /// [`close`](crate::DurableConsumer::close); the consumer itself stays
    /// with the backend.
    pub fn consumer_closed(transport: &'static str, consumer: &str) -> Self {
        Error::new(
            ErrorKind::Closed,
            transport,
            format!("consumer {consumer} is closed: open it again by name"),
        )
    }

    /// Which kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether retrying the same call later may succeed (see
    /// [`ErrorKind::is_transient`]).
    pub fn is_transient(&self) -> bool {
        self.kind.is_transient()
    }

    /// The transport that raised it (`"core"` for validation errors).
    pub fn transport(&self) -> &'static str {
        self.transport
    }

    /// The message, without the kind and transport prefix.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Re-label a core error as raised by `transport` (keeps kind and message).
    pub fn in_transport(mut self, transport: &'static str) -> Self {
        self.transport = transport;
        self
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
