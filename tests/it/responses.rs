//! The Responses API over the same loop: requests translated to Chat Completions for
//! the (Chat-only) scripted upstream, answers rendered as `response` objects and as
//! the Responses event stream.

use serde_json::{Value, json};

use crate::harness::*;
use crate::tools::{agent_config, setup};

pub async fn create(lariat: &Lariat, key: &str, body: &Value) -> reqwest::Response {
    lariat.post("/v1/responses", Some(key)).json(body).send().await.unwrap()
}

/// A non-streamed response as JSON (asserting 200).
pub async fn respond(lariat: &Lariat, body: Value) -> Value {
    let response = create(lariat, ALICE, &body).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// The stream's events: `(event name, data)`, asserting each data names its own
/// type and that `sequence_number` counts from 0 without a gap.
pub async fn events(lariat: &Lariat, body: Value) -> Vec<Value> {
    let response = create(lariat, ALICE, &body).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let mut out = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty() && !b.starts_with(':')) {
        let name = block.lines().find_map(|l| l.strip_prefix("event: ")).expect("every event is named");
        let data: Value = serde_json::from_str(block.lines().find_map(|l| l.strip_prefix("data: ")).unwrap()).unwrap();
        assert_eq!(data["type"], name, "{block}");
        assert_eq!(data["sequence_number"], out.len(), "{block}");
        out.push(data);
    }
    out
}

pub fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["type"].as_str().unwrap()).collect()
}

pub fn output_text(response: &Value) -> String {
    response["output"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["type"] == "message")
        .flat_map(|i| i["content"].as_array().unwrap())
        .map(|p| p["text"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_string_input_gets_a_response_object() {
    let (mock, _tools, lariat) = setup("tools = []").await;
    mock.push(Reply::text("Hello there."));
    let body = json!({"model": "agent", "input": "Hi", "instructions": "Be brief.", "max_output_tokens": 50,
                      "temperature": 0.3, "metadata": {"ticket": "7"}, "store": false});
    let response = create(&lariat, ALICE, &body).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-lariat-attempts"], "1");
    let response: Value = response.json().await.unwrap();
    assert!(response["id"].as_str().unwrap().starts_with("resp_"), "{response}");
    assert_eq!((response["object"].as_str(), response["status"].as_str()), (Some("response"), Some("completed")));
    assert_eq!(response["model"], "agent", "the virtual model, not the upstream's");
    assert_eq!(output_text(&response), "Hello there.");
    assert_eq!(response["output"][0]["role"], "assistant");
    assert_eq!(response["usage"]["input_tokens"], 10);
    assert_eq!(response["usage"]["output_tokens"], 5);
    assert_eq!(response["usage"]["total_tokens"], 15);
    assert_eq!(response["metadata"], json!({"ticket": "7"}));
    assert_eq!((response["instructions"].as_str(), response["store"].as_bool()), (Some("Be brief."), Some(false)));

    let sent = mock.last_body();
    assert_eq!(sent["messages"][0], json!({"role": "system", "content": "Be brief."}));
    assert_eq!(sent["messages"][1], json!({"role": "user", "content": "Hi"}));
    assert_eq!((sent["max_tokens"].as_u64(), sent["temperature"].as_f64()), (Some(50), Some(0.3)));
    assert!(sent.get("metadata").is_none() && sent.get("store").is_none(), "lariat's, not the upstream's: {sent}");
}

#[tokio::test]
async fn a_stream_is_the_responses_event_sequence() {
    let (mock, _tools, lariat) = setup("tools = []").await;
    mock.push(Reply::stream_with_usage(&["Hel", "lo."]));
    let events = events(&lariat, json!({"model": "agent", "input": "Hi", "stream": true})).await;
    assert_eq!(
        kinds(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    assert_eq!(events[0]["response"]["status"], "in_progress");
    let item = events[2]["item"]["id"].as_str().unwrap();
    assert_eq!((events[4]["delta"].as_str(), events[4]["item_id"].as_str()), (Some("Hel"), Some(item)));
    assert_eq!(events[6]["text"], "Hello.");
    let done = &events[9]["response"];
    assert_eq!((done["status"].as_str(), output_text(done).as_str()), (Some("completed"), "Hello."));
    assert_eq!(done["usage"]["total_tokens"], 15);
    assert_eq!(done["id"], events[0]["response"]["id"]);
    assert_eq!(mock.last_body()["stream_options"], json!({"include_usage": true}));
}

#[tokio::test]
async fn client_function_calls_are_items_and_their_outputs_continue_the_loop() {
    let (mock, tools, lariat) = setup("tools = [\"echo\"]").await;
    let weather = json!({"type": "function", "name": "get_weather", "description": "Weather",
                         "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}});
    // One round asks for a server tool and the client's: lariat runs its own and
    // hands the client's out.
    mock.push(Reply::tool_calls(&[
        ("up_1", "echo", r#"{"text": "x"}"#),
        ("up_2", "get_weather", r#"{"city":"Oslo"}"#),
    ]));
    let first = respond(&lariat, json!({"model": "agent", "input": "Weather?", "tools": [weather]})).await;
    assert_eq!(tools.hits("/echo").len(), 1);
    let output = first["output"].as_array().unwrap();
    assert_eq!(output.len(), 1, "the server call is lariat's business: {first}");
    let call = &output[0];
    assert_eq!((call["type"].as_str(), call["name"].as_str()), (Some("function_call"), Some("get_weather")));
    assert_eq!(call["arguments"], r#"{"city":"Oslo"}"#);
    let offered =
        mock.last_body()["tools"].as_array().unwrap().iter().map(|t| t["function"]["name"].clone()).collect::<Vec<_>>();
    assert!(offered.contains(&json!("get_weather")) && offered.contains(&json!("echo")), "{offered:?}");

    mock.push(Reply::text("Sunny in Oslo."));
    let output = json!({"type": "function_call_output", "call_id": call["call_id"], "output": "sunny"});
    let second =
        respond(&lariat, json!({"model": "agent", "previous_response_id": first["id"], "input": [output]})).await;
    assert_eq!(output_text(&second), "Sunny in Oslo.");
    assert_eq!(second["previous_response_id"], first["id"]);
    let messages = mock.last_body()["messages"].as_array().unwrap().clone();
    let results: Vec<&Value> = messages.iter().filter(|m| m["role"] == "tool").collect();
    assert_eq!(results.len(), 2, "the stored round (echo's result) joined by the client's: {messages:?}");
    assert!(results.iter().any(|m| m["content"] == "sunny"));
    assert_eq!(messages[1]["content"], "Weather?", "after the model's overlay");
}

#[tokio::test]
async fn without_storage_the_client_sends_the_items_back() {
    let (mock, _tools, lariat) = setup("tools = []").await;
    let add = json!({"type": "function", "name": "add", "parameters": {"type": "object"}});
    mock.push(Reply::stream_tool_calls(Some("Adding."), &[("call_9", "add", r#"{"a":1,"b":2}"#)]));
    let events =
        events(&lariat, json!({"model": "agent", "input": "1+2?", "tools": [add], "store": false, "stream": true}))
            .await;
    let arguments: String = events
        .iter()
        .filter(|e| e["type"] == "response.function_call_arguments.delta")
        .map(|e| e["delta"].as_str().unwrap())
        .collect();
    assert_eq!(arguments, r#"{"a":1,"b":2}"#, "argument deltas as they came");
    let done = &events.last().unwrap()["response"];
    assert_eq!(done["output"][0]["type"], "message");
    assert_eq!(done["output"][1]["call_id"], "call_9");
    assert_eq!(done["output"][1]["status"], "completed");

    mock.push(Reply::text("3"));
    let mut input = vec![json!({"role": "user", "content": "1+2?"})];
    input.extend(done["output"].as_array().unwrap().iter().cloned());
    input.push(json!({"type": "function_call_output", "call_id": "call_9", "output": "3"}));
    let answer = respond(&lariat, json!({"model": "agent", "input": input, "tools": [add], "store": false})).await;
    assert_eq!(output_text(&answer), "3");
    let sent = mock.last_body();
    assert_eq!(sent["messages"][1]["content"], "Adding.");
    assert_eq!(sent["messages"][1]["tool_calls"][0]["function"]["name"], "add");
    assert_eq!(sent["messages"][2], json!({"role": "tool", "tool_call_id": "call_9", "content": "3"}));
    assert_eq!(sent["tools"][0]["function"]["name"], "add");
}

#[tokio::test]
async fn limits_end_as_incomplete_with_a_reason() {
    let (mock, _tools, lariat) = setup("tools = [\"echo\"]\nmax_rounds = 1").await;
    mock.push(Reply::completion(json!({"role": "assistant", "content": "Cut sh"}), "length"));
    let cut = respond(&lariat, json!({"model": "agent", "input": "Tell me all", "max_output_tokens": 3})).await;
    assert_eq!(
        (cut["status"].as_str(), cut["incomplete_details"]["reason"].as_str()),
        (Some("incomplete"), Some("max_output_tokens"))
    );

    mock.push(Reply::tool_calls(&[("up_1", "echo", "{}")]));
    mock.push(Reply::text("Stopped here."));
    let limited = respond(&lariat, json!({"model": "agent", "input": "Loop"})).await;
    assert_eq!(limited["incomplete_details"]["reason"], "round_limit", "{limited}");
    assert_eq!(output_text(&limited), "Stopped here.");

    let (mock, _tools, lariat) = setup("tools = []").await;
    let part = |text: &str| Step::Data(chunk(json!({"role": "assistant", "content": text}), None));
    // The pause lets the first frame leave the mock before the connection is cut.
    let pause = Step::Sleep(std::time::Duration::from_millis(100));
    mock.push(Reply::Sse(vec![part("Part"), part(" two"), pause, Step::Cut]));
    let events = events(&lariat, json!({"model": "agent", "input": "Hi", "stream": true})).await;
    let last = events.last().unwrap();
    assert_eq!(last["type"], "response.failed", "{events:?}");
    assert_eq!(last["response"]["status"], "failed");
    assert!(last["response"]["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{last}");
    assert!(!kinds(&events).contains(&"response.completed"), "never a clean finish after a cut");
}

#[tokio::test]
async fn what_lariat_cannot_do_is_a_clear_400() {
    let (mock, _tools, lariat) = setup("tools = []").await;
    let cases = [
        (
            json!({"model": "agent", "input": "Hi", "tools": [{"type": "web_search_preview"}]}),
            "tools[0].type",
            "web_search_preview",
        ),
        (
            json!({"model": "agent", "input": [{"type": "computer_call_output"}]}),
            "input[0].type",
            "computer_call_output",
        ),
        (
            json!({"model": "agent", "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]}),
            "input[0].content[0].image_url",
            "file ids",
        ),
        (json!({"model": "agent", "input": "Hi", "background": true}), "background", "background"),
        (json!({"model": "agent", "input": []}), "input", "at least one"),
        (
            json!({"model": "agent", "input": "Hi", "tool_choice": {"type": "file_search"}}),
            "tool_choice",
            "tool_choice",
        ),
    ];
    for (body, param, says) in cases {
        let error = expect_error(create(&lariat, ALICE, &body).await, 400, "invalid_request").await;
        assert_eq!(error["param"], param, "{body}");
        assert!(error["message"].as_str().unwrap().contains(says), "{error}");
    }
    expect_error(create(&lariat, ALICE, &json!({"model": "nope", "input": "Hi"})).await, 404, "model_not_found").await;
    let unknown = json!({"model": "agent", "input": "Hi", "previous_response_id": "resp_missing"});
    expect_error(create(&lariat, ALICE, &unknown).await, 404, "response_not_found").await;
    expect_error(create(&lariat, ALICE, &json!({"input": "Hi"})).await, 400, "invalid_request").await;
    assert!(mock.received().is_empty(), "nothing reached the upstream");
}

#[tokio::test]
async fn images_and_typed_parts_become_chat_parts() {
    let (mock, _tools, lariat) = setup("tools = []").await;
    mock.push(Reply::text("A cat."));
    let input = json!([{"role": "user", "content": [
        {"type": "input_text", "text": "What is this?"},
        {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"}
    ]}]);
    let text = json!({"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}, "strict": true}});
    respond(&lariat, json!({"model": "agent", "input": input, "text": text, "reasoning": {"effort": "low"}})).await;
    let sent = mock.last_body();
    assert_eq!(
        sent["messages"][0]["content"],
        json!([{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}}])
    );
    assert_eq!(
        sent["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": true}})
    );
    assert_eq!(sent["reasoning_effort"], "low");
}

#[tokio::test]
async fn server_tools_and_progress_in_a_stream() {
    let mock = MockUpstream::start().await;
    let tools = ToolServer::start().await;
    let lariat = Lariat::start(&agent_config(&mock, &tools, "tools = [\"echo\"]\nprogress = \"reasoning\"")).await;
    mock.push(Reply::stream_tool_calls(None, &[("up_1", "echo", r#"{"text": "a"}"#)]));
    mock.push(Reply::stream_with_usage(&["Done."]));
    let events = events(&lariat, json!({"model": "agent", "input": "Echo a", "stream": true})).await;
    let done = &events.last().unwrap()["response"];
    assert_eq!(done["status"], "completed");
    let output = done["output"].as_array().unwrap();
    assert_eq!(output[0]["type"], "reasoning", "{done}");
    assert!(output[0]["summary"][0]["text"].as_str().unwrap().contains("Running `echo`"), "{done}");
    assert_eq!(output_text(done), "Done.");
    assert!(output.iter().all(|i| i["type"] != "function_call"), "server calls are not client work");
    assert_eq!(done["usage"]["total_tokens"], 30, "both rounds");
    assert_eq!(tools.hits("/echo").len(), 1);
}

/// Parallel client calls whose deltas interleave, from an upstream that repeats
/// each call's id on every delta: one item per call, each with its own arguments.
#[tokio::test]
async fn interleaved_parallel_calls_keep_their_own_arguments() {
    let (mock, _tools, lariat) = setup("tools = []").await;
    let call = |index: u32, id: Option<&str>, name: Option<&str>, args: &str| {
        let mut call = json!({"index": index, "function": {"arguments": args}});
        if let Some(id) = id {
            call["id"] = json!(id);
            call["type"] = json!("function");
        }
        if let Some(name) = name {
            call["function"]["name"] = json!(name);
        }
        Step::Data(chunk(json!({"tool_calls": [call]}), None))
    };
    mock.push(Reply::Sse(vec![
        Step::Data(chunk(json!({"role": "assistant", "content": null}), None)),
        call(0, Some("c_a"), Some("a"), ""),
        call(1, Some("c_b"), Some("b"), "{\"y\""),
        call(0, Some("c_a"), None, "{\"x\":1}"),
        call(1, None, None, ":2}"),
        Step::Data(chunk(json!({}), Some("tool_calls"))),
        Step::Data("[DONE]".into()),
    ]));
    let tools = json!([{"type": "function", "name": "a"}, {"type": "function", "name": "b"}]);
    let events = events(&lariat, json!({"model": "agent", "input": "both", "tools": tools, "stream": true})).await;
    let done = &events.last().unwrap()["response"];
    let calls: Vec<(&str, &str)> = done["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["call_id"].as_str().unwrap(), i["arguments"].as_str().unwrap()))
        .collect();
    assert_eq!(calls, [("c_a", "{\"x\":1}"), ("c_b", "{\"y\":2}")], "{done}");
    let added = kinds(&events).iter().filter(|k| **k == "response.output_item.added").count();
    assert_eq!(added, 2, "a repeated id opens no new item");
}
