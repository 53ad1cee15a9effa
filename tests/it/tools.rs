//! The tool loop: server tools run by lariat, client tools handed
//! back and resumed, limits, access, streaming across rounds.

use serde_json::{Value, json};

use crate::harness::*;

pub const CAROL: &str = "sk-carol-0123456789";

/// Model `agent` (with `model_extra` lines) on the mock, HTTP tools on `tools`, key
/// ALICE (admin) and CAROL (user).
pub fn agent_config(mock: &MockUpstream, tools: &ToolServer, model_extra: &str) -> String {
    let t = &tools.url;
    format!(
        r#"
[upstream]
retries = 0

[providers.mock]
base_url = "{url}"

[models.agent]
chain = ["mock/gpt-test"]
{model_extra}

[tools.http.echo]
description = "Echo the arguments"
url = "{t}/echo"
parameters = {{ type = "object", properties = {{ text = {{ type = "string" }} }} }}

[tools.http.slow_a]
description = "Slow A"
url = "{t}/slow"

[tools.http.slow_b]
description = "Slow B"
url = "{t}/slow"

[tools.http.fail]
description = "Always fails"
url = "{t}/fail"

[tools.http.stuck]
description = "Never answers"
url = "{t}/hang"
timeout_s = 0.3

[tools.http.wait]
description = "Waits for a long time"
url = "{t}/hang"
timeout_s = 60

[tools.http.secret_ops]
description = "Admins only"
url = "{t}/echo"
min_access = "admin"

[[keys]]
key = "{ALICE}"
user = "alice"
access = "admin"

[[keys]]
key = "{CAROL}"
user = "carol"
access = "user"
"#,
        url = mock.url
    )
}

pub async fn setup(model_extra: &str) -> (MockUpstream, ToolServer, Lariat) {
    let mock = MockUpstream::start().await;
    let tools = ToolServer::start().await;
    let lariat = Lariat::start(&agent_config(&mock, &tools, model_extra)).await;
    (mock, tools, lariat)
}

pub fn ask(text: &str) -> Value {
    json!({"model": "agent", "messages": [{"role": "user", "content": text}]})
}

fn tool_names(body: &Value) -> Vec<String> {
    body["tools"]
        .as_array()
        .map_or_else(Vec::new, |t| t.iter().map(|d| d["function"]["name"].as_str().unwrap().to_owned()).collect())
}

/// The tool messages of an upstream request, as (tool_call_id, content).
pub fn tool_results(body: &Value) -> Vec<(String, String)> {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| (m["tool_call_id"].as_str().unwrap().to_owned(), m["content"].as_str().unwrap().to_owned()))
        .collect()
}

#[tokio::test]
async fn a_server_tool_call_runs_and_the_model_answers() {
    let (mock, tools, lariat) = setup("").await;
    mock.push(Reply::tool_calls(&[("call_1", "echo", r#"{"text": "ping"}"#)]));
    mock.push(Reply::text("The echo said ping."));
    let answer: Value = lariat.chat(ask("echo ping")).await.json().await.unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "The echo said ping.");
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    assert_eq!(answer["lariat"], json!({"rounds": 1, "round_limit": false}));
    assert_eq!(tools.hits("/echo")[0].body, json!({"text": "ping"}));
    let second = &mock.received()[1].body;
    let messages = second["messages"].as_array().unwrap();
    let assistant = &messages[messages.len() - 2];
    assert_eq!(assistant["tool_calls"][0]["id"], "call_1");
    assert_eq!(tool_results(second), [("call_1".to_owned(), r#"{"echo":{"text":"ping"}}"#.to_owned())]);
    // Usage sums both rounds.
    assert_eq!(answer["usage"]["total_tokens"], 30);
}

#[tokio::test]
async fn tool_calls_count_whatever_the_finish_reason_says() {
    let (mock, tools, lariat) = setup("").await;
    // Some servers (Ollama, some vLLM templates) report "stop" with tool calls.
    let call = json!({"id": "x", "type": "function", "function": {"name": "echo", "arguments": "{}"}});
    mock.push(Reply::completion(json!({"role": "assistant", "content": "", "tool_calls": [call]}), "stop"));
    mock.push(Reply::text("ran it"));
    let answer: Value = lariat.chat(ask("echo")).await.json().await.unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "ran it");
    assert_eq!(tools.hits("/echo").len(), 1);
}

#[tokio::test]
async fn calls_of_one_round_run_concurrently() {
    let (mock, tools, lariat) = setup("").await;
    mock.push(Reply::tool_calls(&[("a", "slow_a", "{}"), ("b", "slow_b", "{}")]));
    mock.push(Reply::text("both done"));
    let response = lariat.chat(ask("two slow things")).await;
    assert_eq!(response.status(), 200);
    let hits = tools.hits("/slow");
    assert_eq!(hits.len(), 2);
    let (a, b) = (&hits[0], &hits[1]);
    // Each started before the other finished: the calls overlapped.
    assert!(a.started < b.finished.unwrap() && b.started < a.finished.unwrap(), "{hits:?}");
    assert_eq!(tool_results(&mock.received()[1].body).len(), 2);
}

#[tokio::test]
async fn bad_arguments_and_unknown_tools_are_explained_to_the_model() {
    let (mock, tools, lariat) = setup("").await;
    mock.push(Reply::tool_calls(&[
        ("a", "echo", r#"{"text": "unclosed"#),
        ("b", "echo", r#"["not", "an", "object"]"#),
        ("c", "teleport", "{}"),
    ]));
    mock.push(Reply::text("sorry"));
    assert_eq!(lariat.chat(ask("try things")).await.status(), 200);
    assert!(tools.hits("/echo").is_empty(), "no tool ran with bad arguments");
    let results = tool_results(&mock.received()[1].body);
    assert!(results[0].1.contains("are not valid JSON"), "{results:?}");
    assert!(results[1].1.contains("must be a JSON object, but got an array"), "{results:?}");
    assert!(results[2].1.contains("no tool named `teleport`") && results[2].1.contains("echo"), "{results:?}");
}

#[tokio::test]
async fn failing_and_timing_out_tools_become_tool_errors() {
    let (mock, _tools, lariat) = setup("").await;
    mock.push(Reply::tool_calls(&[("a", "fail", "{}"), ("b", "stuck", "{}")]));
    mock.push(Reply::text("handled"));
    let answer: Value = lariat.chat(ask("break")).await.json().await.unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "handled");
    let results = tool_results(&mock.received()[1].body);
    assert_eq!(results[0].1, "Tool error: HTTP 500 Internal Server Error: database exploded");
    assert!(results[1].1.starts_with("Tool error: `stuck` timed out after"), "{results:?}");
    let metrics = lariat.get("/metrics", None).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"lariat_tool_calls_total{tool="fail",outcome="error"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"lariat_tool_calls_total{tool="stuck",outcome="timeout"} 1"#), "{metrics}");
}

#[tokio::test]
async fn the_round_limit_ends_with_a_call_without_tools() {
    let (mock, _tools, lariat) = setup("max_rounds = 2").await;
    mock.push(Reply::tool_calls(&[("a", "echo", "{}")]));
    mock.push(Reply::tool_calls(&[("b", "echo", "{}")]));
    mock.push(Reply::text("Here is what I found."));
    let answer: Value = lariat.chat(ask("loop forever")).await.json().await.unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "Here is what I found.");
    assert_eq!(answer["lariat"], json!({"rounds": 2, "round_limit": true}));
    let received = mock.received();
    assert_eq!(received.len(), 3);
    assert!(received[0].body.get("tool_choice").is_none());
    assert_eq!(received[2].body["tool_choice"], "none");
    assert_eq!(tool_results(&received[2].body).len(), 2);
}

#[tokio::test]
async fn tools_are_filtered_by_allow_list_and_access_level() {
    let (mock, _tools, lariat) = setup("").await;
    mock.always(Reply::text("ok"));
    lariat.chat(ask("hi")).await;
    let admin = tool_names(&mock.last_body());
    assert!(admin.contains(&"secret_ops".to_owned()) && admin.contains(&"current_time".to_owned()), "{admin:?}");
    lariat.post("/v1/chat/completions", Some(CAROL)).json(&ask("hi")).send().await.unwrap();
    let user = tool_names(&mock.last_body());
    assert!(!user.contains(&"secret_ops".to_owned()), "a user key never sees an admin tool: {user:?}");
    assert_eq!(user.len(), admin.len() - 1);

    let (mock, _tools, lariat) = setup(r#"tools = ["current_*", "slow_?", "secret_ops"]"#).await;
    mock.always(Reply::text("ok"));
    lariat.post("/v1/chat/completions", Some(CAROL)).json(&ask("hi")).send().await.unwrap();
    assert_eq!(tool_names(&mock.last_body()), ["current_time", "slow_a", "slow_b"], "the allow-list cannot elevate");

    let (mock, _tools, lariat) = setup("tools = []").await;
    mock.always(Reply::text("ok"));
    lariat.chat(ask("hi")).await;
    assert!(mock.last_body().get("tools").is_none());
}

#[tokio::test]
async fn the_system_overlay_and_tools_line_are_added() {
    let (mock, _tools, lariat) = setup(r#"system_prompt = "You are the lariat test agent.""#).await;
    mock.always(Reply::text("ok"));
    let body = json!({"model": "agent", "messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"}]});
    lariat.chat(body).await;
    let system = mock.last_body()["messages"][0]["content"].as_str().unwrap().to_owned();
    assert!(system.starts_with("Be terse.\n\nYou are the lariat test agent.\n\nYou have access to tools."), "{system}");

    lariat.chat(ask("hi")).await;
    let first = &mock.last_body()["messages"][0];
    assert_eq!(first["role"], "system");
    assert!(first["content"].as_str().unwrap().starts_with("You are the lariat test agent."));
}

#[tokio::test]
async fn tool_choice_none_disables_server_tools() {
    let (mock, _tools, lariat) = setup("").await;
    mock.always(Reply::text("ok"));
    let mut body = ask("hi");
    body["tool_choice"] = json!("none");
    lariat.chat(body).await;
    let received = mock.last_body();
    assert!(received.get("tools").is_none(), "{received}");
    assert_eq!(received["tool_choice"], "none");
    assert!(!received["messages"][0]["content"].as_str().unwrap_or("").contains("You have access to tools"));
}

#[tokio::test]
async fn a_forced_tool_choice_relaxes_after_one_round() {
    let (mock, _tools, lariat) = setup("").await;
    mock.push(Reply::tool_calls(&[("a", "echo", "{}")]));
    mock.push(Reply::text("done"));
    let mut body = ask("echo");
    body["tool_choice"] = json!({"type": "function", "function": {"name": "echo"}});
    lariat.chat(body).await;
    let received = mock.received();
    assert_eq!(received[0].body["tool_choice"]["function"]["name"], "echo");
    assert_eq!(received[1].body["tool_choice"], "auto");
}

#[tokio::test]
async fn a_client_tool_colliding_with_a_server_tool_is_rejected() {
    let (mock, _tools, lariat) = setup("").await;
    let mut body = ask("hi");
    body["tools"] = json!([{"type": "function", "function": {"name": "echo", "parameters": {"type": "object"}}}]);
    let error = expect_error(lariat.chat(body).await, 400, "invalid_request").await;
    assert_eq!(error["param"], "tools");
    assert!(error["message"].as_str().unwrap().contains("`echo`"));
    assert!(mock.received().is_empty());
}

/// Open WebUI sends its own tools with every chat; a round can mix them with ours.
fn webui_request(stream: bool) -> Value {
    let mut tools: Vec<Value> = (0..35)
        .map(|i| json!({"type": "function", "function": {"name": format!("owui_tool_{i}"), "description": "x", "parameters": {"type": "object", "properties": {}}}}))
        .collect();
    tools.push(json!({"type": "function", "function": {"name": "web_search", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}));
    json!({"model": "agent", "stream": stream, "messages": [{"role": "user", "content": "search and echo"}], "tools": tools})
}

#[tokio::test]
async fn a_round_with_client_tools_suspends_and_resumes() {
    let (mock, tools, lariat) = setup("").await;
    mock.push(Reply::tool_calls(&[
        ("up_srv", "echo", r#"{"text": "ours"}"#),
        ("up_cli", "web_search", r#"{"q": "rust"}"#),
    ]));
    let first: Value = lariat.chat(webui_request(false)).await.json().await.unwrap();
    // Every tool reached the upstream: 36 of the client's plus ours.
    let offered = tool_names(&mock.received()[0].body);
    assert!(offered.contains(&"owui_tool_34".to_owned()) && offered.contains(&"echo".to_owned()) && offered.len() > 36);
    // The client sees only its own call, under lariat's id; ours already ran.
    let message = &first["choices"][0]["message"];
    assert_eq!(first["choices"][0]["finish_reason"], "tool_calls");
    let calls = message["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0]["function"]["name"], "web_search");
    let client_id = calls[0]["id"].as_str().unwrap().to_owned();
    assert_ne!(client_id, "up_cli");
    assert_eq!(tools.hits("/echo").len(), 1);

    // The client runs its tool and comes back with the history as it sees it.
    mock.push(Reply::text("Rust is a language; the echo said ours."));
    let mut again = webui_request(false);
    let history = again["messages"].as_array_mut().unwrap();
    history.push(message.clone());
    history.push(json!({"role": "tool", "tool_call_id": client_id, "content": "search results"}));
    let second: Value = lariat.chat(again).await.json().await.unwrap();
    assert_eq!(second["choices"][0]["message"]["content"], "Rust is a language; the echo said ours.");
    // The upstream got the whole round back: both calls, both results.
    let resumed = &mock.received()[1].body;
    let messages = resumed["messages"].as_array().unwrap();
    let assistant = messages.iter().find(|m| m["role"] == "assistant").unwrap();
    assert_eq!(assistant["tool_calls"].as_array().unwrap().len(), 2);
    let results = tool_results(resumed);
    assert_eq!(results.len(), 2);
    assert_eq!(results[0].0, "up_srv");
    assert_eq!(results[1], (client_id.clone(), "search results".to_owned()));
    assert_eq!(tools.hits("/echo").len(), 1, "the server call is not run again");

    // A replay of the same continuation finds nothing stored and goes on with what
    // the client sent.
    mock.push(Reply::text("again"));
    let mut replay = webui_request(false);
    let history = replay["messages"].as_array_mut().unwrap();
    history.push(message.clone());
    history.push(json!({"role": "tool", "tool_call_id": client_id, "content": "search results"}));
    lariat.chat(replay).await;
    assert_eq!(tool_results(&mock.received()[2].body).len(), 1);
}

#[tokio::test]
async fn a_suspended_round_is_bound_to_its_key() {
    let (mock, _tools, lariat) = setup("").await;
    mock.push(Reply::tool_calls(&[("s", "echo", "{}"), ("c", "web_search", "{}")]));
    let first: Value = lariat.chat(webui_request(false)).await.json().await.unwrap();
    let message = first["choices"][0]["message"].clone();
    let client_id = message["tool_calls"][0]["id"].as_str().unwrap().to_owned();
    mock.always(Reply::text("fine"));
    let mut again = webui_request(false);
    let history = again["messages"].as_array_mut().unwrap();
    history.push(message);
    history.push(json!({"role": "tool", "tool_call_id": client_id, "content": "r"}));
    // Carol continues alice's conversation: the stored round is not hers.
    lariat.post("/v1/chat/completions", Some(CAROL)).json(&again).send().await.unwrap();
    assert_eq!(tool_results(&mock.last_body()).len(), 1);
    // Alice still can.
    lariat.chat(again).await;
    assert_eq!(tool_results(&mock.last_body()).len(), 2);
}

#[tokio::test]
async fn a_streamed_loop_shows_content_of_every_round_and_hides_server_calls() {
    let (mock, tools, lariat) = setup("").await;
    mock.push(Reply::stream_tool_calls(Some("Let me check."), &[("up_1", "echo", r#"{"text": "x"}"#)]));
    mock.push(Reply::stream_with_usage(&["It ", "worked."]));
    let mut body = ask("check");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let events = SseReader::new(lariat.chat(body).await).collect().await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks = json_events(&events);
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "Let me check.\n\nIt worked.");
    assert!(chunks.iter().all(|c| c["choices"][0]["delta"].get("tool_calls").is_none()), "server calls stay hidden");
    assert_eq!(chunks.iter().filter(|c| c["choices"][0]["delta"].get("role").is_some()).count(), 1);
    let id = &chunks[0]["id"];
    assert!(chunks.iter().all(|c| &c["id"] == id && c["model"] == "agent"), "one id across rounds");
    let finishes: Vec<&Value> =
        chunks.iter().filter_map(|c| c["choices"][0].get("finish_reason")).filter(|f| !f.is_null()).collect();
    assert_eq!(finishes, [&json!("stop")]);
    let usage = chunks.last().unwrap();
    assert_eq!(usage["usage"]["total_tokens"], 30, "usage of both rounds");
    assert_eq!(tools.hits("/echo").len(), 1);
    // Upstreams are asked for usage so it can be summed.
    assert_eq!(mock.received()[0].body["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn a_streamed_round_forwards_client_calls_and_resumes() {
    let (mock, tools, lariat) = setup("").await;
    mock.push(Reply::stream_tool_calls(
        None,
        &[("up_s", "echo", r#"{"text": "a"}"#), ("up_c", "web_search", r#"{"q": "b"}"#)],
    ));
    let events = SseReader::new(lariat.chat(webui_request(true)).await).collect().await;
    let chunks = json_events(&events);
    let calls: Vec<&Value> =
        chunks.iter().filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array()).flatten().collect();
    assert_eq!(calls[0]["function"]["name"], "web_search");
    assert_eq!(calls[0]["index"], 0);
    let client_id = calls[0]["id"].as_str().unwrap().to_owned();
    let arguments: String = calls.iter().filter_map(|c| c["function"]["arguments"].as_str()).collect();
    assert_eq!(arguments, r#"{"q": "b"}"#);
    assert!(calls.iter().all(|c| c["function"]["name"] != "echo"));
    let finish: Vec<&Value> =
        chunks.iter().map(|c| &c["choices"][0]["finish_reason"]).filter(|f| !f.is_null()).collect();
    assert_eq!(finish, [&json!("tool_calls")]);
    assert_eq!(tools.hits("/echo").len(), 1);

    mock.push(Reply::stream(&["all ", "done"]));
    let mut again = webui_request(true);
    let history = again["messages"].as_array_mut().unwrap();
    history.push(json!({"role": "assistant", "content": null, "tool_calls": [
        {"id": client_id, "type": "function", "function": {"name": "web_search", "arguments": r#"{"q": "b"}"#}}]}));
    history.push(json!({"role": "tool", "tool_call_id": client_id, "content": "found b"}));
    let events = SseReader::new(lariat.chat(again).await).collect().await;
    let text: String =
        json_events(&events).iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "all done");
    assert_eq!(tool_results(&mock.received()[1].body).len(), 2);
}

#[tokio::test]
async fn a_client_disconnect_cancels_running_tools() {
    let (mock, tools, lariat) = setup("").await;
    mock.push(Reply::stream_tool_calls(Some("Working on it."), &[("w", "wait", "{}")]));
    let mut body = ask("wait");
    body["stream"] = json!(true);
    let mut reader = SseReader::new(lariat.chat(body).await);
    assert!(reader.next().await.unwrap().contains("Working on it."));
    // Wait until the tool is running, then leave.
    for _ in 0..100 {
        if !tools.hits("/hang").is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(tools.hits("/hang").len(), 1);
    drop(reader);
    let cancelled = tokio::time::timeout(std::time::Duration::from_secs(5), tools.hang_dropped.notified()).await;
    assert!(cancelled.is_ok(), "the running tool call was not cancelled");
    assert_eq!(mock.received().len(), 1, "no further rounds after the client left");
}

#[tokio::test]
async fn fetch_url_refuses_private_addresses() {
    let (mock, tools, lariat) = setup("").await;
    let port = tools.url.rsplit(':').next().unwrap();
    let targets = [
        format!("http://127.0.0.1:{port}/echo"),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        format!("http://localhost:{port}/echo"),
        format!("http://[::1]:{port}/echo"),
        "file:///etc/passwd".to_owned(),
    ];
    let calls: Vec<(String, String)> =
        targets.iter().enumerate().map(|(i, url)| (format!("f{i}"), json!({"url": url}).to_string())).collect();
    let refs: Vec<(&str, &str, &str)> =
        calls.iter().map(|(id, args)| (id.as_str(), "fetch_url", args.as_str())).collect();
    mock.push(Reply::tool_calls(&refs));
    mock.push(Reply::text("could not fetch"));
    lariat.chat(ask("fetch")).await;
    let results = tool_results(&mock.received()[1].body);
    assert_eq!(results.len(), targets.len());
    for ((_, content), url) in results.iter().zip(&targets) {
        assert!(content.starts_with("Tool error: refused") || content.contains("refused"), "{url}: {content}");
    }
    assert!(tools.hits("/echo").is_empty(), "nothing on loopback was reached");
}

#[tokio::test]
async fn fetch_url_reaches_private_hosts_only_when_allowed() {
    let mock = MockUpstream::start().await;
    let tools = ToolServer::start().await;
    let config = agent_config(&mock, &tools, "")
        + "\n[tools.builtin.fetch_url]\nallow_private = [\"127.0.0.0/8\"]\nmax_bytes = 10\n";
    let lariat = Lariat::start(&config).await;
    mock.push(Reply::tool_calls(&[("f", "fetch_url", &json!({"url": format!("{}/echo", tools.url)}).to_string())]));
    mock.push(Reply::text("fetched"));
    lariat.chat(ask("fetch")).await;
    let results = tool_results(&mock.received()[1].body);
    assert!(results[0].1.starts_with("{\"echo\":nu") && results[0].1.contains("truncated at 10 bytes"), "{results:?}");
    assert_eq!(tools.hits("/echo").len(), 1);
}

#[tokio::test]
async fn tool_runs_and_rounds_are_counted() {
    let (mock, _tools, lariat) = setup("").await;
    mock.push(Reply::tool_calls(&[("a", "echo", "{}")]));
    mock.push(Reply::text("ok"));
    assert_eq!(lariat.chat(ask("count")).await.status(), 200);
    let metrics = lariat.get("/metrics", None).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"lariat_tool_calls_total{tool="echo",outcome="ok"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"lariat_tool_duration_seconds_count{tool="echo"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"lariat_rounds_count{model="agent"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"lariat_rounds_sum{model="agent"} 1.0"#), "{metrics}");
}
