//! The SQLite backend: no server, always available. Each prefix gets its own
//! database file in a per-run directory under Cargo's test temp dir; every
//! `open` connects a new `SqliteTransport` to that file (a new connection and
//! threads, as another process would).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use qis::backend::InjectRaw;
use qis::sqlite::{SqliteConfig, SqliteTransport};
use qis::{async_trait, Checked, DynTransport, OutcomeTransport, Result, Subject};

use crate::harness::{Backend, DynBackend};

struct Sqlite {
    dir: PathBuf,
}

/// Per-run directories older than this are removed when a run starts (a
/// run ends with `process::exit`, so it cannot clean up after itself).
const STALE: Duration = Duration::from_secs(3600);

pub fn backend() -> DynBackend {
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("qis-conformance-sqlite");
    if let Ok(entries) = std::fs::read_dir(&root) {
        for entry in entries.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > STALE);
            if old {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = root.join(format!(
        "run-{}-{}",
        std::process::id(),
        crate::cases::random_hex(4)
    ));
    std::fs::create_dir_all(&dir).expect("a directory for the SQLite conformance files");
    Arc::new(Sqlite { dir })
}

impl Sqlite {
    fn path(&self, prefix: &Subject) -> PathBuf {
        self.dir.join(format!("{prefix}.db"))
    }

    async fn connect(&self, prefix: &Subject) -> Result<Checked<SqliteTransport>> {
        SqliteTransport::connect(SqliteConfig::new(self.path(prefix)).prefix(prefix.clone())).await
    }
}

#[async_trait]
impl Backend for Sqlite {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    async fn unavailable(&self) -> Option<String> {
        None
    }

    async fn open(&self, prefix: &Subject) -> Result<DynTransport> {
        Ok(Arc::new(self.connect(prefix).await?))
    }

    async fn inject_raw(&self, transport: &DynTransport, subject: &str, body: &[u8]) -> Result<()> {
        // A foreign writer: its own connection to the same file, no checks.
        let writer = self.connect(transport.prefix()).await?;
        writer.inject_raw(subject, body).await?;
        writer.close().await
    }
}
