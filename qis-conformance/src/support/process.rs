//! Servers a test starts itself: waiting for their port, signals by PID,
//! stopping them, and the end of their logs.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::CaseResult;

/// Start a server of this test's own in the background: no stdin, its
/// stdout and stderr appended to `log` (created if missing, so a restart
/// keeps the earlier runs' lines). Fails with `could not start <program>:
/// …`. Wait for it with [`await_port`].
pub fn spawn_server(command: &mut Command, log: &Path) -> Result<Child, String> {
    let open = |what: &str| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("cannot open {} for its {what}: {e}", log.display()))
    };
    command
        .stdin(Stdio::null())
        .stdout(open("stdout")?)
        .stderr(open("stderr")?)
        .spawn()
        .map_err(|e| {
            format!(
                "could not start {}: {e}",
                command.get_program().to_string_lossy()
            )
        })
}

/// Wait until something accepts TCP connections on loopback `port`, while
/// the server `child` of this test starts: fails with `exited at start
/// (<status>)` if it exits first (and takes it out of `child`), or `did not
/// open port <port> within <within>`. Callers add the server's name and log.
pub fn await_port(child: &mut Option<Child>, port: u16, within: Duration) -> CaseResult {
    let addr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + within;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            *child = None;
            return Err(format!("exited at start ({status})"));
        }
        if Instant::now() > deadline {
            return Err(format!("did not open port {port} within {within:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Send `signal` (`"-TERM"`, `"-KILL"`, `"-STOP"`, …) to process `pid` with
/// `kill`.
pub fn signal(pid: u32, signal: &str) -> CaseResult {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .map_err(|e| format!("could not run kill {signal} {pid}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill {signal} {pid} failed: {status}"))
    }
}

/// Send `stop_signal` to `child` by its PID and wait up to `within` for it
/// to exit; if it does not, kill it and fail with `did not exit within
/// <within> of kill <signal>`.
pub fn stop_child(mut child: Child, stop_signal: &str, within: Duration) -> CaseResult {
    signal(child.id(), stop_signal)?;
    let deadline = Instant::now() + within;
    loop {
        if child.try_wait().map_err(|e| e.to_string())?.is_some() {
            return Ok(());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "did not exit within {within:?} of kill {stop_signal}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last `lines` lines of the log at `path` (empty if there is none).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Run `command` to its end: its output when it exits 0; otherwise fails
/// with `could not run <what>: …` or `<what> failed (<status>): <stdout><stderr>`.
pub fn run_ok(command: &mut Command, what: &str) -> Result<Output, String> {
    let out = command
        .output()
        .map_err(|e| format!("could not run {what}: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Read `pipe` (a child's stdout or stderr) line by line on a thread of its
/// own, handing each line to `each` until the pipe ends or `each` returns
/// `false` (its receiver is gone).
pub fn forward_lines<F>(pipe: impl Read + Send + 'static, mut each: F)
where
    F: FnMut(String) -> bool + Send + 'static,
{
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if !each(line) {
                break;
            }
        }
    });
}
