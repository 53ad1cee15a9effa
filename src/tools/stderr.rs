//! A stdio MCP server's stderr: always drained (a full pipe would block the server,
//! a closed one kill it with SIGPIPE), read as bytes so invalid UTF-8 cannot stop the
//! reader, and its last lines kept for `/ready`, `lariat check` and the reason the
//! server is unavailable.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::watch;

use crate::redact::Redactor;

/// Lines kept per process.
pub const TAIL_LINES: usize = 20;
/// Longer lines are cut (the rest of the line is still read, and dropped).
const MAX_LINE_BYTES: usize = 2048;
/// How long a failure waits for the last lines of a process that just exited.
const SETTLE: Duration = Duration::from_millis(300);

/// The last lines one process wrote to stderr, cleaned of configured secrets.
#[derive(Debug)]
pub struct Tail {
    lines: Mutex<VecDeque<String>>,
    /// Becomes true when the process closed its stderr (it exited).
    closed: watch::Sender<bool>,
}

impl Tail {
    pub fn new() -> Arc<Self> {
        Arc::new(Self { lines: Mutex::new(VecDeque::new()), closed: watch::channel(false).0 })
    }

    fn push(&self, line: String) {
        let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        if lines.len() == TAIL_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect()
    }

    /// The tail as one line for a status or a log (` | `-separated), after giving a
    /// process that is exiting a moment to finish writing.
    pub async fn summary(&self, last: usize) -> Option<String> {
        let mut closed = self.closed.subscribe();
        let _ = tokio::time::timeout(SETTLE, closed.wait_for(|c| *c)).await;
        let lines = self.lines();
        let shown = &lines[lines.len().saturating_sub(last)..];
        (!shown.is_empty()).then(|| shown.join(" | "))
    }
}

/// Reads `stderr` to its end into `tail`, logging each line at debug level.
pub async fn drain(stderr: impl AsyncRead + Unpin, tail: Arc<Tail>, server: String, redactor: Arc<Redactor>) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        line.clear();
        match read_line_capped(&mut reader, &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                let text = redactor.clean(text.trim_end().to_owned());
                tracing::debug!(target: "lariat::mcp", server = %server, "{text}");
                tail.push(text);
            }
        }
    }
    tail.closed.send_replace(true);
}

/// One line (without its end) into `line`, at most `MAX_LINE_BYTES` of it kept;
/// returns the bytes consumed (0 at the end of the stream).
async fn read_line_capped<R: AsyncBufReadExt + Unpin>(reader: &mut R, line: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut consumed = 0;
    loop {
        let buf = reader.fill_buf().await?;
        if buf.is_empty() {
            return Ok(consumed);
        }
        let (piece, done) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (&buf[..i], i + 1),
            None => (buf, buf.len()),
        };
        let room = MAX_LINE_BYTES.saturating_sub(line.len());
        line.extend_from_slice(&piece[..piece.len().min(room)]);
        let ended = done > piece.len();
        reader.consume(done);
        consumed += done;
        if ended {
            return Ok(consumed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_the_last_lines_of_any_bytes() {
        let mut input = Vec::new();
        for i in 0..30 {
            input.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        input.extend_from_slice(b"bad \xff\xfe utf8 token-abcdefgh-123\n");
        input.extend_from_slice(&vec![b'x'; 10_000]);
        input.extend_from_slice(b"\nlast line without end");
        let tail = Tail::new();
        let redactor = Arc::new(Redactor::new(["token-abcdefgh-123"]));
        drain(&input[..], tail.clone(), "s".into(), redactor).await;
        let lines = tail.lines();
        assert_eq!(lines.len(), TAIL_LINES);
        assert_eq!(lines[lines.len() - 3], "bad \u{fffd}\u{fffd} utf8 [redacted]");
        assert_eq!(lines[lines.len() - 2].len(), MAX_LINE_BYTES);
        assert_eq!(lines[lines.len() - 1], "last line without end");
        assert_eq!(tail.summary(2).await.unwrap(), format!("{} | last line without end", "x".repeat(MAX_LINE_BYTES)));
    }
}
