//! Output of child processes, captured line by line on reader threads.

use std::io::{BufRead, BufReader, Read};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// Lines captured from one or more output streams of a child process.
///
/// Reader threads append; tests wait on the condition variable, never on a sleep.
#[derive(Default)]
pub(crate) struct Lines {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    lines: Vec<String>,
    open_readers: usize,
}

/// Why a wait for a line ended without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitError {
    /// Every captured stream reached end of file (the process is gone).
    Closed,
    /// The deadline passed.
    TimedOut,
}

impl Lines {
    pub(crate) fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Reads `source` to its end on a new thread, appending each line (without its line break and
    /// without ANSI colour codes).
    pub(crate) fn capture(self: &Arc<Self>, source: impl Read + Send + 'static) {
        self.lock().open_readers += 1;
        let lines = Arc::clone(self);
        std::thread::spawn(move || {
            let mut reader = BufReader::new(source);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&buf);
                        let line = strip_ansi(text.trim_end_matches(['\n', '\r']));
                        lines.lock().lines.push(line);
                        lines.changed.notify_all();
                    }
                }
            }
            lines.lock().open_readers -= 1;
            lines.changed.notify_all();
        });
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the output we want to print.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn snapshot(&self) -> Vec<String> {
        self.lock().lines.clone()
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().lines.len()
    }

    /// Waits for the first line at index `start` or later that matches `matches`, and returns its
    /// index and text.
    pub(crate) fn wait_from(
        &self,
        start: usize,
        deadline: Instant,
        mut matches: impl FnMut(&str) -> bool,
    ) -> Result<(usize, String), WaitError> {
        let mut state = self.lock();
        let mut next = start;
        loop {
            while next < state.lines.len() {
                if matches(&state.lines[next]) {
                    return Ok((next, state.lines[next].clone()));
                }
                next += 1;
            }
            if state.open_readers == 0 {
                return Err(WaitError::Closed);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(WaitError::TimedOut);
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Waits until every captured stream has reached end of file; false if the deadline passed.
    pub(crate) fn wait_closed(&self, deadline: Instant) -> bool {
        let mut state = self.lock();
        while state.open_readers > 0 {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    /// All lines, indented, for failure messages.
    pub(crate) fn render(&self) -> String {
        render_lines(&self.snapshot())
    }
}

pub(crate) fn render_lines(lines: &[String]) -> String {
    if lines.is_empty() {
        return "    (nothing)\n".to_owned();
    }
    lines.iter().map(|l| format!("    {l}\n")).collect()
}

/// Removes ANSI escape sequences (colours), which log formatters may add even on pipes.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.next() == Some('[') {
            // A CSI sequence ends with a byte in 0x40..=0x7e.
            for c in chars.by_ref() {
                if ('\u{40}'..='\u{7e}').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_colour_codes() {
        assert_eq!(
            strip_ansi(
                "\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m listening ssh on 127.0.0.1:1"
            ),
            "2026  INFO listening ssh on 127.0.0.1:1"
        );
    }
}
