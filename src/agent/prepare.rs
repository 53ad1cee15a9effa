//! Before the first round (SPEC §2 steps 1–2): the tools of this request, and the
//! system message with the model's overlay.

use std::collections::HashSet;

use serde_json::{Map, Value};

use crate::config::VirtualModel;
use crate::error::ApiError;
use crate::openai::{Message, Role, ToolDef};
use crate::tools::ToolSet;

/// Tells the model it has tools, in the same words every time.
pub const TOOLS_LINE: &str = "You have access to tools. Use them when they help: for current information, \
to look things up, or to act on the user's behalf. Answer naturally once you have what you need.";

/// The client's own tools, checked against the server tools of the request.
pub fn client_tools(defs: Option<&[ToolDef]>, server: &ToolSet) -> Result<HashSet<String>, ApiError> {
    let mut names = HashSet::new();
    for def in defs.unwrap_or_default() {
        let name = &def.function.name;
        if server.contains(name) {
            return Err(ApiError::bad_request(
                format!("the client tool `{name}` has the same name as a server tool of this model; rename it"),
                Some("tools"),
            ));
        }
        if !names.insert(name.clone()) {
            return Err(ApiError::bad_request(format!("the tool `{name}` is defined twice"), Some("tools")));
        }
    }
    Ok(names)
}

/// `tool_choice: "none"` turns the server tools off for the request.
pub fn server_tools_disabled(tool_choice: Option<&Value>) -> bool {
    tool_choice.and_then(Value::as_str) == Some("none")
}

/// Whether `tool_choice` forces a call (`"required"` or a named function): after one
/// round it must relax to `"auto"`, or the model could never answer.
pub fn forces_a_call(tool_choice: Option<&Value>) -> bool {
    match tool_choice {
        Some(Value::String(s)) => s == "required",
        Some(Value::Object(_)) => true,
        _ => false,
    }
}

/// Appends the model's overlay (system prompt, tools line, date) to the first
/// system/developer message, or adds a system message at the start.
pub fn overlay(messages: &mut Vec<Message>, model: &VirtualModel, has_server_tools: bool) {
    let mut parts: Vec<String> = Vec::new();
    if let Some(prompt) = model.system_prompt.as_deref().filter(|p| !p.trim().is_empty()) {
        parts.push(prompt.to_owned());
    }
    if has_server_tools {
        parts.push(TOOLS_LINE.to_owned());
    }
    if model.inject_datetime {
        let now = jiff::Zoned::now();
        parts.push(format!("Current date and time: {}.", now.strftime("%A %Y-%m-%d %H:%M %Z")));
    }
    if parts.is_empty() {
        return;
    }
    let addition = parts.join("\n\n");
    match messages.iter_mut().find(|m| matches!(m.role, Role::System | Role::Developer)) {
        Some(system) => match &mut system.content {
            Value::String(text) => {
                text.push_str("\n\n");
                text.push_str(&addition);
            }
            Value::Array(parts) => parts.push(serde_json::json!({"type": "text", "text": addition})),
            other => *other = Value::String(addition),
        },
        None => messages.insert(
            0,
            Message {
                role: Role::System,
                content: Value::String(addition),
                tool_calls: None,
                tool_call_id: None,
                rest: Map::new(),
            },
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn model(system_prompt: Option<&str>) -> VirtualModel {
        VirtualModel {
            name: "m".into(),
            description: None,
            chain: Vec::new(),
            system_prompt: system_prompt.map(str::to_owned),
            tools: None,
            max_rounds: 4,
            inject_datetime: false,
            answer_with: None,
        }
    }

    fn messages(v: Value) -> Vec<Message> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn overlay_appends_to_the_system_message_or_adds_one() {
        let mut with_system =
            messages(json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]));
        overlay(&mut with_system, &model(Some("You are lariat.")), true);
        assert_eq!(with_system[0].content, json!(format!("Be brief.\n\nYou are lariat.\n\n{TOOLS_LINE}")));
        assert_eq!(with_system.len(), 2);

        let mut without = messages(json!([{"role": "user", "content": "hi"}]));
        overlay(&mut without, &model(Some("You are lariat.")), false);
        assert_eq!(without[0].role, Role::System);
        assert_eq!(without[0].content, json!("You are lariat."));

        let mut untouched = messages(json!([{"role": "user", "content": "hi"}]));
        overlay(&mut untouched, &model(None), false);
        assert_eq!(untouched.len(), 1);

        let mut parts = messages(json!([{"role": "developer", "content": [{"type": "text", "text": "rules"}]}]));
        overlay(&mut parts, &model(Some("overlay")), false);
        assert_eq!(parts[0].content[1], json!({"type": "text", "text": "overlay"}));
    }

    #[test]
    fn tool_choice_rules() {
        assert!(server_tools_disabled(Some(&json!("none"))));
        assert!(!server_tools_disabled(Some(&json!("auto"))));
        assert!(forces_a_call(Some(&json!("required"))));
        assert!(forces_a_call(Some(&json!({"type": "function", "function": {"name": "f"}}))));
        assert!(!forces_a_call(Some(&json!("auto"))) && !forces_a_call(None));
    }
}
