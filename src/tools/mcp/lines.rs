//! What a stdio MCP server writes, line by line, before rmcp reads it.
//!
//! rmcp drops two kinds of line lariat must act on:
//! - an answer it cannot decode (nested past serde_json's depth limit, say) is logged
//!   and skipped, so the call waiting for it would hang until its timeout: here it
//!   becomes a JSON-RPC error for the same id, and that call fails at once;
//! - its `Tool` type has no `execution` member, so it cannot tell a tool that must
//!   run as an MCP task (`execution.taskSupport = "required"`, which lariat does not
//!   do) from one it can call: here such tools are taken out of a `tools/list` result.
//!
//! Every other line passes as it came.

use std::borrow::Cow;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use rmcp::model::ServerJsonRpcMessage;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, ReadBuf};

/// A line longer than this is passed through unexamined (rmcp refuses lines over its
/// own 16 MiB limit anyway), so the filter never holds more than one such line.
const MAX_LINE: usize = 16 * 1024 * 1024;

/// Passes `inner`'s bytes on, each complete line through [`filter`].
pub struct Filtered<R> {
    inner: R,
    server: String,
    /// The line read so far, not yet ended by a newline.
    partial: Vec<u8>,
    /// Filtered bytes not yet handed to the reader.
    ready: Vec<u8>,
    at: usize,
    /// The current line outgrew `MAX_LINE`: its rest goes out unexamined.
    passing: bool,
}

impl<R> Filtered<R> {
    pub fn new(inner: R, server: &str) -> Self {
        Self { inner, server: server.to_owned(), partial: Vec::new(), ready: Vec::new(), at: 0, passing: false }
    }

    /// Files the bytes just read: whole lines filtered, the rest kept for later.
    fn take_in(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let newline = bytes.iter().position(|b| *b == b'\n');
            let end = newline.map_or(bytes.len(), |i| i + 1);
            let (piece, rest) = bytes.split_at(end);
            bytes = rest;
            if self.passing {
                self.ready.extend_from_slice(piece);
                self.passing = newline.is_none();
                continue;
            }
            self.partial.extend_from_slice(piece);
            if newline.is_some() {
                let line = std::mem::take(&mut self.partial);
                self.ready.extend_from_slice(&filter(&self.server, &line));
                self.partial = line;
                self.partial.clear();
            } else if self.partial.len() > MAX_LINE {
                self.ready.append(&mut self.partial);
                self.passing = true;
            }
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Filtered<R> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.at < this.ready.len() {
                let n = out.remaining().min(this.ready.len() - this.at);
                out.put_slice(&this.ready[this.at..this.at + n]);
                this.at += n;
                if this.at == this.ready.len() {
                    this.ready.clear();
                    this.at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let mut buf = [0u8; 8192];
            let mut read = ReadBuf::new(&mut buf);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                // End of output: an unfinished last line goes out as it is (rmcp
                // discards it), then the end.
                if this.partial.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                this.ready.append(&mut this.partial);
                continue;
            }
            this.take_in(read.filled());
        }
    }
}

/// Just enough of a JSON-RPC message to answer it: serde_json skips the other
/// members without recursing, so this decodes where the whole message cannot.
#[derive(Deserialize)]
struct Envelope {
    id: Option<Value>,
    method: Option<serde::de::IgnoredAny>,
}

/// One line (with its newline) as rmcp should see it.
pub fn filter<'a>(server: &str, line: &'a [u8]) -> Cow<'a, [u8]> {
    let body = line.strip_suffix(b"\n").unwrap_or(line);
    let body = body.strip_suffix(b"\r").unwrap_or(body);
    // Some servers (.NET's) start their output with a BOM, which rmcp skips too.
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Cow::Borrowed(line);
    }
    let error = match serde_json::from_slice::<ServerJsonRpcMessage>(body) {
        Ok(_) if memchr::memmem::find(body, b"\"taskSupport\"").is_some() => {
            return without_task_tools(server, body).map_or(Cow::Borrowed(line), Cow::Owned);
        }
        Ok(_) => return Cow::Borrowed(line),
        Err(e) => e,
    };
    // Invalid UTF-8 in a string: the lossy reading usually decodes, and a result
    // with a replacement character beats no result.
    if std::str::from_utf8(body).is_err() {
        let lossy = String::from_utf8_lossy(body);
        if serde_json::from_str::<ServerJsonRpcMessage>(&lossy).is_ok() {
            return Cow::Owned(format!("{lossy}\n").into_bytes());
        }
    }
    match serde_json::from_slice::<Envelope>(body) {
        // An answer to one of lariat's requests: that request fails, now.
        Ok(Envelope { id: Some(id), method: None }) if id.is_string() || id.is_number() => {
            tracing::warn!(server, error = %error, "an MCP server's answer cannot be decoded; failing that call");
            let message = format!("lariat could not decode the MCP server's answer ({error})");
            let answer = json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32603, "message": message}});
            let mut bytes = answer.to_string().into_bytes();
            bytes.push(b'\n');
            Cow::Owned(bytes)
        }
        // Anything else has no call waiting on it: rmcp handles it as it does.
        _ => Cow::Borrowed(line),
    }
}

/// A `tools/list` result without the tools that require task support, re-encoded;
/// `None` when there is nothing to take out.
fn without_task_tools(server: &str, body: &[u8]) -> Option<Vec<u8>> {
    let mut message: Value = serde_json::from_slice(body).ok()?;
    if message.get("method").is_some() {
        return None;
    }
    let tools = message.get_mut("result")?.get_mut("tools")?.as_array_mut()?;
    let before = tools.len();
    tools.retain(|tool| {
        let required = tool.pointer("/execution/taskSupport").and_then(Value::as_str) == Some("required");
        if required {
            let name = tool.get("name").and_then(Value::as_str).unwrap_or("?");
            tracing::info!(
                server,
                tool = name,
                "not offering an MCP tool that requires task support (lariat runs none)"
            );
        }
        !required
    });
    if tools.len() == before {
        return None;
    }
    let mut bytes = serde_json::to_vec(&message).ok()?;
    bytes.push(b'\n');
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    #[test]
    fn tools_that_require_task_support_are_taken_out_of_a_listing() {
        let line = br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[
            {"name":"plain","inputSchema":{"type":"object"}},
            {"name":"optional","inputSchema":{"type":"object"},"execution":{"taskSupport":"optional"}},
            {"name":"task_only","inputSchema":{"type":"object"},"execution":{"taskSupport":"required"}}]}}"#
            .iter()
            .copied()
            .filter(|b| *b != b'\n')
            .chain([b'\n'])
            .collect::<Vec<u8>>();
        let out: Value = serde_json::from_slice(&filter("s", &line)).unwrap();
        let names: Vec<&str> =
            out["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["plain", "optional"]);
    }

    #[test]
    fn a_leading_bom_does_not_hide_a_line_from_the_filter() {
        let line = b"\xEF\xBB\xBF{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\":\"t\",\"inputSchema\":{},\"execution\":{\"taskSupport\":\"required\"}}]}}\n";
        let out: Value = serde_json::from_slice(&filter("s", line)).unwrap();
        assert_eq!(out["result"]["tools"], serde_json::json!([]));
    }

    #[test]
    fn ordinary_lines_pass_untouched() {
        let lines: [&[u8]; 4] = [
            b"{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"taskSupport\"}]}}\n",
            b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":1,\"progress\":1}}\n",
            b"not json at all\n",
            b"\n",
        ];
        for line in lines {
            assert!(matches!(filter("s", line), Cow::Borrowed(_)), "{}", text(line));
        }
    }

    #[test]
    fn an_undecodable_answer_becomes_an_error_for_its_id() {
        let deep =
            format!("{{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{{\"x\":{}{}}}}}\n", "[".repeat(5000), "]".repeat(5000));
        let out: Value = serde_json::from_slice(&filter("s", deep.as_bytes())).unwrap();
        assert_eq!(out["id"], 7);
        assert_eq!(out["error"]["code"], -32603);
        assert!(out["error"]["message"].as_str().unwrap().contains("could not decode"), "{out}");
    }

    #[test]
    fn invalid_utf8_is_read_lossily() {
        let line = b"{\"jsonrpc\":\"2.0\",\"id\":\"a\",\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"bad \xff byte\"}]}}\n";
        let out: Value = serde_json::from_slice(&filter("s", line)).unwrap();
        assert_eq!(out["result"]["content"][0]["text"], "bad \u{fffd} byte");
    }

    #[tokio::test]
    async fn lines_split_across_reads_are_filtered_whole() {
        let deep =
            format!("{{\"jsonrpc\":\"2.0\",\"id\":9,\"result\":{{\"x\":{}{}}}}}\n", "[".repeat(3000), "]".repeat(3000));
        let ok = "{\"jsonrpc\":\"2.0\",\"id\":10,\"result\":{}}\n";
        let input = format!("{ok}{deep}{ok}unfinished");
        let (mut write, read) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for chunk in input.as_bytes().chunks(100) {
                write.write_all(chunk).await.unwrap();
            }
        });
        let mut out = String::new();
        Filtered::new(read, "s").read_to_string(&mut out).await.unwrap();
        writer.await.unwrap();
        let lines: Vec<&str> = out.split('\n').collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert_eq!(format!("{}\n", lines[0]), ok);
        assert!(lines[1].contains("\"error\"") && lines[1].contains("\"id\":9"), "{}", lines[1]);
        assert_eq!(format!("{}\n", lines[2]), ok);
        assert_eq!(lines[3], "unfinished");
    }
}
