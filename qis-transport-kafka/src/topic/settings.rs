//! The topic-level settings that make the configured retention hold, and
//! the comparison of an existing topic's settings with them.
//!
//! Kafka deletes whole log segments only, never single records: a segment
//! goes once its newest record is older than `retention.ms`, or while the
//! partition without it is still at least `retention.bytes`. The segment in
//! which records are being written (the active one) is never deleted for
//! size. With Kafka's default segments (7 days, 1 GiB) a 24 h / 50 MiB
//! retention would keep data for a week and far past its size, so the
//! transport also sets the segment size and age:
//!
//! - `segment.ms` = `max_age` / 10, between 1 s and 7 days;
//! - `segment.bytes` = (`max_bytes` / partitions) / 10, between 1 MiB (the
//!   smallest segment Kafka 4 accepts) and 1 GiB.
//!
//! The bound this gives: a record is deleted at most `max_age` +
//! `segment.ms` after it was written, plus the broker's
//! `log.retention.check.interval.ms` (5 min by default), and a partition
//! holds at most `retention.bytes` + `segment.bytes`, so the topic at most
//! `max_bytes` + partitions × `segment.bytes` (1.1 × `max_bytes` unless the
//! 1 MiB floor applies: with small budgets it is `max_bytes` + partitions ×
//! 1 MiB).

use std::collections::HashMap;
use std::time::Duration;

use crate::config::KafkaConfig;

/// Segments are this fraction of the retention they serve.
const SEGMENT_FRACTION: u64 = 10;

/// The shortest segment age set (Kafka accepts 1 ms; shorter than a second
/// only makes files).
const MIN_SEGMENT_MS: u64 = 1_000;

/// The longest segment age set: Kafka's default.
const MAX_SEGMENT_MS: u64 = 7 * 24 * 3600 * 1000;

/// The smallest segment Kafka 4 accepts (`segment.bytes` ≥ 1 MiB).
const MIN_SEGMENT_BYTES: u64 = 1024 * 1024;

/// The largest segment set: Kafka's default.
const MAX_SEGMENT_BYTES: u64 = 1024 * 1024 * 1024;

/// The settings the transport gives its topic, all per partition where
/// Kafka counts per partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TopicSettings {
    pub retention_ms: u64,
    pub retention_bytes: u64,
    pub segment_ms: u64,
    pub segment_bytes: u64,
}

impl TopicSettings {
    /// The settings for `config`'s retention on a topic of `partitions`
    /// partitions: Kafka's `retention.bytes` is per partition, so the topic's
    /// budget is split.
    pub fn wanted(config: &KafkaConfig, partitions: i32) -> TopicSettings {
        // A long, unlike librdkafka's millisecond properties (`ms` caps
        // those at i32::MAX, 24.8 days).
        let retention_ms = u64::try_from(config.retention.max_age.as_millis())
            .unwrap_or(i64::MAX as u64)
            .clamp(1, i64::MAX as u64);
        let retention_bytes = (config.retention.max_bytes / partitions.max(1) as u64).max(1);
        TopicSettings {
            retention_ms,
            retention_bytes,
            segment_ms: (retention_ms / SEGMENT_FRACTION).clamp(MIN_SEGMENT_MS, MAX_SEGMENT_MS),
            segment_bytes: (retention_bytes / SEGMENT_FRACTION)
                .clamp(MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES),
        }
    }

    /// The topic configuration entries, as given to CreateTopics and
    /// compared with DescribeConfigs: `cleanup.policy=delete` (compaction
    /// would keep only the last packet of each subject) and the four sizes.
    pub fn entries(&self) -> [(&'static str, String); 5] {
        [
            ("cleanup.policy", "delete".to_string()),
            ("retention.ms", self.retention_ms.to_string()),
            ("retention.bytes", self.retention_bytes.to_string()),
            ("segment.ms", self.segment_ms.to_string()),
            ("segment.bytes", self.segment_bytes.to_string()),
        ]
    }

    /// The longest a record stays (before the broker's retention check
    /// interval): `max_age` plus one segment's age.
    pub fn age_bound(&self) -> Duration {
        Duration::from_millis(self.retention_ms + self.segment_ms)
    }

    /// How the settings `have` (name → value, as DescribeConfigs reported
    /// them) differ from these: one `"name have (want want)"` per
    /// difference. Settings the broker did not report are returned apart:
    /// they cannot be compared.
    pub fn differences(
        &self,
        have: &HashMap<String, Option<String>>,
    ) -> (Vec<String>, Vec<&'static str>) {
        let mut differ = Vec::new();
        let mut unreported = Vec::new();
        for (name, want) in self.entries() {
            match have.get(name) {
                None | Some(None) => unreported.push(name),
                Some(Some(value)) if !same(name, value, &want) => {
                    differ.push(format!("{name} {value} (want {want})"));
                }
                Some(Some(_)) => {}
            }
        }
        (differ, unreported)
    }
}

/// Whether a reported value is the wanted one: numbers as numbers, the
/// cleanup policy as a set of policies.
fn same(name: &str, have: &str, want: &str) -> bool {
    if name == "cleanup.policy" {
        let policies = |s: &str| {
            let mut v: Vec<String> = s
                .split(',')
                .map(|p| p.trim().to_ascii_lowercase())
                .filter(|p| !p.is_empty())
                .collect();
            v.sort();
            v
        };
        return policies(have) == policies(want);
    }
    match (have.trim().parse::<i64>(), want.parse::<i64>()) {
        (Ok(h), Ok(w)) => h == w,
        _ => have.trim() == want,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> KafkaConfig {
        KafkaConfig::from_url(url).unwrap()
    }

    #[test]
    fn segments_are_a_tenth_of_the_retention_within_kafkas_limits() {
        // Defaults: 24 h and 50 MiB over 3 partitions.
        let s = TopicSettings::wanted(&config("kafka://h"), 3);
        assert_eq!(s.retention_ms, 86_400_000);
        assert_eq!(s.segment_ms, 8_640_000);
        assert_eq!(s.retention_bytes, 50 * 1024 * 1024 / 3);
        assert_eq!(s.segment_bytes, 50 * 1024 * 1024 / 3 / 10);
        assert_eq!(s.age_bound(), Duration::from_millis(86_400_000 + 8_640_000));

        // Small budgets: the floors apply.
        let s = TopicSettings::wanted(&config("kafka://h?max_age=2s&max_bytes=1MiB"), 4);
        assert_eq!(s.segment_ms, MIN_SEGMENT_MS);
        assert_eq!(s.retention_bytes, 256 * 1024);
        assert_eq!(s.segment_bytes, MIN_SEGMENT_BYTES);

        // Large ones: Kafka's defaults are the ceiling.
        let s = TopicSettings::wanted(&config("kafka://h?max_age=365d&max_bytes=100GiB"), 1);
        assert_eq!(s.segment_ms, MAX_SEGMENT_MS);
        assert_eq!(s.segment_bytes, MAX_SEGMENT_BYTES);
        assert!(s.segment_ms <= s.retention_ms / SEGMENT_FRACTION);
        assert_eq!(
            s.retention_ms,
            365 * 86_400_000,
            "not capped at i32::MAX ms"
        );
    }

    fn reported(entries: &[(&str, &str)]) -> HashMap<String, Option<String>> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), Some(v.to_string())))
            .collect()
    }

    #[test]
    fn an_existing_topic_is_compared_setting_by_setting() {
        let want = TopicSettings::wanted(&config("kafka://h?max_age=1h&max_bytes=30MiB"), 3);
        let same: Vec<(&str, String)> = want.entries().to_vec();
        let have: HashMap<_, _> = same
            .iter()
            .map(|(k, v)| (k.to_string(), Some(v.clone())))
            .collect();
        assert_eq!(want.differences(&have), (vec![], vec![]));

        // Kafka's defaults on a topic someone else created.
        let have = reported(&[
            ("cleanup.policy", "delete"),
            ("retention.ms", "604800000"),
            ("retention.bytes", "-1"),
            ("segment.ms", "604800000"),
            ("segment.bytes", "1073741824"),
            ("min.insync.replicas", "1"),
        ]);
        let (differ, unreported) = want.differences(&have);
        assert_eq!(
            differ,
            [
                "retention.ms 604800000 (want 3600000)",
                "retention.bytes -1 (want 10485760)",
                "segment.ms 604800000 (want 360000)",
                "segment.bytes 1073741824 (want 1048576)",
            ]
        );
        assert!(unreported.is_empty());

        // Compaction keeps one record per subject: not a retention we give.
        let mut have = reported(&[("cleanup.policy", "compact,delete")]);
        let (differ, unreported) = want.differences(&have);
        assert_eq!(differ, ["cleanup.policy compact,delete (want delete)"]);
        assert_eq!(
            unreported,
            [
                "retention.ms",
                "retention.bytes",
                "segment.ms",
                "segment.bytes"
            ]
        );
        have.insert("cleanup.policy".into(), Some(" Delete ".into()));
        assert!(want.differences(&have).0.is_empty());
        // A setting reported without a value cannot be compared.
        have.insert("retention.ms".into(), None);
        assert!(want.differences(&have).1.contains(&"retention.ms"));
    }
}
