//! What a finished child process left behind, and bounded waiting for it.

use std::fmt;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use crate::lines::render_lines;

/// Exit status and every line a finished process wrote.
#[derive(Debug, Clone)]
pub struct ExitOutput {
    pub status: ExitStatus,
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
    /// What else helps explain a failure (the command, the server's log); shown by Display.
    pub context: String,
}

impl ExitOutput {
    /// The exit code; `None` if a signal ended the process.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Stdout and stderr joined, for "mentions X somewhere" checks.
    pub fn all_text(&self) -> String {
        let mut text = self.stdout.join("\n");
        text.push('\n');
        text.push_str(&self.stderr.join("\n"));
        text
    }
}

impl fmt::Display for ExitOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "  status: {}\n  stdout:\n{}  stderr:\n{}{}",
            self.status,
            render_lines(&self.stdout),
            render_lines(&self.stderr),
            self.context
        )
    }
}

/// Polls `child` until it exits or `deadline` passes. Polling (rather than a blocking `wait`)
/// keeps the bound; the short sleep only paces the poll.
pub(crate) fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
