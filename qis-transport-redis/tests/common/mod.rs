//! What the Redis tests share: a `redis-server` child process for tests
//! that need their own server (loopback, a free port, data in a temporary
//! directory, stopped by PID), and in [`live`] helpers for cases against
//! the shared server at `QIS_REDIS_URL`.

// Each test binary uses part of this module.
#![allow(dead_code)]

pub mod live;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use qis_conformance::support::{free_port, stop_child, TempDir};

/// A redis-server child of this test.
pub struct Server {
    dir: TempDir,
    pub port: u16,
    /// Extra redis-server options.
    pub args: Vec<String>,
    tls: bool,
    child: Option<Child>,
}

impl Server {
    /// A server (not started yet) with data in a fresh temporary directory.
    /// `args` are extra redis-server options; with `tls` the port is the TLS
    /// port (the plain one is off).
    pub fn new(name: &str, args: &[&str], tls: bool) -> Server {
        Server {
            dir: TempDir::new(&format!("redis-{name}")),
            port: free_port(),
            args: args.iter().map(|s| s.to_string()).collect(),
            tls,
            child: None,
        }
    }

    /// Its data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The log file.
    pub fn log(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Start it and wait (bounded) until it accepts connections.
    pub fn start(&mut self) -> Result<(), String> {
        let port = self.port.to_string();
        let mut cmd = Command::new("redis-server");
        if self.tls {
            cmd.args(["--port", "0", "--tls-port", &port]);
        } else {
            cmd.args(["--port", &port]);
        }
        let log_before = std::fs::read_to_string(self.log())
            .map(|s| s.len())
            .unwrap_or(0);
        let child = cmd
            .args(["--bind", "127.0.0.1", "--daemonize", "no", "--logfile"])
            .arg(self.log())
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("could not start redis-server: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ready = std::fs::read_to_string(self.log())
                .map(|s| {
                    s.get(log_before..)
                        .unwrap_or("")
                        .contains("Ready to accept connections")
                })
                .unwrap_or(false);
            if ready && self.answers() {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    return Err(format!(
                        "redis-server exited at start ({status}); see {}",
                        self.log().display()
                    ));
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "redis-server was not ready on port {} within 10 s",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Plain servers answer PING; TLS ones accept TCP.
    fn answers(&self) -> bool {
        let Ok(mut s) = TcpStream::connect_timeout(
            &([127, 0, 0, 1], self.port).into(),
            Duration::from_millis(200),
        ) else {
            return false;
        };
        if self.tls {
            return true;
        }
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 16];
        matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
    }

    /// SIGTERM by PID (Redis flushes its AOF and exits), then wait for the exit.
    pub fn stop(&mut self) -> Result<(), String> {
        let Some(child) = self.child.take() else {
            return Ok(());
        };
        let pid = child.id();
        stop_child(child, "-TERM", Duration::from_secs(15))
            .map_err(|why| format!("redis-server {pid} {why}"))
    }
}

impl Server {
    /// SIGKILL by PID (no chance to flush anything), then wait for the exit.
    pub fn kill(&mut self) -> Result<(), String> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        child
            .kill()
            .map_err(|e| format!("could not kill redis-server {}: {e}", child.id()))?;
        child
            .wait()
            .map_err(|e| format!("could not reap redis-server: {e}"))?;
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.stop().is_err() {
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        // The data directory goes with `self.dir`, after the server.
    }
}
