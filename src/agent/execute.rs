//! Running one round's server tool calls: each checked (known tool, arguments a JSON
//! object), the valid ones run concurrently with a timeout and an output cap. Every
//! call yields a tool result — a failure is data for the model, never an `Err`.
//! Which calls may run at all (the confirmation gate) is decided before, by the loop.

use std::time::Duration;

use serde_json::{Map, Value};
use tokio::time::Instant;

use super::events::{Event, ToolOutcome};
use super::queue;
use crate::openai::{Message, ToolCall};
use crate::telemetry::Metrics;
use crate::text::shorten;
use crate::tools::ToolSet;

/// Arguments in `ToolStarted` events are cut to this many characters.
const EVENT_ARGUMENTS_CHARS: usize = 120;
/// What a `SourceRead` event shows of the page read.
const SOURCE_EXCERPT_CHARS: usize = 500;

/// Who is asking, for the audit log.
pub struct Audit<'a> {
    pub user: &'a str,
    pub model: &'a str,
    /// Leave arguments out of logs (`x-lariat-off-record: true`).
    pub off_record: bool,
}

pub struct Executor<'a> {
    pub tools: &'a ToolSet,
    /// Names of the client's own tools, for the "unknown tool" hint.
    pub client_tools: &'a [&'a str],
    pub max_output_bytes: usize,
    pub metrics: &'a Metrics,
    pub audit: Audit<'a>,
    pub events: &'a queue::Sender,
}

impl Executor<'_> {
    /// Tool results for `calls`, in the same order.
    pub async fn run(&self, calls: &[&ToolCall]) -> Vec<Message> {
        let runs = calls.iter().map(|call| async move {
            let (id, name) = (call.id.clone(), call.function.name.clone());
            let arguments = crate::text::arguments(&call.function.arguments, EVENT_ARGUMENTS_CHARS);
            let _ = self.events.send(Event::ToolStarted { id: id.clone(), name: name.clone(), arguments }).await;
            let started = Instant::now();
            let (outcome, content) = self.run_one(call).await;
            let duration = started.elapsed();
            let _ = self.events.send(Event::ToolFinished { id, name, outcome, duration }).await;
            Message::tool_result(&call.id, content)
        });
        futures::future::join_all(runs).await
    }

    async fn run_one(&self, call: &ToolCall) -> (ToolOutcome, String) {
        let name = call.function.name.as_str();
        let Some(tool) = self.tools.get(name) else {
            // The model made the name up: it is no label value (metrics stay bounded).
            self.metrics.record_tool_call("unknown", ToolOutcome::UnknownTool, Duration::ZERO);
            return (ToolOutcome::UnknownTool, self.unknown_tool(name));
        };
        let args = match parse_arguments(&call.function.arguments) {
            Ok(args) => args,
            Err(problem) => {
                self.metrics.record_tool_call(name, ToolOutcome::BadArguments, Duration::ZERO);
                tracing::info!(target: "lariat::audit", tool = name, user = self.audit.user, model = self.audit.model, outcome = "bad_arguments", "tool call refused");
                let message = format!(
                    "Error: the arguments for `{name}` {problem}. Call the tool again with a JSON object matching its parameters schema."
                );
                return (ToolOutcome::BadArguments, message);
            }
        };
        let started = Instant::now();
        let logged_args = if self.audit.off_record {
            String::from("[off the record]")
        } else {
            Value::Object(args.clone()).to_string()
        };
        let url = tool.url_read(&args);
        let result = tokio::time::timeout(tool.timeout, tool.call(args)).await;
        let elapsed = started.elapsed();
        let (outcome, content) = match result {
            Ok(Ok(text)) => {
                if let Some(url) = url {
                    let excerpt = crate::text::shorten(&text, SOURCE_EXCERPT_CHARS);
                    let _ = self.events.send(Event::SourceRead { name: name.to_owned(), url, excerpt }).await;
                }
                (ToolOutcome::Ok, cap(text, self.max_output_bytes))
            }
            Ok(Err(e)) => (ToolOutcome::Error, format!("Tool error: {e}")),
            Err(_) => (ToolOutcome::Timeout, format!("Tool error: `{name}` timed out after {:?}", tool.timeout)),
        };
        self.metrics.record_tool_call(name, outcome, elapsed);
        tracing::info!(
            target: "lariat::audit",
            tool = name,
            user = self.audit.user,
            model = self.audit.model,
            arguments = %logged_args,
            outcome = outcome.as_str(),
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            result_bytes = content.len(),
            "tool call"
        );
        (outcome, content)
    }

    fn unknown_tool(&self, name: &str) -> String {
        let mut available: Vec<&str> = self.tools.names().collect();
        available.extend(self.client_tools.iter().copied());
        format!("Error: there is no tool named `{name}`. Available tools: {}.", available.join(", "))
    }
}

/// The model's argument string as a JSON object, or what is wrong with it.
fn parse_arguments(raw: &str) -> Result<Map<String, Value>, String> {
    if raw.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(format!("must be a JSON object, but got {}: {}", kind(&other), shorten(raw, 200))),
        Err(e) => Err(format!("are not valid JSON ({e}): {}", shorten(raw, 200))),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Cuts `text` to at most `max` bytes (on a character boundary), saying how much went.
fn cap(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let omitted = text.len() - end;
    text.truncate(end);
    text.push_str(&format!("\n…[output truncated: {omitted} bytes omitted]"));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_arguments() {
        assert_eq!(parse_arguments("").unwrap(), Map::new());
        assert_eq!(parse_arguments(" {\"a\": 1} ").unwrap()["a"], 1);
        let cases = [
            ("[1,2]", "must be a JSON object, but got an array"),
            ("\"x\"", "got a string"),
            ("{\"a\":", "are not valid JSON"),
        ];
        for (raw, want) in cases {
            let problem = parse_arguments(raw).unwrap_err();
            assert!(problem.contains(want), "{raw}: {problem}");
        }
    }

    #[test]
    fn caps_output_on_a_char_boundary() {
        assert_eq!(cap("short".into(), 10), "short");
        let capped = cap("ééééé".into(), 5);
        assert!(capped.starts_with("éé\n…[output truncated: 6 bytes omitted]"), "{capped}");
    }
}
