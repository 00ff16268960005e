//! Where everything lives in Redis. Every key starts with the transport's
//! subject prefix (`{ns}` below, e.g. `qis.iot`), so transports on different
//! prefixes never see each other's data.
//!
//! The layout is described in the crate docs ("Key layout").
//!
//! A durable consumer is a consumer group of its name on every stream its
//! pattern matches (and on `{ns}:new-subjects`). Live packets go to the
//! Pub/Sub channel `{ns}:live:{subject}`.

/// Key names for one namespace.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    ns: String,
    stream_prefix: String,
    live_prefix: String,
}

impl Keys {
    pub(crate) fn new(ns: &str) -> Self {
        Keys {
            ns: ns.to_string(),
            stream_prefix: format!("{ns}:s:"),
            live_prefix: format!("{ns}:live:"),
        }
    }

    /// The stream of one subject.
    pub(crate) fn stream(&self, subject: &str) -> String {
        format!("{}{subject}", self.stream_prefix)
    }

    /// The prefix of every stream key (`{ns}:s:`).
    pub(crate) fn stream_prefix(&self) -> &str {
        &self.stream_prefix
    }

    /// The subject of a stream key.
    pub(crate) fn subject_of<'a>(&self, stream_key: &'a str) -> Option<&'a str> {
        stream_key.strip_prefix(self.stream_prefix.as_str())
    }

    /// The index of known subjects.
    pub(crate) fn subjects(&self) -> String {
        format!("{}:subjects", self.ns)
    }

    /// The subject index's version: a counter raised whenever a subject
    /// enters or leaves the index, so readers know when to look again.
    pub(crate) fn subjects_version(&self) -> String {
        format!("{}:subjects:v", self.ns)
    }

    /// The stream of new-subject events.
    pub(crate) fn new_subjects(&self) -> String {
        format!("{}:new-subjects", self.ns)
    }

    /// The prefix of the de-duplication buckets of a window
    /// (`{ns}:d:{window ms}:{bucket}`).
    pub(crate) fn dedup_prefix(&self, window_ms: u64) -> String {
        format!("{}:d:{window_ms}:", self.ns)
    }

    /// A durable consumer's definition.
    pub(crate) fn consumer(&self, name: &str) -> String {
        format!("{}:c:{name}", self.ns)
    }

    /// A durable consumer's delayed naks.
    pub(crate) fn delayed(&self, name: &str) -> String {
        format!("{}:c:{name}:delayed", self.ns)
    }

    /// The prefix of every live channel.
    pub(crate) fn live_prefix(&self) -> &str {
        &self.live_prefix
    }

    /// The live channel of one subject.
    pub(crate) fn live_channel(&self, subject: &str) -> String {
        format!("{}{subject}", self.live_prefix)
    }
}
