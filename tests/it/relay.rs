//! Non-streaming relay: pass-through both ways, rewriting, headers, upstream errors.

use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn relays_unknown_fields_both_ways_and_rewrites_identity() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::json(
        200,
        json!({
            "id": "chatcmpl-up", "object": "chat.completion", "created": 7, "model": "gpt-test-2024",
            "system_fingerprint": "fp_1", "vendor_extra": {"cost": 0.1},
            "choices": [{"index": 0, "logprobs": null, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "hi there", "refusal": null}}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14,
                      "prompt_tokens_details": {"cached_tokens": 0}}
        }),
    ));
    let lariat = Lariat::start(&config(&mock, "")).await;
    let body = json!({
        "model": "assistant",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello", "name": "al"}],
        "temperature": 0.3, "max_tokens": 50, "seed": 7, "stop": ["\n"], "user": "u1",
        "response_format": {"type": "text"}, "metadata": {"k": "v"}, "vendor_knob": {"deep": [1, 2]}
    });
    let response = lariat
        .post("/v1/chat/completions", Some(ALICE))
        .header("x-request-id", "req-abc")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-lariat-upstream"], "mock/gpt-test");
    assert_eq!(response.headers()["x-request-id"], "req-abc");
    assert_eq!(response.headers()["x-lariat-attempts"], "1");
    let answer: serde_json::Value = response.json().await.unwrap();

    // What the upstream saw: everything the client sent, with model and key replaced.
    let received = &mock.received()[0];
    assert_eq!(received.path, "/v1/chat/completions");
    assert_eq!(received.headers["authorization"], format!("Bearer {PROVIDER_KEY}"));
    let mut expected = body.clone();
    expected["model"] = json!("gpt-test");
    expected["stream"] = json!(false);
    assert_eq!(received.body, expected);

    // What the client saw: everything the upstream sent, with model and id rewritten.
    assert_eq!(answer["model"], "assistant");
    assert!(answer["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_ne!(answer["id"], "chatcmpl-up");
    assert_eq!(answer["system_fingerprint"], "fp_1");
    assert_eq!(answer["vendor_extra"], json!({"cost": 0.1}));
    assert_eq!(answer["created"], 7);
    assert_eq!(answer["choices"][0]["message"], json!({"role": "assistant", "content": "hi there", "refusal": null}));
    assert_eq!(answer["choices"][0]["logprobs"], json!(null));
    assert_eq!(answer["usage"]["total_tokens"], 14);
    assert_eq!(answer["usage"]["prompt_tokens_details"], json!({"cached_tokens": 0}));
}

/// A relay sends a whole answer on as its own bytes (key order, spacing, fields
/// lariat does not know) with only `id` and `model` changed, `object` and `created`
/// added where missing; an answer it would change more (two choices) is built anew.
#[tokio::test]
async fn a_relayed_answer_keeps_its_bytes_but_for_id_and_model() {
    let mock = MockUpstream::start().await;
    let answer = r#"{"model": "gpt-test-2024","choices":[{"finish_reason":"stop","message":{"content":"hi\u0021","role":"assistant"},"index":0}],
  "id":"up-1","usage":{"total_tokens":3,"prompt_tokens":2,"completion_tokens":1},"vendor":[1.50,true]}"#;
    mock.push(Reply::Raw { status: 200, content_type: "application/json", body: answer.to_owned() });
    let two = json!({"id": "up-2", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "first"}, "finish_reason": "stop"},
        {"index": 1, "message": {"role": "assistant", "content": "second"}, "finish_reason": "stop"}]});
    mock.push(Reply::json(200, two));
    let lariat = Lariat::start(&config(&mock, "")).await;

    let response = lariat.chat(request("assistant", false)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let text = response.text().await.unwrap();
    let id: serde_json::Value = serde_json::from_str(&text).unwrap();
    let id = id["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-") && id != "up-1", "{id}");
    let created = text.split(r#""created":"#).nth(1).and_then(|t| t.split(',').next()).unwrap();
    assert!(created.parse::<u64>().unwrap() > 1_700_000_000, "{text}");
    // The outer object (the first `{`) gains the missing members, first thing.
    let expected = answer
        .replacen('{', &format!(r#"{{"object":"chat.completion","created":{created},"#), 1)
        .replacen(r#""gpt-test-2024""#, r#""assistant""#, 1)
        .replacen(r#""up-1""#, &format!("{id:?}"), 1);
    assert_eq!(text, expected);

    let answer: serde_json::Value = lariat.chat(request("assistant", false)).await.json().await.unwrap();
    assert_eq!(
        answer["choices"],
        json!([{"index": 0, "message": {"role": "assistant", "content": "first"}, "finish_reason": "stop"}])
    );
    assert_eq!((answer["model"].as_str(), answer["object"].as_str()), (Some("assistant"), Some("chat.completion")));
}

#[tokio::test]
async fn makes_a_request_id_when_the_client_sends_none() {
    let mock = MockUpstream::start().await;
    mock.always(Reply::text("ok"));
    let lariat = Lariat::start(&config(&mock, "")).await;
    let a = lariat.chat(request("assistant", false)).await;
    let b = lariat.chat(request("assistant", false)).await;
    let (a, b) = (a.headers()["x-request-id"].clone(), b.headers()["x-request-id"].clone());
    assert!(a.len() >= 32, "{a:?}");
    assert_ne!(a, b);
}

#[tokio::test]
async fn openwebui_providers_are_called_under_api() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::text("from open webui"));
    let base = mock.url.trim_end_matches("/v1").to_owned();
    let lariat = Lariat::start(&format!(
        r#"
[providers.owui]
base_url = "{base}"
kind = "openwebui"

[models.webui]
chain = ["owui/llama3"]
"#
    ))
    .await;
    let answer: serde_json::Value = lariat.chat(request("webui", false)).await.json().await.unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "from open webui");
    let received = &mock.received()[0];
    assert_eq!(received.path, "/api/chat/completions");
    // No provider key configured: the client's lariat key is never forwarded.
    assert!(received.headers.get("authorization").is_none());
}

#[tokio::test]
async fn upstream_client_errors_come_back_with_their_message() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::json(
        400,
        json!({"error": {"message": "temperature must be at most 2", "type": "invalid_request_error",
                         "param": "temperature", "code": "invalid_value"}}),
    ));
    let lariat = Lariat::start(&config(&mock, "")).await;
    let error = expect_error(lariat.chat(request("assistant", false)).await, 400, "invalid_value").await;
    assert_eq!(error["message"], "temperature must be at most 2");
    assert_eq!(error["param"], "temperature");
}

#[tokio::test]
async fn upstream_failures_map_to_gateway_statuses() {
    let mock = MockUpstream::start().await;
    let lariat = Lariat::start(&config(&mock, "")).await;

    mock.push(Reply::error(500, "kaboom"));
    let error = expect_error(lariat.chat(request("assistant", false)).await, 502, "upstream_failed").await;
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("mock/gpt-test") && message.contains("HTTP 500") && message.contains("kaboom"),
        "{message}"
    );

    mock.push(Reply::error(429, "slow down"));
    expect_error(lariat.chat(request("assistant", false)).await, 429, "rate_limited").await;

    // A provider rejecting our credentials is a gateway problem, and the key it
    // echoes back never reaches the client.
    mock.push(Reply::error(401, &format!("Incorrect API key provided: {PROVIDER_KEY}")));
    let error = expect_error(lariat.chat(request("assistant", false)).await, 502, "upstream_failed").await;
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("HTTP 401") && !message.contains(PROVIDER_KEY), "{message}");

    mock.push(Reply::Raw { status: 200, content_type: "application/json", body: "{not json".into() });
    let error = expect_error(lariat.chat(request("assistant", false)).await, 502, "upstream_failed").await;
    assert!(error["message"].as_str().unwrap().contains("invalid response"), "{error}");

    mock.push(Reply::Raw { status: 502, content_type: "text/html", body: "<html>bad gateway</html>".into() });
    let error = expect_error(lariat.chat(request("assistant", false)).await, 502, "upstream_failed").await;
    assert!(error["message"].as_str().unwrap().contains("bad gateway"), "{error}");
}

#[tokio::test]
async fn hanging_upstream_times_out_with_504() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::Hang);
    let config = config(&mock, "").replace("timeout_s = 5", "timeout_s = 0.3");
    let lariat = Lariat::start(&config).await;
    let error = expect_error(lariat.chat(request("assistant", false)).await, 504, "upstream_timeout").await;
    assert!(error["message"].as_str().unwrap().contains("timed out"), "{error}");
}

#[tokio::test]
async fn unreachable_upstream_is_a_502() {
    let mock = MockUpstream::start().await;
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = config(&mock, "").replace(&mock.url, &format!("http://127.0.0.1:{port}/v1"));
    let lariat = Lariat::start(&config).await;
    let error = expect_error(lariat.chat(request("assistant", false)).await, 502, "upstream_failed").await;
    assert!(error["message"].as_str().unwrap().contains("connection failed"), "{error}");
}

#[tokio::test]
async fn metrics_count_requests_by_model_and_status() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::text("ok")).push(Reply::error(500, "no"));
    let lariat = Lariat::start(&config(&mock, "")).await;
    assert_eq!(lariat.chat(request("assistant", false)).await.status(), 200);
    assert_eq!(lariat.chat(request("assistant", false)).await.status(), 502);
    let text = lariat.get("/metrics", None).send().await.unwrap().text().await.unwrap();
    let line = |needle: &str| text.lines().find(|l| l.contains(needle) && !l.starts_with('#')).map(str::to_owned);
    let ok = line(r#"lariat_requests_total{route="/v1/chat/completions",model="assistant",status="200"}"#);
    assert_eq!(ok.as_deref().and_then(|l| l.rsplit(' ').next()), Some("1"), "{text}");
    assert!(line(r#"model="assistant",status="502""#).is_some(), "{text}");
    assert!(
        line(r#"lariat_upstream_attempts_total{target="mock/gpt-test",outcome="server_error"}"#).is_some(),
        "{text}"
    );
    assert!(
        line(r#"lariat_tokens_total{user="alice",model="assistant",target="mock/gpt-test",kind="prompt"} 10"#)
            .is_some(),
        "{text}"
    );
    assert!(line("lariat_request_duration_seconds_bucket").is_some(), "{text}");
}

#[tokio::test]
async fn without_server_tools_client_tool_calls_pass_through_untouched() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::tool_calls(&[("call_upstream_1", "get_weather", r#"{"city": "Oslo"}"#)]));
    let lariat = Lariat::start(&config(&mock, "")).await;
    let mut body = request("assistant", false);
    body["tools"] =
        json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
    body["tool_choice"] = json!("auto");
    let answer: serde_json::Value = lariat.chat(body.clone()).await.json().await.unwrap();
    assert!(answer.get("lariat").is_none(), "a pure relay adds nothing: {answer}");
    assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls");
    let call = &answer["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["id"], "call_upstream_1");
    assert_eq!(call["function"]["arguments"], r#"{"city": "Oslo"}"#);
    // The client's tools and tool_choice reached the upstream as sent.
    let sent = mock.last_body();
    assert_eq!(sent["tools"], body["tools"]);
    assert_eq!(sent["tool_choice"], "auto");
}
