//! What a failed command prints, and its exit code.

use std::error::Error as _;
use std::fmt;

use qis::ErrorKind;

/// Exit code of a runtime failure (server unreachable, timeout, backend error).
pub const EXIT_RUNTIME: u8 = 1;
/// Exit code of a usage error or invalid user input.
pub const EXIT_USAGE: u8 = 2;

/// A command's failure: one line for stderr and an exit code.
#[derive(Debug)]
pub struct CliError {
    /// The process exit code.
    pub code: u8,
    /// One line, without the `qis: error: ` lead; empty for a quiet stop
    /// (stdout closed by the reader).
    pub message: String,
}

impl CliError {
    /// Invalid input from the user: exit 2.
    pub fn usage(message: impl Into<String>) -> Self {
        CliError {
            code: EXIT_USAGE,
            message: one_line(message.into()),
        }
    }

    /// Something failed at run time: exit 1.
    pub fn runtime(message: impl Into<String>) -> Self {
        CliError {
            code: EXIT_RUNTIME,
            message: one_line(message.into()),
        }
    }

    /// The reader of stdout went away (`qis watch | head`): stop, exit 0, say nothing.
    pub fn stdout_closed() -> Self {
        CliError {
            code: 0,
            message: String::new(),
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Whether an error of this kind comes from what the user typed.
pub fn is_usage_kind(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::InvalidPacket
            | ErrorKind::PacketTooLarge
            | ErrorKind::InvalidSubject
            | ErrorKind::InvalidInput
            | ErrorKind::Unsupported
    )
}

/// A QIS error as one readable line: the transport (unless it is a core
/// check), the message, then each distinct cause.
pub fn describe(e: &qis::Error) -> String {
    let mut s = if e.transport() == "core" {
        e.message().to_string()
    } else {
        format!("{}: {}", e.transport(), e.message())
    };
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !text.is_empty() && !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cause = c.source();
    }
    one_line(s)
}

impl From<qis::Error> for CliError {
    fn from(e: qis::Error) -> Self {
        let code = if is_usage_kind(e.kind()) {
            EXIT_USAGE
        } else {
            EXIT_RUNTIME
        };
        CliError {
            code,
            message: describe(&e),
        }
    }
}

/// Collapse newlines and runs of whitespace so a message stays on one line.
pub fn one_line(s: String) -> String {
    if !s.contains(['\n', '\r', '\t']) {
        return s;
    }
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_exit_codes() {
        let e = qis::Error::core(
            ErrorKind::InvalidPacket,
            "confidence 1.5 is outside 0.0..=1.0",
        );
        let c = CliError::from(e);
        assert_eq!(c.code, EXIT_USAGE);
        assert_eq!(c.message, "confidence 1.5 is outside 0.0..=1.0");
        let e = qis::Error::new(ErrorKind::Unavailable, "nats", "cannot reach 127.0.0.1:1")
            .with_source(std::io::Error::other("connection refused\nsecond line"));
        let c = CliError::from(e);
        assert_eq!(c.code, EXIT_RUNTIME);
        assert_eq!(
            c.message,
            "nats: cannot reach 127.0.0.1:1: connection refused second line"
        );
    }
}
