//! Before the first round: the tools of this request, the system message with the
//! model's overlay, and where the loop starts — fresh, from a round suspended on
//! client tools, or from a checkpoint the user just answered.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::Value;

use super::engine::{Engine, Progress, Request, Step};
use super::pause::Opening;
use super::queue;
use super::round::Mode;
use super::{Agent, Error, Turn, confirm};
use crate::compact::Compactor;
use crate::config::VirtualModel;
use crate::openai::{ChatRequest, Message, Role, ToolDef};
use crate::tools::ToolSet;

impl Agent {
    /// Builds the loop for `turn`; the request's parts move into it (nothing is
    /// copied). Returns the first step and the receiving end of its events.
    pub(super) async fn prepare(self: &Arc<Self>, turn: Turn) -> Result<(Engine, Step, queue::Receiver), Error> {
        let Turn { caller, model, mut request, off_record } = turn;
        let structured = confirm::take_structured(&mut request.rest)
            .map_err(|message| Error::bad_request(message, "lariat.confirm"))?;
        let tools = if server_tools_disabled(request.tool_choice.as_ref()) || is_background_task(&request) {
            Arc::new(ToolSet::default())
        } else {
            self.tools.for_request(&model.name, model.tools.as_ref(), caller.access)
        };
        let (events, received) = Engine::queue();
        let mut engine = Engine {
            agent: self.clone(),
            off_record,
            messages: std::mem::take(&mut request.messages),
            compactor: Compactor::new(self.settings.compaction.policy.clone()),
            // An answer model needs the loop's view of every round, tools or not.
            mode: if tools.is_empty() && model.answer.is_none() { Mode::Relay } else { Mode::Loop },
            request: Request {
                client_names: client_tools(request.tools.as_deref(), &tools)?,
                client_defs: request.tools.take().unwrap_or_default(),
                tool_choice: request.tool_choice.take(),
                rest: std::mem::take(&mut request.rest),
                stream_options: request.stream_options.take(),
                stream: request.stream,
            },
            tools,
            progress: Progress { limit: model.max_rounds, ..Progress::default() },
            events,
            caller,
            model,
        };
        let mut note = None;
        let first = match self.reopen(&engine.caller, &engine.model.name, structured, &engine.messages).await? {
            Some(Opening::Step(Step::Resume(resume))) => {
                // The checkpoint is the truth about the conversation so far (the client
                // never saw the server's tool calls) and about the request's parameters.
                let checkpoint = &resume.checkpoint;
                let request = &mut engine.request;
                engine.messages.clone_from(&checkpoint.messages);
                request.client_names = client_tools(Some(&checkpoint.request.client_tools), &engine.tools)?;
                request.client_defs.clone_from(&checkpoint.request.client_tools);
                request.tool_choice.clone_from(&checkpoint.request.tool_choice);
                request.rest.clone_from(&checkpoint.request.rest);
                (engine.progress.rounds, engine.progress.route) = (checkpoint.rounds, checkpoint.route);
                engine.mode = Mode::Loop;
                return Ok((engine, Step::Resume(resume), received));
            }
            Some(Opening::Step(step)) => step,
            Some(Opening::Note(text)) => {
                note = Some(text);
                Step::Call
            }
            None => {
                if let Some((rounds, route)) = self.restore(&engine.caller.key_id, &mut engine.messages).await? {
                    (engine.progress.rounds, engine.progress.route) = (rounds, route);
                }
                Step::Call
            }
        };
        overlay(&mut engine.messages, &engine.model, &engine.tools);
        if let Some(note) = note {
            match engine.messages.first_mut().filter(|m| matches!(m.role, Role::System | Role::Developer)) {
                Some(system) => system.content.append_paragraph(&note),
                None => engine.messages.insert(0, Message::new(Role::System, note)),
            }
        }
        Ok((engine, first, received))
    }
}

/// Tells the model it has tools, in the same words every time.
pub const TOOLS_LINE: &str = "You have access to tools. Use them when they help: for current information, \
to look things up, or to act on the user's behalf. Answer naturally once you have what you need.";

/// The client's own tools, checked against the server tools of the request.
fn client_tools(defs: Option<&[ToolDef]>, server: &ToolSet) -> Result<HashSet<String>, Error> {
    let mut names = HashSet::new();
    for def in defs.unwrap_or_default() {
        let name = &def.function.name;
        if server.contains(name) {
            return Err(Error::bad_request(
                format!("the client tool `{name}` has the same name as a server tool of this model; rename it"),
                "tools",
            ));
        }
        if !names.insert(name.clone()) {
            return Err(Error::bad_request(format!("the tool `{name}` is defined twice"), "tools"));
        }
    }
    Ok(names)
}

/// `tool_choice: "none"` turns the server tools off for the request.
fn server_tools_disabled(tool_choice: Option<&Value>) -> bool {
    tool_choice.and_then(Value::as_str) == Some("none")
}

/// A chat UI's own background request — Open WebUI's titles, tags and follow-up
/// suggestions: not streamed, no tools, the last user message opening with
/// `### Task:`. It gets no server tools, so it never runs (or asks about) one.
fn is_background_task(request: &ChatRequest) -> bool {
    !request.stream
        && request.tools.as_ref().is_none_or(Vec::is_empty)
        && request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .is_some_and(|m| m.content.text().trim_start().starts_with("### Task:"))
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
fn overlay(messages: &mut Vec<Message>, model: &VirtualModel, tools: &ToolSet) {
    let mut parts: Vec<String> = Vec::new();
    if let Some(prompt) = model.system_prompt.as_deref().filter(|p| !p.trim().is_empty()) {
        parts.push(prompt.to_owned());
    }
    if !tools.is_empty() {
        parts.push(TOOLS_LINE.to_owned());
    }
    if let Some(answer) = &model.answer {
        parts.push(answer.gather_prompt.clone());
    }
    if model.inject_datetime {
        let now = crate::clock::local_now();
        parts.push(format!("Current date and time: {}.", now.strftime("%A %Y-%m-%d %H:%M %Z")));
    }
    if parts.is_empty() {
        return;
    }
    let addition = parts.join("\n\n");
    match messages.iter_mut().find(|m| matches!(m.role, Role::System | Role::Developer)) {
        Some(system) => system.content.append_paragraph(&addition),
        None => messages.insert(0, Message::new(Role::System, addition)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    fn model(system_prompt: Option<&str>) -> VirtualModel {
        VirtualModel {
            name: "m".into(),
            description: None,
            chain: Vec::new(),
            system_prompt: system_prompt.map(str::to_owned),
            tools: None,
            max_rounds: 4,
            inject_datetime: false,
            answer: None,
            progress: crate::config::Progress::Off,
        }
    }

    fn some_tools() -> Arc<ToolSet> {
        let (tool, _) = crate::tools::testing::tool("t", Duration::ZERO, Duration::ZERO, Ok(""));
        crate::tools::Registry::of(vec![tool]).for_request("m", None, crate::config::Access::Admin)
    }

    fn messages(v: Value) -> Vec<Message> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn overlay_appends_to_the_system_message_or_adds_one() {
        let mut with_system =
            messages(json!([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]));
        overlay(&mut with_system, &model(Some("You are lariat.")), &some_tools());
        assert_eq!(with_system[0].content, format!("Be brief.\n\nYou are lariat.\n\n{TOOLS_LINE}"));
        assert_eq!(with_system.len(), 2);

        let mut without = messages(json!([{"role": "user", "content": "hi"}]));
        overlay(&mut without, &model(Some("You are lariat.")), &ToolSet::default());
        assert_eq!(without[0].role, Role::System);
        assert_eq!(without[0].content, "You are lariat.");

        let mut untouched = messages(json!([{"role": "user", "content": "hi"}]));
        overlay(&mut untouched, &model(None), &ToolSet::default());
        assert_eq!(untouched.len(), 1);

        let mut parts = messages(json!([{"role": "developer", "content": [{"type": "text", "text": "rules"}]}]));
        overlay(&mut parts, &model(Some("overlay")), &ToolSet::default());
        assert_eq!(serde_json::to_value(&parts[0].content).unwrap()[1], json!({"type": "text", "text": "overlay"}));
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
