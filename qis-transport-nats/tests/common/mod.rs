//! What this crate's tests share beyond `qis_conformance::support`: where
//! the shared server is, and starting a private nats-server.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use qis_conformance::support::{
    await_port, env_url, free_port, log_tail, spawn_server, stop_child, tcp_reachable, CaseResult,
    TempDir,
};

/// The server named by `QIS_NATS_URL`, or why it cannot be used.
pub fn shared_server() -> Result<String, String> {
    let url = env_url(
        "QIS_NATS_URL",
        "start one with scripts/servers/nats.sh start DIR",
    )?;
    let config = qis_transport_nats::NatsConfig::from_url(&url)
        .map_err(|e| format!("QIS_NATS_URL={url}: {e}"))?;
    let answers = config
        .servers
        .iter()
        .filter_map(|s| s.split_once("://").map(|(_, addr)| addr))
        .any(|addr| tcp_reachable(addr, Duration::from_secs(1)));
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

/// A nats-server of this test's own: loopback, its own port and store
/// directory; stopped (by PID) when dropped.
pub struct OwnServer {
    bin: PathBuf,
    pub port: u16,
    dir: TempDir,
    extra: Vec<String>,
    child: Option<Child>,
}

impl OwnServer {
    /// Start one with JetStream and `extra` arguments (auth, TLS, …).
    pub fn start(extra: &[&str]) -> Result<Self, String> {
        let bin = server_binary()?;
        let dir = TempDir::new("nats-test");
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
    pub fn restart(&mut self) -> CaseResult {
        if self.child.is_some() {
            return Err("the server is already running".into());
        }
        let store = self.dir.path().join("store");
        let child = spawn_server(
            Command::new(&self.bin)
                .args([
                    "-js",
                    "-a",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-sd",
                ])
                .arg(&store)
                .args(&self.extra),
            &self.dir.path().join("nats.log"),
        )?;
        self.child = Some(child);
        await_port(&mut self.child, self.port, Duration::from_secs(10))
            .map_err(|why| format!("nats-server {why}; log: {}", self.log()))
    }

    /// Stop it by PID: `graceful` sends SIGTERM, otherwise SIGKILL. Waits for exit.
    pub fn stop(&mut self, graceful: bool) -> CaseResult {
        let Some(child) = self.child.take() else {
            return Ok(());
        };
        let signal = if graceful { "-TERM" } else { "-KILL" };
        stop_child(child, signal, Duration::from_secs(15))
            .map_err(|why| format!("nats-server {why}"))
    }

    pub fn log(&self) -> String {
        log_tail(&self.dir.path().join("nats.log"), 15)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The store directory goes with `self.dir`, after the server.
    }
}

pub mod cluster;
