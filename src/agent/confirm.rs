//! The confirmation gate (SPEC §4): which calls wait for a human "yes", the checkpoint
//! a paused loop is stored as, the question the client sees, and reading the human's
//! reply on the next request.
//!
//! The checkpoint is versioned JSON: it crosses the store boundary (Redis, other
//! replicas, rolling upgrades), so its format is pinned by a test.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::auth::Caller;
use crate::globs::Globs;
use crate::openai::{Message, Role, ToolCall, ToolDef};
use crate::upstream::Route;

/// Bump when the format changes incompatibly; a checkpoint of another version is
/// treated like an expired one (nothing runs, the user is told).
pub const VERSION: u32 = 1;

/// What a held call's result says while the model phrases the question.
pub const PLACEHOLDER: &str = "[Not run yet: this action waits for the user's confirmation. \
Tell the user briefly what you are about to do and ask whether to proceed. Do not claim it has been done.]";

/// A held call's result when the user said no.
pub const DENIED: &str = "Action denied by user.";

/// A held call's result when the user answered with something else.
pub const DENIED_OTHER: &str =
    "Action not performed: the user did not confirm it and replied with the message that follows instead.";

/// The configured gate: `confirm.tools`, the reply words and the TTL.
#[derive(Debug, Clone)]
pub struct Gate {
    pub tools: Globs,
    pub ttl: Duration,
    /// Normalised (see `normalise`) at construction.
    yes: Vec<String>,
    no: Vec<String>,
}

impl Gate {
    pub fn new(tools: Globs, ttl: Duration, yes_words: &[String], no_words: &[String]) -> Self {
        let norm = |words: &[String]| words.iter().map(|w| normalise(w)).filter(|w| !w.is_empty()).collect();
        Self { tools, ttl, yes: norm(yes_words), no: norm(no_words) }
    }

    /// Whether `tool` waits for a human "yes" when `caller` asks for it:
    /// `confirm.tools` minus the key's `confirm_allow`, plus its `confirm_deny`.
    pub fn holds(&self, caller: &Caller, tool: &str) -> bool {
        (self.tools.matches(tool) && !caller.confirm_allow.matches(tool)) || caller.confirm_deny.matches(tool)
    }

    /// Reads the human's reply. Only a whole reply counts as yes or no ("yes, but
    /// use the other file" is not a yes): a polite "please"/"thanks" may follow.
    pub fn verdict(&self, reply: &str) -> Verdict {
        let text = normalise(reply);
        let text = ["please", "thanks", "thank you"]
            .iter()
            .find_map(|polite| text.strip_suffix(polite).map(str::trim_end))
            .unwrap_or(&text);
        if self.yes.iter().any(|w| w == text) {
            Verdict::Approve
        } else if self.no.iter().any(|w| w == text) {
            Verdict::Deny
        } else {
            Verdict::Other
        }
    }
}

/// Lower case, punctuation as spaces (apostrophes dropped: "don't" = "dont"),
/// whitespace collapsed.
fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars().flat_map(char::to_lowercase) {
        if c == '\'' || c == '’' {
            continue;
        }
        let c = if c.is_alphanumeric() { c } else { ' ' };
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        out.push(c);
    }
    out.truncate(out.trim_end().len());
    out
}

/// What the human said to a held action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Approve,
    Deny,
    /// Neither yes nor no: the held calls are denied and the message is answered.
    Other,
}

impl Verdict {
    /// The result a held call gets when it does not run, `None` when it does.
    pub fn denial(self) -> Option<&'static str> {
        match self {
            Self::Approve => None,
            Self::Deny => Some(DENIED),
            Self::Other => Some(DENIED_OTHER),
        }
    }

    pub fn event(self) -> &'static str {
        match self {
            Self::Approve => "approved",
            Self::Deny | Self::Other => "denied",
        }
    }
}

/// A loop paused at the confirmation gate: everything needed to continue exactly
/// where it stopped, on any replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: u32,
    pub id: String,
    /// The key that made it: another key's reply never resumes it.
    pub key_id: String,
    pub user: String,
    pub model: String,
    /// Unix seconds.
    pub created_at: i64,
    pub expires_at: i64,
    /// The conversation before the paused round, as sent upstream (overlay included).
    pub messages: Vec<Message>,
    /// The round's assistant message with every tool call.
    pub assistant: Message,
    /// Results of the round's calls that ran before the pause.
    pub results: Vec<Message>,
    /// The calls waiting for the human.
    pub held: Vec<ToolCall>,
    /// Rounds used so far and where the chain walk stood.
    pub rounds: u32,
    pub route: Route,
    pub request: RequestParams,
}

/// The parts of the client's request the resumed loop keeps using.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestParams {
    pub client_tools: Vec<ToolDef>,
    pub tool_choice: Option<Value>,
    /// Every pass-through field (temperature, max_tokens, …).
    pub rest: Map<String, Value>,
}

/// The store key of a checkpoint. Not bound to the key id: another key's reply must
/// find it, to be told apart from an expired one, and leave it in place.
pub fn store_key(id: &str) -> String {
    format!("confirm:{id}")
}

/// Where a checkpoint's `Trace` lives (outliving the checkpoint itself).
pub fn trace_key(id: &str) -> String {
    format!("confirm-trace:{id}")
}

/// What remains known of a checkpoint after it is gone, so a late or replayed reply
/// is told what happened instead of a guess. Holds no arguments or messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    pub key_id: String,
    pub tools: Vec<String>,
    pub state: TraceState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceState {
    /// Waiting for the human (or silently expired).
    Open,
    Answered,
    /// A reply found it expired; counted once.
    Expired,
}

/// How long a trace outlives its checkpoint.
pub const TRACE_GRACE: Duration = Duration::from_secs(24 * 3600);

/// What the user is told when a "yes" finds no checkpoint to resume.
pub fn gone_text(state: Option<TraceState>) -> &'static str {
    match state {
        Some(TraceState::Answered) => {
            "This confirmation was already answered, so nothing was run again. \
             If you want the action performed once more, ask me again."
        }
        _ => {
            "This approval has expired (or is no longer valid), so nothing was run. \
             If you still want the action performed, ask me again and confirm when I ask."
        }
    }
}

/// 128 random bits from the thread's CSPRNG, as 32 hex digits.
pub fn new_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

const MARKER_OPEN: &str = "[lariat:confirm:";

pub fn marker(id: &str) -> String {
    format!("{MARKER_OPEN}{id}]")
}

/// The id in the last marker of `text`, if it is well formed.
pub fn find_marker(text: &str) -> Option<&str> {
    let start = text.rfind(MARKER_OPEN)? + MARKER_OPEN.len();
    let rest = &text[start..];
    let id = &rest[..rest.find(']')?];
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// A reply to a confirmation question found in a client's messages.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply<'a> {
    pub id: &'a str,
    /// The user's words (the last message).
    pub text: String,
    /// The question message the client showed.
    pub question: &'a Message,
}

/// If the last message is the user's and the assistant message before it carries a
/// marker: the checkpoint it answers and what the user said.
pub fn find_reply(messages: &[Message]) -> Option<Reply<'_>> {
    let (last, earlier) = messages.split_last()?;
    if last.role != Role::User {
        return None;
    }
    let question = earlier.iter().rev().find(|m| m.role == Role::Assistant)?;
    let id = find_marker(text_of(&question.content)?)?;
    Some(Reply { id, text: all_text(&last.content), question })
}

fn text_of(content: &Value) -> Option<&str> {
    match content {
        Value::String(s) => Some(s),
        Value::Array(parts) => parts.iter().rev().find_map(|p| p.get("text").and_then(Value::as_str)),
        _ => None,
    }
}

fn all_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => {
            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join(" ")
        }
        _ => String::new(),
    }
}

/// The structured alternative to a typed reply:
/// `"lariat": {"confirm": {"id": "...", "approve": true}}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Structured {
    pub id: String,
    pub approve: bool,
}

/// Takes lariat's own request field out of the pass-through fields (it never goes
/// upstream) and returns its `confirm` part; a malformed one is a 400.
pub fn take_structured(rest: &mut Map<String, Value>) -> Result<Option<Structured>, String> {
    let Some(lariat) = rest.remove("lariat") else { return Ok(None) };
    let Some(confirm) = lariat.get("confirm") else { return Ok(None) };
    serde_json::from_value(confirm.clone())
        .map(Some)
        .map_err(|e| format!("`lariat.confirm` must be {{\"id\": \"<id>\", \"approve\": true|false}}: {e}"))
}

/// The text a streaming or non-streaming client sees after the model's words.
pub fn footer(held: &[ToolCall], id: &str, ttl: Duration) -> String {
    let mut out = String::from("\n\n---\n**Confirmation needed** before lariat runs:\n");
    for call in held {
        out.push_str(&format!(
            "- `{}` {}\n",
            call.function.name,
            code_span(&shorten_arguments(&call.function.arguments))
        ));
    }
    out.push_str(&format!(
        "\nReply **yes** to run {} or **no** to cancel; this request expires in {}.\n{}",
        if held.len() == 1 { "it" } else { "them" },
        human_duration(ttl),
        marker(id)
    ));
    out
}

/// What the client sees when the upstream could not phrase the question.
pub fn template(held: &[ToolCall]) -> String {
    let names: Vec<String> = held.iter().map(|c| format!("`{}`", c.function.name)).collect();
    format!("I need your confirmation before I run {}.", names.join(", "))
}

/// One line of compact JSON, at most ~200 characters.
fn shorten_arguments(raw: &str) -> String {
    let compact = serde_json::from_str::<Value>(raw).map(|v| v.to_string()).unwrap_or_else(|_| raw.to_owned());
    let single: String = compact.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    match single.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &single[..i]),
        None => single,
    }
}

/// Markdown code span that survives backticks inside.
fn code_span(text: &str) -> String {
    if text.contains('`') { format!("`` {text} ``") } else { format!("`{text}`") }
}

fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..120 => format!("{s} seconds"),
        120..7200 => format!("{} minutes", s / 60),
        _ => format!("{} hours", s / 3600),
    }
}

/// The client's view: `{"id", "tools", "expires_at"}`.
pub fn summary(checkpoint: &Checkpoint) -> Value {
    let tools: Vec<&str> = checkpoint.held.iter().map(|c| c.function.name.as_str()).collect();
    serde_json::json!({"id": checkpoint.id, "tools": tools, "expires_at": checkpoint.expires_at})
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gate() -> Gate {
        let words = |w: &[&str]| w.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        Gate::new(
            Globs::new(&["fetch_url"]).unwrap(),
            Duration::from_secs(900),
            &words(&["yes", "y", "ok", "go ahead", "do it"]),
            &words(&["no", "n", "cancel", "don't"]),
        )
    }

    #[test]
    fn verdicts_ignore_case_punctuation_and_politeness() {
        let g = gate();
        for yes in ["yes", "Yes!", "  YES.  ", "y", "Go ahead!", "go   ahead", "OK, please", "yes thanks", "Do it."] {
            assert_eq!(g.verdict(yes), Verdict::Approve, "{yes:?}");
        }
        for no in ["no", "No.", "N", "cancel!", "Don't", "don’t", "no thank you"] {
            assert_eq!(g.verdict(no), Verdict::Deny, "{no:?}");
        }
        for other in ["yes, but fetch the other page", "what will it do?", "", "yesterday", "nope not that"] {
            assert_eq!(g.verdict(other), Verdict::Other, "{other:?}");
        }
    }

    #[test]
    fn markers_are_found_only_when_well_formed() {
        let id = new_id();
        assert_eq!(id.len(), 32);
        assert_ne!(id, new_id());
        let text = format!("Shall I?\n\n---\nReply yes.\n{}", marker(&id));
        assert_eq!(find_marker(&text), Some(id.as_str()));
        assert_eq!(find_marker("[lariat:confirm:xyz]"), None);
        assert_eq!(find_marker("[lariat:confirm:0123456789abcdef0123456789abcdef"), None);
        assert_eq!(find_marker("no marker"), None);
    }

    #[test]
    fn finds_the_reply_to_the_last_question() {
        let id = new_id();
        let messages: Vec<Message> = serde_json::from_value(json!([
            {"role": "user", "content": "fetch it"},
            {"role": "assistant", "content": format!("Ok? {}", marker(&id))},
            {"role": "user", "content": [{"type": "text", "text": "Yes!"}]}
        ]))
        .unwrap();
        let reply = find_reply(&messages).unwrap();
        assert_eq!((reply.id, reply.text.as_str()), (id.as_str(), "Yes!"));
        assert!(find_reply(&messages[..2]).is_none(), "the last message must be the user's");
        assert!(find_reply(&messages[..1]).is_none());
    }

    #[test]
    fn the_structured_field_leaves_the_pass_through_fields() {
        let mut rest: Map<String, Value> =
            serde_json::from_value(json!({"temperature": 0.1, "lariat": {"confirm": {"id": "abc", "approve": true}}}))
                .unwrap();
        let got = take_structured(&mut rest).unwrap();
        assert_eq!(got, Some(Structured { id: "abc".into(), approve: true }));
        assert!(!rest.contains_key("lariat"));
        let mut bad: Map<String, Value> = serde_json::from_value(json!({"lariat": {"confirm": {"id": 3}}})).unwrap();
        assert!(take_structured(&mut bad).unwrap_err().contains("lariat.confirm"));
    }

    #[test]
    fn footer_names_each_call_and_the_marker() {
        let call: ToolCall = serde_json::from_value(json!({"id": "c1", "type": "function",
            "function": {"name": "fetch_url", "arguments": format!("{{\"url\": \"https://x.test/{}\"}}", "a".repeat(400))}}))
        .unwrap();
        let text = footer(&[call], "0123456789abcdef0123456789abcdef", Duration::from_secs(900));
        assert!(text.contains("- `fetch_url` `{\"url\":\"https://x.test/aaa"), "{text}");
        assert!(text.contains("…`"), "long arguments are shortened: {text}");
        assert!(text.contains("expires in 15 minutes"));
        assert!(text.ends_with("[lariat:confirm:0123456789abcdef0123456789abcdef]"));
    }

    fn sample() -> Checkpoint {
        Checkpoint {
            version: VERSION,
            id: "0123456789abcdef0123456789abcdef".into(),
            key_id: "0a1b2c3d4e5f6071".into(),
            user: "alice".into(),
            model: "assistant".into(),
            created_at: 1_800_000_000,
            expires_at: 1_800_000_900,
            messages: serde_json::from_value(json!([{"role": "user", "content": "fetch x.test"}])).unwrap(),
            assistant: serde_json::from_value(json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "up_1", "type": "function", "function": {"name": "current_time", "arguments": "{}"}},
                {"id": "up_2", "type": "function", "function": {"name": "fetch_url", "arguments": "{\"url\":\"https://x.test\"}"}}
            ]}))
            .unwrap(),
            results: serde_json::from_value(json!([{"role": "tool", "tool_call_id": "up_1", "content": "noon"}]))
                .unwrap(),
            held: serde_json::from_value(json!([
                {"id": "up_2", "type": "function", "function": {"name": "fetch_url", "arguments": "{\"url\":\"https://x.test\"}"}}
            ]))
            .unwrap(),
            rounds: 1,
            route: Route::default(),
            request: RequestParams {
                client_tools: Vec::new(),
                tool_choice: Some(json!("auto")),
                rest: serde_json::from_value(json!({"temperature": 0.2})).unwrap(),
            },
        }
    }

    /// The serialised format is a contract with checkpoints already in stores (a
    /// rolling upgrade must not strand approvals): this test changing means a
    /// `VERSION` bump and a migration note.
    #[test]
    fn serialised_format_is_pinned() {
        let pinned = json!({
            "version": 1, "id": "0123456789abcdef0123456789abcdef", "key_id": "0a1b2c3d4e5f6071",
            "user": "alice", "model": "assistant", "created_at": 1_800_000_000, "expires_at": 1_800_000_900,
            "messages": [{"role": "user", "content": "fetch x.test"}],
            "assistant": {"role": "assistant", "content": null, "tool_calls": [
                {"id": "up_1", "type": "function", "function": {"name": "current_time", "arguments": "{}"}},
                {"id": "up_2", "type": "function", "function": {"name": "fetch_url", "arguments": "{\"url\":\"https://x.test\"}"}}
            ]},
            "results": [{"role": "tool", "content": "noon", "tool_call_id": "up_1"}],
            "held": [{"id": "up_2", "type": "function", "function": {"name": "fetch_url", "arguments": "{\"url\":\"https://x.test\"}"}}],
            "rounds": 1, "route": {"sticky": null},
            "request": {"client_tools": [], "tool_choice": "auto", "rest": {"temperature": 0.2}}
        });
        assert_eq!(serde_json::to_value(sample()).unwrap(), pinned);
        // What an older replica wrote must still read.
        assert_eq!(serde_json::from_value::<Checkpoint>(pinned).unwrap(), sample());
    }
}
