//! The shared conformance suite (`qis-conformance`) on SQLite: no server,
//! always available. It runs twice: `sqlite` with the default
//! `synchronous=FULL` (deposits on the connection thread) and
//! `sqlite-normal` with `synchronous=NORMAL` (deposits on the caller's
//! thread when the handle's side connection is free). Each prefix gets its own database file in a per-run
//! directory under Cargo's test temp dir; every `open` connects a new
//! `SqliteTransport` to that file (a new connection and threads, as another
//! process would). The fault cases' child processes get the directory in
//! `QIS_CONFORMANCE_SQLITE_DIR`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use qis_conformance::support::{inject_once, random_hex};
use qis_conformance::{async_trait, Backend};
use qis_core::{Checked, DynTransport, Result, Subject};
use qis_transport_sqlite::{SqliteConfig, SqliteTransport, Synchronous};

struct Sqlite {
    dir: PathBuf,
    name: &'static str,
    synchronous: Synchronous,
}

/// Per-run directories older than this are removed when a run starts (a
/// run ends with `process::exit`, so it cannot clean up after itself).
const STALE: Duration = Duration::from_secs(3600);

/// Where a child process of this binary (the fault cases' consumers and
/// writers) finds the parent's files.
const DIR_ENV: &str = "QIS_CONFORMANCE_SQLITE_DIR";

impl Sqlite {
    fn new(name: &'static str, synchronous: Synchronous) -> Sqlite {
        if let Some(dir) = std::env::var_os(DIR_ENV) {
            return Sqlite {
                dir: dir.into(),
                name,
                synchronous,
            };
        }
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
        let dir = root.join(format!("run-{}-{}", std::process::id(), random_hex(4)));
        std::fs::create_dir_all(&dir).expect("a directory for the SQLite conformance files");
        Sqlite {
            dir,
            name,
            synchronous,
        }
    }

    async fn connect(&self, prefix: &Subject) -> Result<Checked<SqliteTransport>> {
        let path = self.dir.join(format!("{prefix}.db"));
        let config = SqliteConfig::new(path)
            .prefix(prefix.clone())
            .synchronous(self.synchronous);
        SqliteTransport::connect(config).await
    }
}

#[async_trait]
impl Backend for Sqlite {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn open(&self, prefix: &Subject) -> Result<DynTransport> {
        Ok(Arc::new(self.connect(prefix).await?))
    }

    async fn inject_raw(&self, transport: &DynTransport, subject: &str, body: &[u8]) -> Result<()> {
        // A foreign writer: its own connection to the same file, no checks.
        inject_once(self.connect(transport.prefix()).await?, subject, body).await
    }

    fn process_env(&self) -> Vec<(String, String)> {
        vec![(DIR_ENV.into(), self.dir.display().to_string())]
    }
}

fn main() {
    qis_conformance::run(vec![
        Arc::new(Sqlite::new("sqlite", Synchronous::Full)),
        Arc::new(Sqlite::new("sqlite-normal", Synchronous::Normal)),
    ]);
}
