//! Helpers shared by this crate's integration tests: where the server is,
//! starting a private nats-server, and turning "no server here" into an
//! ignored test (or a failure with `QIS_REQUIRE_LIVE=1`).

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use libtest_mimic::{Completion, Failed, Trial};
use qis_core::{OutcomePacket, Subject};

pub type TestResult = Result<(), String>;

pub fn require_live() -> bool {
    std::env::var("QIS_REQUIRE_LIVE").is_ok_and(|v| v == "1")
}

pub fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// A fresh prefix like `qt1a2b3c4d.iot`, so runs never see each other's data.
pub fn fresh_prefix() -> Subject {
    Subject::new(format!("qt{}.iot", random_hex(5))).unwrap()
}

pub fn pkt(agent: &str, domain: &str, problem: &str, seq: usize) -> OutcomePacket {
    OutcomePacket {
        agent_id: agent.to_string(),
        domain: domain.to_string(),
        problem_class: problem.to_string(),
        conclusion: format!("finding {seq} of {agent}"),
        confidence: 0.5 + (seq % 50) as f64 / 100.0,
        context_vector: vec![0.18, 0.92, 0.03, 0.71],
        timestamp: 1_764_000_000.0 + seq as f64,
        source_node: "nats-tests".to_string(),
    }
}

fn reachable(addr: &str) -> bool {
    let Ok(addrs) = std::net::ToSocketAddrs::to_socket_addrs(addr) else {
        return false;
    };
    addrs
        .into_iter()
        .any(|a| TcpStream::connect_timeout(&a, Duration::from_secs(1)).is_ok())
}

/// The server named by `QIS_NATS_URL`, or why it cannot be used.
pub fn shared_server() -> Result<String, String> {
    let url = std::env::var("QIS_NATS_URL").map_err(|_| {
        "QIS_NATS_URL is not set (start one with scripts/servers/nats.sh start DIR)".to_string()
    })?;
    let config = qis_transport_nats::NatsConfig::from_url(&url)
        .map_err(|e| format!("QIS_NATS_URL={url}: {e}"))?;
    let answers = config
        .servers
        .iter()
        .filter_map(|s| s.split_once("://").map(|(_, addr)| addr))
        .any(reachable);
    if answers {
        Ok(url)
    } else {
        Err(format!("the NATS server at {url} does not answer"))
    }
}

/// The nats-server binary: `QIS_NATS_RESTART_BIN`, or `nats-server` on PATH.
pub fn server_binary() -> Result<PathBuf, String> {
    if let Ok(bin) = std::env::var("QIS_NATS_RESTART_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join("nats-server");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err("nats-server is not on PATH and QIS_NATS_RESTART_BIN is not set (scripts/servers/nats.sh install)".into())
}

/// A test trial that runs `body` when `available` is Ok, is ignored with the
/// reason otherwise, or fails when `QIS_REQUIRE_LIVE=1`.
pub fn trial<F>(name: &str, available: &Result<impl Sized, String>, body: F) -> Trial
where
    F: FnOnce() -> TestResult + Send + 'static,
{
    match available {
        Ok(_) => Trial::test(name, move || body().map_err(Failed::from)),
        Err(why) if require_live() => {
            let why = format!("required by QIS_REQUIRE_LIVE=1 but unavailable: {why}");
            Trial::test(name, move || Err(Failed::from(why)))
        }
        Err(why) => {
            let why = why.clone();
            Trial::ignorable_test(name, move || Ok(Completion::ignored_with(why)))
        }
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().unwrap().port()
}

/// A nats-server of this test's own: loopback, its own port and store
/// directory; stopped (by PID) when dropped.
pub struct OwnServer {
    bin: PathBuf,
    pub port: u16,
    pub dir: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
}

impl OwnServer {
    /// Start one with JetStream and `extra` arguments (auth, TLS, …).
    pub fn start(extra: &[&str]) -> Result<Self, String> {
        let bin = server_binary()?;
        let dir = std::env::temp_dir().join(format!("qis-nats-test-{}", random_hex(6)));
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let mut s = OwnServer {
            bin,
            port: free_port(),
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        s.restart()?;
        Ok(s)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Start (again) on the same port and store; returns once the port answers.
    pub fn restart(&mut self) -> TestResult {
        if self.child.is_some() {
            return Err("the server is already running".into());
        }
        let store = self.dir.join("store");
        let log = std::fs::File::create(self.dir.join("nats.log")).map_err(|e| e.to_string())?;
        let child = Command::new(&self.bin)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&store)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("could not start {}: {e}", self.bin.display()))?;
        self.child = Some(child);
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!(
                    "nats-server exited at start ({status}); log: {}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!(
            "nats-server did not open port {} within 10 s; log: {}",
            self.port,
            self.log()
        ))
    }

    /// Stop it by PID: `graceful` sends SIGTERM, otherwise SIGKILL. Waits for exit.
    pub fn stop(&mut self, graceful: bool) -> TestResult {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let signal = if graceful { "-TERM" } else { "-KILL" };
        let _ = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if child.try_wait().map_err(|e| e.to_string())?.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err("nats-server did not exit within 15 s of the stop signal".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("nats.log"))
            .unwrap_or_default()
            .lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
