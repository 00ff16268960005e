//! Child processes for the fault cases: the test binary started again as a
//! consumer or a writer on the same backend, so that a case can kill it
//! with SIGKILL, as a crash or a power cut of a device would.
//!
//! The parent runs `std::env::current_exe()` with the role in the
//! environment ([`ROLE`] and the variables below, plus
//! [`Backend::process_env`](crate::Backend::process_env)). The child's
//! `main` reaches [`run_if_child`] through [`crate::run`] before libtest
//! parses anything, does its job and exits. It reports on stdout, one line
//! per event, written only once the event happened:
//!
//! - `ready`: the transport (and consumer) are open;
//! - consumer: `delivered <id> <delivery count>` for each delivery of a
//!   batch, then `acking <id>` before and `acked <id>` after each ack
//!   (one ack per delivery, so a kill lands in the middle of a batch, or
//!   of an ack: then the store may or may not have it); with a hold,
//!   `holding` once it stopped for good after acking half of a batch;
//! - writer: `sending <batch>` before each batch deposit, `stored <id>`
//!   for each receipt once the batch deposit returned;
//! - `closed` after a clean stop, when the parent closed its stdin.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use qis_core::{OutcomeTransportExt, StartPosition, Subject};
use tokio::sync::mpsc;

use crate::backend::DynBackend;
use crate::support::{consumer, context, forward_lines, pkt, runtime};

/// The role of a child (`consume` or `deposit`); unset in the parent.
pub(crate) const ROLE: &str = "QIS_CONFORMANCE_CHILD";
const BACKEND: &str = "QIS_CONFORMANCE_CHILD_BACKEND";
const PREFIX: &str = "QIS_CONFORMANCE_CHILD_PREFIX";
const NAME: &str = "QIS_CONFORMANCE_CHILD_NAME";
const ACK_WAIT_MS: &str = "QIS_CONFORMANCE_CHILD_ACK_WAIT_MS";
const BATCH: &str = "QIS_CONFORMANCE_CHILD_BATCH";
const HOLD_AFTER: &str = "QIS_CONFORMANCE_CHILD_HOLD_AFTER";

/// What a child does.
#[derive(Debug, Clone)]
pub(crate) enum Role {
    /// Fetch and ack on the durable consumer `name` on `{prefix}.>`; with
    /// `hold_after`, once that many are acked, ack half of the next batch
    /// and stop there until killed.
    Consume {
        name: String,
        ack_wait: Duration,
        batch: usize,
        hold_after: Option<usize>,
    },
    /// Deposit batches of `batch` packets from agent `name` until stopped.
    Deposit { name: String, batch: usize },
}

/// If this process is a child the suite started, do its job and exit.
pub(crate) fn run_if_child(backends: &[DynBackend]) {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    crate::support::init_tracing("error");
    let code = match child_main(&role, backends) {
        Ok(()) => 0,
        Err(e) => {
            // The parent shows the child's stderr when the case fails.
            eprintln!("conformance child ({role}): {e}");
            1
        }
    };
    std::process::exit(code);
}

fn var(key: &str) -> Result<String, String> {
    std::env::var(key).map_err(|_| format!("{key} is not set"))
}

fn number(key: &str) -> Result<usize, String> {
    var(key)?
        .parse()
        .map_err(|_| format!("{key} is not a number"))
}

fn child_main(role: &str, backends: &[DynBackend]) -> Result<(), String> {
    let backend_name = var(BACKEND)?;
    let backend = backends
        .iter()
        .find(|b| b.name() == backend_name)
        .ok_or_else(|| format!("no backend {backend_name} in this test binary"))?
        .clone();
    let prefix = Subject::new(var(PREFIX)?).map_err(context("prefix"))?;
    let role = match role {
        "consume" => Role::Consume {
            name: var(NAME)?,
            ack_wait: Duration::from_millis(number(ACK_WAIT_MS)? as u64),
            batch: number(BATCH)?,
            hold_after: std::env::var(HOLD_AFTER).ok().and_then(|v| v.parse().ok()),
        },
        "deposit" => Role::Deposit {
            name: var(NAME)?,
            batch: number(BATCH)?,
        },
        other => return Err(format!("unknown role {other:?}")),
    };
    // The parent closes stdin to ask for a clean stop.
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {
                sink.clear();
            }
            stop.store(true, Ordering::SeqCst);
        });
    }
    runtime().block_on(async move {
        match role {
            Role::Consume {
                name,
                ack_wait,
                batch,
                hold_after,
            } => consume(&backend, &prefix, &name, ack_wait, batch, hold_after, &stop).await,
            Role::Deposit { name, batch } => deposit(&backend, &prefix, &name, batch, &stop).await,
        }
    })
}

/// One line to the parent, on its way before this returns.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn consume(
    backend: &DynBackend,
    prefix: &Subject,
    name: &str,
    ack_wait: Duration,
    batch: usize,
    hold_after: Option<usize>,
    stop: &AtomicBool,
) -> Result<(), String> {
    let t = backend.open(prefix).await.map_err(context("open"))?;
    let c = consumer(
        &*t,
        name,
        &format!("{prefix}.>"),
        StartPosition::All,
        ack_wait,
    )
    .await?;
    say("ready");
    let mut acked = 0;
    while !stop.load(Ordering::SeqCst) {
        let got = match c.fetch(batch, Duration::from_millis(500)).await {
            Ok(got) => got,
            Err(e) if e.is_transient() => continue,
            Err(e) => return Err(format!("fetch: {e}")),
        };
        for d in &got {
            say(&format!("delivered {} {}", d.id(), d.delivery_count));
        }
        for (i, d) in got.iter().enumerate() {
            if hold_after.is_some_and(|h| acked >= h) && i >= got.len() / 2 {
                say("holding");
                // Until the parent kills this process.
                std::future::pending::<()>().await;
            }
            // A kill between these two lines leaves an ack that may or may
            // not have reached the store: the parent knows which one.
            say(&format!("acking {}", d.id()));
            c.ack(std::slice::from_ref(d))
                .await
                .map_err(context("ack"))?;
            say(&format!("acked {}", d.id()));
            acked += 1;
        }
    }
    c.close().await.map_err(context("close consumer"))?;
    t.close().await.map_err(context("close transport"))?;
    say("closed");
    Ok(())
}

async fn deposit(
    backend: &DynBackend,
    prefix: &Subject,
    agent: &str,
    batch: usize,
    stop: &AtomicBool,
) -> Result<(), String> {
    let t = backend.open(prefix).await.map_err(context("open"))?;
    say("ready");
    let mut k = 0;
    while !stop.load(Ordering::SeqCst) {
        let packets: Vec<_> = (k * batch..(k + 1) * batch)
            .map(|i| pkt(agent, "hvac", "energy-anomaly", i))
            .collect();
        say(&format!("sending {k}"));
        let receipts = t
            .deposit_batch(&packets)
            .await
            .map_err(context("deposit"))?;
        for r in receipts {
            say(&format!("stored {}", r.id));
        }
        k += 1;
    }
    t.close().await.map_err(context("close transport"))?;
    say("closed");
    Ok(())
}

/// A child process the parent watches line by line.
pub(crate) struct Child {
    what: String,
    process: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    lines: mpsc::UnboundedReceiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Child {
    /// Start this test binary again as `role` on `backend` under `prefix`.
    pub(crate) fn spawn(
        backend: &DynBackend,
        prefix: &Subject,
        role: &Role,
    ) -> Result<Child, String> {
        let exe = std::env::current_exe().map_err(context("find the test binary"))?;
        let mut cmd = Command::new(&exe);
        cmd.env(BACKEND, backend.name())
            .env(PREFIX, prefix.as_str())
            .envs(backend.process_env())
            .env_remove(HOLD_AFTER)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let what = match role {
            Role::Consume {
                name,
                ack_wait,
                batch,
                hold_after,
            } => {
                cmd.env(ROLE, "consume")
                    .env(NAME, name)
                    .env(ACK_WAIT_MS, ack_wait.as_millis().to_string())
                    .env(BATCH, batch.to_string());
                if let Some(h) = hold_after {
                    cmd.env(HOLD_AFTER, h.to_string());
                }
                format!("consumer process {name}")
            }
            Role::Deposit { name, batch } => {
                cmd.env(ROLE, "deposit")
                    .env(NAME, name)
                    .env(BATCH, batch.to_string());
                format!("writer process {name}")
            }
        };
        let mut process = cmd
            .spawn()
            .map_err(|e| format!("could not start {what} ({}): {e}", exe.display()))?;
        let stdin = process.stdin.take();
        let stdout = process.stdout.take().ok_or("no stdout pipe")?;
        let stderr_pipe = process.stderr.take().ok_or("no stderr pipe")?;
        let (tx, lines) = mpsc::unbounded_channel();
        forward_lines(stdout, move |line| tx.send(line).is_ok());
        let stderr = Arc::new(Mutex::new(String::new()));
        let all = stderr.clone();
        forward_lines(stderr_pipe, move |line| {
            let mut all = all.lock().unwrap_or_else(|e| e.into_inner());
            all.push_str(&line);
            all.push('\n');
            true
        });
        Ok(Child {
            what,
            process,
            stdin,
            lines,
            stderr,
        })
    }

    /// What the child wrote on stderr so far (its last lines).
    fn stderr_tail(&self) -> String {
        let all = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        let lines: Vec<&str> = all.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    /// The next line, or `None` once the child closed its stdout (it
    /// ended); fails if none came within `within`.
    pub(crate) async fn next_line(&mut self, within: Duration) -> Result<Option<String>, String> {
        match tokio::time::timeout(within, self.lines.recv()).await {
            Ok(line) => Ok(line),
            Err(_) => Err(format!(
                "{} said nothing for {within:?}; its stderr: {}",
                self.what,
                self.stderr_tail()
            )),
        }
    }

    /// The next line, failing if the child ended.
    pub(crate) async fn expect_line(&mut self, within: Duration) -> Result<String, String> {
        match self.next_line(within).await? {
            Some(line) => Ok(line),
            None => Err(self.ended()),
        }
    }

    /// Why the child is gone.
    pub(crate) fn ended(&mut self) -> String {
        let status = self
            .process
            .try_wait()
            .ok()
            .flatten()
            .map_or("still running".to_string(), |s| s.to_string());
        format!(
            "{} ended unexpectedly ({status}); its stderr: {}",
            self.what,
            self.stderr_tail()
        )
    }

    /// SIGKILL it and reap it.
    pub(crate) fn kill(&mut self) -> Result<(), String> {
        self.process
            .kill()
            .map_err(|e| format!("could not kill {}: {e}", self.what))?;
        self.process
            .wait()
            .map_err(|e| format!("could not reap {}: {e}", self.what))?;
        Ok(())
    }

    /// Ask for a clean stop (close its stdin) and wait, at most `within`,
    /// for it to exit successfully; the lines it wrote until then go to
    /// `on_line`.
    pub(crate) async fn finish(
        mut self,
        within: Duration,
        mut on_line: impl FnMut(&str),
    ) -> Result<(), String> {
        drop(self.stdin.take());
        let deadline = Instant::now() + within;
        while let Some(line) = self
            .next_line(deadline.saturating_duration_since(Instant::now()))
            .await?
        {
            on_line(&line);
        }
        // Stdout is closed: the process is exiting.
        loop {
            match self.process.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    return Err(format!(
                        "{} exited with {status}; its stderr: {}",
                        self.what,
                        self.stderr_tail()
                    ))
                }
                Ok(None) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                Ok(None) => {
                    return Err(format!(
                        "{} did not exit within {within:?} of being asked to stop",
                        self.what
                    ))
                }
                Err(e) => return Err(format!("waiting for {}: {e}", self.what)),
            }
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.process.try_wait().ok().flatten().is_none() {
            let _ = self.process.kill();
            let _ = self.process.wait();
        }
    }
}
