//! SIGINT and SIGTERM for the long-running commands (`serve`, `bridge`).
//!
//! The handlers are installed when [`Signals::listen`] is called, before the
//! command says it is running: a signal sent as soon as that line is out
//! stops the command gracefully instead of killing the process.

use crate::error::CliError;

/// Installed SIGINT and SIGTERM handlers (Ctrl-C elsewhere).
pub struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    /// Install the handlers now.
    pub fn listen() -> Result<Signals, CliError> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let failed =
                |e: std::io::Error| CliError::runtime(format!("cannot listen for signals: {e}"));
            Ok(Signals {
                interrupt: signal(SignalKind::interrupt()).map_err(failed)?,
                terminate: signal(SignalKind::terminate()).map_err(failed)?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// The next signal: `"SIGINT"` or `"SIGTERM"`.
    pub async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => "SIGINT",
                _ = self.terminate.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}
