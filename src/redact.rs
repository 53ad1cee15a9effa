//! The one way configured secrets are kept out of what leaves lariat: upstream
//! errors, mid-stream error events, relayed bodies, tool results, MCP stderr and the
//! logs all pass through a `Redactor` built from every secret in the config.

use std::borrow::Cow;
use std::io::Write;
use std::sync::OnceLock;

use aho_corasick::{AhoCorasick, MatchKind};

/// What a secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Shorter values are not treated as secrets: blanking `true` or `info` (an MCP
/// server's `env` may hold such values) would mangle ordinary text, and no real
/// credential is that short.
pub const MIN_SECRET_LEN: usize = 8;

/// Blanks out every configured secret. One automaton finds all of them in one pass,
/// so the cost does not grow with the number of secrets.
#[derive(Clone, Default)]
pub struct Redactor {
    matcher: Option<AhoCorasick>,
    count: usize,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets themselves.
        f.debug_struct("Redactor").field("secrets", &self.count).finish()
    }
}

impl Redactor {
    /// A redactor for `secrets`; values shorter than `MIN_SECRET_LEN` are ignored.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let mut patterns: Vec<&str> = secrets.into_iter().filter(|s| s.len() >= MIN_SECRET_LEN).collect();
        patterns.sort_unstable();
        patterns.dedup();
        let count = patterns.len();
        // Leftmost-longest, so a secret that contains another is blanked whole.
        let matcher = if patterns.is_empty() {
            None
        } else {
            AhoCorasick::builder().match_kind(MatchKind::LeftmostLongest).build(&patterns).ok()
        };
        Self { matcher, count }
    }

    /// How many distinct secrets are watched for.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// `text` with every secret replaced by `[redacted]`; borrowed when there is none.
    pub fn redact<'t>(&self, text: &'t str) -> Cow<'t, str> {
        match &self.matcher {
            Some(m) if m.is_match(text) => Cow::Owned(m.replace_all(text, &vec![REDACTED; self.count])),
            _ => Cow::Borrowed(text),
        }
    }

    /// [`Redactor::redact`] for raw bytes (a body about to be parsed or relayed).
    /// `[redacted]` holds no JSON metacharacter, so valid JSON stays valid.
    pub fn redact_bytes<'t>(&self, bytes: &'t [u8]) -> Cow<'t, [u8]> {
        match &self.matcher {
            Some(m) if m.is_match(bytes) => Cow::Owned(m.replace_all_bytes(bytes, &vec![REDACTED; self.count])),
            _ => Cow::Borrowed(bytes),
        }
    }

    /// Like [`Redactor::redact`], into an owned string.
    pub fn clean(&self, text: String) -> String {
        match self.redact(&text) {
            Cow::Borrowed(_) => text,
            Cow::Owned(cleaned) => cleaned,
        }
    }
}

/// The redactor every log line passes through, once the config is loaded.
static LOGS: OnceLock<Redactor> = OnceLock::new();

/// Blanks `redactor`'s secrets out of every log line from now on. A process logs
/// for one config, so the first call wins.
pub fn redact_logs(redactor: &Redactor) {
    let _ = LOGS.set(redactor.clone());
}

/// Where log lines go: stderr, each line redacted whole. The log writer rather than
/// each call site, because dependencies log too: rmcp, at debug level, logs the
/// messages it exchanges with MCP servers (arguments, results, their environment's
/// echoes), and no call site of lariat's sees those.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        LogLine(Vec::new())
    }
}

/// One event's output, written to stderr redacted when the event is done (a secret
/// split across two writes is still found).
pub struct LogLine(Vec<u8>);

impl Write for LogLine {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        let line = match LOGS.get() {
            Some(redactor) => redactor.redact_bytes(&self.0),
            None => Cow::Borrowed(self.0.as_slice()),
        };
        // Nowhere to report a failed log write.
        let _ = std::io::stderr().lock().write_all(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blanks_every_secret_and_only_secrets() {
        let r = Redactor::new([
            "sk-provider-1234",
            "sk-provider-1234-longer",
            "mcp-token-5678",
            "short",
            "sk-provider-1234",
        ]);
        assert_eq!(r.len(), 3, "short values and duplicates are not counted");
        assert_eq!(r.redact("key sk-provider-1234-longer and mcp-token-5678."), "key [redacted] and [redacted].");
        assert_eq!(r.redact("key sk-provider-1234!"), "key [redacted]!");
        assert!(matches!(r.redact("nothing short here"), Cow::Borrowed(_)));
        let json = br#"{"error":{"message":"bad key sk-provider-1234"}}"#;
        let cleaned = r.redact_bytes(json);
        let value: serde_json::Value = serde_json::from_slice(&cleaned).unwrap();
        assert_eq!(value["error"]["message"], "bad key [redacted]");
    }

    #[test]
    fn an_empty_redactor_changes_nothing() {
        let r = Redactor::new([]);
        assert!(r.is_empty());
        assert_eq!(r.clean("sk-anything-at-all".into()), "sk-anything-at-all");
        assert!(!format!("{r:?}").contains("sk-"));
    }
}
