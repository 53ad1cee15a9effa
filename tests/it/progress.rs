//! Live progress in streams: status lines, reasoning or content, chosen by the model,
//! the key or the request; never in a non-streamed answer, never in the conversation.

use serde_json::{Value, json};

use crate::harness::*;
use crate::tools::{agent_config, ask};

const ERIN: &str = "sk-erin-0123456789";

async fn setup(model_extra: &str) -> (MockUpstream, ToolServer, Lariat) {
    let mock = MockUpstream::start().await;
    let tools = ToolServer::start().await;
    let text = format!(
        "{}\n[[keys]]\nkey = \"{ERIN}\"\nuser = \"erin\"\nprogress = \"content\"\n",
        agent_config(&mock, &tools, model_extra)
    );
    let lariat = Lariat::start(&text).await;
    (mock, tools, lariat)
}

fn script(mock: &MockUpstream) {
    mock.push(Reply::stream_tool_calls(None, &[("up_1", "echo", r#"{"text": "hi"}"#)]));
    mock.push(Reply::stream(&["All ", "done."]));
}

async fn stream(lariat: &Lariat, key: &str, progress: Option<&str>) -> Vec<Value> {
    let mut body = ask("echo hi");
    body["stream"] = json!(true);
    let mut request = lariat.post("/v1/chat/completions", Some(key)).json(&body);
    if let Some(progress) = progress {
        request = request.header("x-lariat-progress", progress);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    json_events(&SseReader::new(response).collect().await)
}

fn content(events: &[Value]) -> String {
    events.iter().filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).collect()
}

#[tokio::test]
async fn a_model_with_status_progress_streams_open_webui_status_lines() {
    let (mock, _tools, lariat) = setup("progress = \"status\"").await;
    script(&mock);
    let events = stream(&lariat, ALICE, None).await;
    let statuses: Vec<&Value> = events.iter().filter(|e| e.get("event").is_some()).collect();
    let lines: Vec<(&str, bool)> = statuses
        .iter()
        .map(|e| (e["event"]["data"]["description"].as_str().unwrap(), e["event"]["data"]["done"].as_bool().unwrap()))
        .collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    // Open WebUI shows a status line as plain text: markdown quoting would show.
    assert!(lines.iter().all(|(line, _)| !line.contains('`')), "{lines:?}");
    assert!(lines[0].0.starts_with("Running echo {\"text\":\"hi\"}") && !lines[0].1, "{lines:?}");
    assert!(lines[1].0.starts_with("echo done in "), "{lines:?}");
    assert_eq!(lines[2], ("Thinking (round 2)…", false));
    assert_eq!(lines[3], ("Thinking (round 2)…", true), "the last line is closed at the end");
    assert!(statuses.iter().all(|e| e["choices"] == json!([]) && e["object"] == "chat.completion.chunk"));
    assert_eq!(content(&events), "All done.", "progress does not change the answer");
    let second = &mock.received()[1].body;
    assert!(!second.to_string().contains("Running"), "progress never reaches the model: {second}");
}

#[tokio::test]
async fn the_request_or_the_key_chooses_how_progress_shows() {
    let (mock, _tools, lariat) = setup("progress = \"status\"").await;
    script(&mock);
    let events = stream(&lariat, ALICE, Some("reasoning")).await;
    let thinking: String =
        events.iter().filter_map(|e| e["choices"][0]["delta"]["reasoning_content"].as_str()).collect();
    assert!(thinking.starts_with("Running `echo`") && thinking.contains("`echo` done in"), "{thinking}");
    assert!(events.iter().all(|e| e.get("event").is_none()));
    assert_eq!(content(&events), "All done.");

    script(&mock);
    let events = stream(&lariat, ERIN, None).await;
    let text = content(&events);
    assert!(text.starts_with("_Running `echo`") && text.ends_with("All done."), "the key's own setting: {text}");

    script(&mock);
    let events = stream(&lariat, ERIN, Some("off")).await;
    assert_eq!(content(&events), "All done.");

    let bad = lariat.post("/v1/chat/completions", Some(ALICE)).header("x-lariat-progress", "loud").json(&ask("hi"));
    expect_error(bad.send().await.unwrap(), 400, "invalid_request").await;
}

#[tokio::test]
async fn a_non_streamed_answer_carries_no_progress() {
    let (mock, _tools, lariat) = setup("progress = \"content\"").await;
    mock.push(Reply::tool_calls(&[("up_1", "echo", r#"{"text": "hi"}"#)]));
    mock.push(Reply::text("All done."));
    let body: Value = lariat.chat(ask("echo hi")).await.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "All done.");
}

/// A page `fetch_url` read is listed as an Open WebUI `source` in a stream that shows
/// status lines; a stream showing progress another way, a non-streamed answer and
/// the model never get it.
#[tokio::test]
async fn a_page_fetch_url_read_is_a_source_in_status_streams_only() {
    let mock = MockUpstream::start().await;
    let tools = ToolServer::start().await;
    let config = agent_config(&mock, &tools, "progress = \"status\"")
        + "\n[tools.builtin.fetch_url]\nallow_private = [\"127.0.0.0/8\"]\n";
    let lariat = Lariat::start(&config).await;
    let url = format!("{}/echo", tools.url);
    let arguments = json!({"url": url}).to_string();
    let script = |mock: &MockUpstream| {
        mock.push(Reply::stream_tool_calls(None, &[("f", "fetch_url", &arguments)]));
        mock.push(Reply::stream(&["Read it."]));
    };
    let is_source = |e: &&Value| e["event"]["type"] == "source";

    script(&mock);
    let events = stream(&lariat, ALICE, None).await;
    let sources: Vec<&Value> = events.iter().filter(is_source).collect();
    assert_eq!(sources.len(), 1, "{events:#?}");
    let data = &sources[0]["event"]["data"];
    assert_eq!(data["source"], json!({"name": url, "url": url}));
    assert_eq!(data["metadata"][0]["source"], url.as_str());
    assert!(data["document"][0].as_str().unwrap().starts_with("{\"echo\""), "{data}");
    assert_eq!(sources[0]["choices"], json!([]));
    assert_eq!(content(&events), "Read it.");
    let next_round = mock.received()[1].body.to_string();
    assert!(!next_round.contains("\"source\""), "the model sees no source event: {next_round}");

    script(&mock);
    let events = stream(&lariat, ALICE, Some("reasoning")).await;
    assert!(!events.iter().any(|e| e.to_string().contains("\"source\"")), "{events:#?}");

    mock.push(Reply::tool_calls(&[("f", "fetch_url", &arguments)]));
    mock.push(Reply::text("Read it."));
    let body: Value = lariat.chat(ask("read")).await.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "Read it.");
    assert!(!body.to_string().contains("\"source\""), "{body}");
}
