//! The answer model: a loop model gathers with tools, a second model writes the
//! reply from the conversation and a brief. Two scripted upstreams (plus a backup).

use serde_json::{Value, json};

use crate::harness::*;
use crate::tools::{agent_config, ask};

struct Rig {
    /// The loop model (`mock/gpt-test`).
    gatherer: MockUpstream,
    /// The answer model (`strong/big`), and its backup (`backup/big`).
    writer: MockUpstream,
    backup: MockUpstream,
    tools: ToolServer,
    lariat: Lariat,
}

async fn rig(model_extra: &str, extra: &str) -> Rig {
    let (gatherer, writer, backup) =
        (MockUpstream::start().await, MockUpstream::start().await, MockUpstream::start().await);
    let tools = ToolServer::start().await;
    let model = format!("tools = [\"echo\", \"slow_a\"]\nanswer_with = \"writers\"\n{model_extra}");
    let text = format!(
        "{}\n[providers.strong]\nbase_url = \"{}\"\n\n[providers.backup]\nbase_url = \"{}\"\n\n\
         [models.writers]\nchain = [\"strong/big\", \"backup/big\"]\ntools = []\n\n{extra}",
        agent_config(&gatherer, &tools, &model),
        writer.url,
        backup.url
    );
    let lariat = Lariat::start(&text).await;
    Rig { gatherer, writer, backup, tools, lariat }
}

fn text_of(body: &Value) -> &str {
    body["choices"][0]["message"]["content"].as_str().unwrap()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn the_loop_gathers_with_two_tools_and_the_answer_model_writes() {
    let r = rig("brief_result_chars = 6\n", "").await;
    r.gatherer.push(Reply::tool_calls(&[("up_1", "echo", r#"{"text": "hi"}"#), ("up_2", "slow_a", "{}")]));
    r.gatherer.push(Reply::text("Both tools answered."));
    r.writer.push(Reply::text("Here is your answer."));
    let response = r.lariat.chat(ask("echo hi and be slow")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-lariat-upstream"), Some("strong/big"));
    assert_eq!(header(&response, "x-lariat-loop-upstream"), Some("mock/gpt-test"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(text_of(&body), "Here is your answer.");
    assert_eq!(body["usage"]["total_tokens"], 45, "two loop calls and the answer, summed");
    assert_eq!(body["lariat"]["rounds"], 1);
    assert_eq!(r.tools.hits("/echo").len(), 1);

    let asked = r.writer.received();
    assert_eq!(asked.len(), 1, "exactly one answer-model request");
    let request = &asked[0].body;
    assert!(request.get("tools").is_none() && request.get("tool_choice").is_none(), "{request}");
    assert_eq!(request["model"], "big");
    let messages = request["messages"].as_array().unwrap();
    let last = messages.last().unwrap()["content"].as_str().unwrap();
    assert!(last.starts_with("echo hi and be slow\n\n"), "the client's words come first: {last}");
    assert!(last.contains("### echo({\"text\":\"hi\"})\n{\"echo…\n"), "the result capped at 6 chars: {last}");
    assert!(last.contains("### slow_a({})\nslow d…"), "{last}");
    assert!(last.contains("Both tools answered."), "the loop model's notes: {last}");
    assert!(messages.iter().all(|m| m["role"] != "tool"), "no raw rounds");
    let gathered = &r.gatherer.received()[0].body;
    assert!(gathered["messages"][0]["content"].as_str().unwrap().contains("Do not write the final reply"));
}

#[tokio::test]
async fn a_stream_carries_only_the_answer_model_s_words() {
    let r = rig("", "").await;
    r.gatherer.push(Reply::stream_tool_calls(Some("Let me check."), &[("up_1", "echo", r#"{"text": "x"}"#)]));
    r.gatherer.push(Reply::stream_with_usage(&["Notes ", "for the writer."]));
    r.writer.push(Reply::stream_with_usage(&["The ", "reply."]));
    let mut body = ask("echo x");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let response = r
        .lariat
        .post("/v1/chat/completions", Some(ALICE))
        .header("x-lariat-progress", "status")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "x-lariat-loop-upstream"), Some("mock/gpt-test"));
    let events = json_events(&SseReader::new(response).collect().await);
    let text: String = events.iter().filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "The reply.");
    let first = events.iter().find(|e| e["choices"].as_array().is_some_and(|c| !c.is_empty())).unwrap();
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant", "the first chunk with a choice (after status lines)");
    let finish = events.iter().find(|e| e["choices"][0]["finish_reason"].is_string()).unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    assert_eq!(finish["lariat"]["upstream"], "strong/big");
    assert_eq!(events.last().unwrap()["usage"]["total_tokens"], 45);
    let statuses: Vec<&str> = events.iter().filter_map(|e| e["event"]["data"]["description"].as_str()).collect();
    assert!(statuses.contains(&"Writing the answer with writers…"), "the hand-over is visible: {statuses:?}");
    let ids: std::collections::HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1, "one id for the whole response");
}

#[tokio::test]
async fn with_tools_used_a_tool_less_answer_makes_no_answer_call() {
    let r = rig("answer_when = \"tools_used\"\n", "").await;
    r.gatherer.push(Reply::text("Hello, no tools needed."));
    let response = r.lariat.chat(ask("hi")).await;
    assert_eq!(header(&response, "x-lariat-upstream"), Some("mock/gpt-test"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(text_of(&body), "Hello, no tools needed.");
    assert!(r.writer.received().is_empty());
}

#[tokio::test]
async fn after_a_confirmation_the_answer_model_writes_the_reply() {
    let r = rig("", "[confirm]\ntools = [\"echo\"]\n").await;
    r.gatherer.push(Reply::tool_calls(&[("up_1", "echo", r#"{"text": "hi"}"#)]));
    r.gatherer.push(Reply::text("Shall I echo hi?"));
    let question: Value = r.lariat.chat(ask("echo hi")).await.json().await.unwrap();
    assert!(text_of(&question).starts_with("Shall I echo hi?"), "the loop model asks, as without an answer model");
    assert!(r.writer.received().is_empty() && r.tools.hits("/echo").is_empty());

    r.gatherer.push(Reply::text("Echoed."));
    r.writer.push(Reply::text("I echoed hi for you."));
    let reply = json!({"model": "agent", "messages": [
        {"role": "user", "content": "echo hi"},
        {"role": "assistant", "content": text_of(&question)},
        {"role": "user", "content": "yes"}
    ]});
    let response = r.lariat.chat(reply).await;
    assert_eq!(header(&response, "x-lariat-upstream"), Some("strong/big"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(text_of(&body), "I echoed hi for you.");
    assert_eq!(r.tools.hits("/echo").len(), 1);
    let brief = r.writer.last_body()["messages"].as_array().unwrap().last().unwrap()["content"].clone();
    assert!(brief.as_str().unwrap().contains("### echo("), "{brief}");
}

#[tokio::test]
async fn a_client_tool_suspension_then_the_answer_model() {
    let r = rig("", "").await;
    let client_tools =
        json!([{"type": "function", "function": {"name": "web_search", "parameters": {"type": "object"}}}]);
    r.gatherer
        .push(Reply::tool_calls(&[("up_1", "echo", r#"{"text": "a"}"#), ("up_2", "web_search", r#"{"q": "rust"}"#)]));
    let mut first = ask("search rust");
    first["tools"] = client_tools.clone();
    let handed: Value = r.lariat.chat(first).await.json().await.unwrap();
    assert_eq!(handed["choices"][0]["finish_reason"], "tool_calls");
    let call = handed["choices"][0]["message"]["tool_calls"][0].clone();
    assert_eq!(call["function"]["name"], "web_search");
    assert!(r.writer.received().is_empty(), "a suspension is not an answer");

    r.gatherer.push(Reply::text("Found the site."));
    r.writer.push(Reply::text("Rust lives at rust-lang.org."));
    let back = json!({"model": "agent", "tools": client_tools, "messages": [
        {"role": "user", "content": "search rust"},
        {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "rust-lang.org"}
    ]});
    let body: Value = r.lariat.chat(back).await.json().await.unwrap();
    assert_eq!(text_of(&body), "Rust lives at rust-lang.org.");
    let brief = r.writer.last_body()["messages"].as_array().unwrap().last().unwrap()["content"].clone();
    let brief = brief.as_str().unwrap();
    assert!(brief.contains("### web_search({\"q\":\"rust\"})\nrust-lang.org"), "the client's result: {brief}");
    assert!(brief.contains("### echo({\"text\":\"a\"})"), "the server's result: {brief}");
}

#[tokio::test]
async fn the_answer_model_falls_back_to_its_backup_or_fails_naming_it() {
    let r = rig("", "").await;
    r.gatherer.push(Reply::text("notes"));
    r.writer.push(Reply::error(500, "writer down"));
    r.backup.push(Reply::text("From the backup."));
    let response = r.lariat.chat(ask("hi")).await;
    assert_eq!(header(&response, "x-lariat-upstream"), Some("backup/big"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(text_of(&body), "From the backup.");

    r.gatherer.push(Reply::text("notes"));
    r.writer.push(Reply::error(500, "writer down"));
    r.backup.push(Reply::error(500, "backup down"));
    let error = expect_error(r.lariat.chat(ask("hi")).await, 502, "upstream_failed").await;
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("strong/big") && message.contains("backup/big"), "{message}");
}

#[tokio::test]
async fn the_official_python_sdk_gets_the_answer_model_s_reply() {
    let Some(python) = venv_program("python", &["-c", "import openai"]) else { return };
    let r = rig("", "").await;
    r.gatherer.push(Reply::tool_calls(&[("up_1", "echo", r#"{"text": "sdk"}"#)]));
    r.gatherer.push(Reply::text("notes"));
    r.writer.push(Reply::text("Written by the answer model."));
    r.gatherer.push(Reply::stream_tool_calls(None, &[("up_1", "echo", r#"{"text": "sdk"}"#)]));
    r.gatherer.push(Reply::stream(&["streamed notes"]));
    r.writer.push(Reply::stream(&["Streamed ", "by the answer model."]));
    let result = crate::clients::script_json(python, "sdk/answer_client.py", &r.lariat).await;
    assert_eq!(result["complete"], "Written by the answer model.");
    assert_eq!(result["upstream"], "strong/big");
    assert_eq!(result["stream"], "Streamed by the answer model.");
    assert_eq!(result["finish_reason"], "stop");
}
