//! What the client sees after the model's question: the held calls, how to answer,
//! the expiry and the marker.

use std::time::Duration;

use super::reply::marker;
use crate::openai::ToolCall;

/// What a held call's result says while the model phrases the question.
pub const PLACEHOLDER: &str = "[Not run yet: this action waits for the user's confirmation. \
Tell the user briefly what you are about to do and ask whether to proceed. Do not claim it has been done.]";

/// The text a streaming or non-streaming client sees after the model's words.
pub fn footer(held: &[ToolCall], id: &str, ttl: Duration) -> String {
    let mut out = String::from("\n\n---\n**Confirmation needed** before lariat runs:\n");
    for call in held {
        out.push_str(&format!(
            "- `{}` {}\n",
            call.function.name,
            code_span(&crate::text::arguments(&call.function.arguments, 200))
        ));
    }
    out.push_str(&format!(
        "\nReply **yes** to run {} or **no** to cancel; this request expires in {}.\n\n{}",
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn footer_names_each_call_and_the_marker() {
        let call: ToolCall = serde_json::from_value(json!({"id": "c1", "type": "function",
            "function": {"name": "fetch_url", "arguments": format!("{{\"url\": \"https://x.test/{}\"}}", "a".repeat(400))}}))
        .unwrap();
        let text = footer(&[call], "0123456789abcdef0123456789abcdef", Duration::from_secs(900));
        assert!(text.contains("- `fetch_url` `{\"url\":\"https://x.test/aaa"), "{text}");
        assert!(text.contains("…`"), "long arguments are shortened: {text}");
        assert!(text.contains("expires in 15 minutes"));
        assert!(
            text.ends_with("expires in 15 minutes.\n\n[//]: # (lariat:confirm:0123456789abcdef0123456789abcdef)"),
            "{text}"
        );
    }
}
