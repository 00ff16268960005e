//! Helpers shared by this crate's tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use qis_core::OutcomePacket;

/// A directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!(
            "qis-sqlite-{tag}-{}-{nanos}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn db(&self) -> PathBuf {
        self.0.join("outcomes.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A valid packet; `tag` makes its body (and id) unique.
pub fn packet(domain: &str, problem_class: &str, tag: &str) -> OutcomePacket {
    OutcomePacket {
        agent_id: format!("agent-{tag}"),
        domain: domain.into(),
        problem_class: problem_class.into(),
        conclusion: format!("conclusion {tag}"),
        confidence: 0.75,
        context_vector: vec![0.1, 0.2, 0.3],
        timestamp: 1_764_000_000.0,
        source_node: "node-1".into(),
    }
}

/// Poll `check` until it is true, failing with `what` after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "within {limit:?}: {what} did not happen"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
