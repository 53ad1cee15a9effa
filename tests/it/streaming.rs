//! Streaming relay: order, one id, `[DONE]`, no buffering, keep-alive,
//! cancellation on disconnect, non-streaming upstreams streamed, mid-stream failure.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::Notify;

use crate::harness::*;

#[tokio::test]
async fn relays_chunks_in_order_with_one_id_and_done() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::stream(&["Hel", "lo", " world"]));
    let lariat = Lariat::start(&config(&mock, "")).await;
    let response = lariat.chat(request("assistant", true)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-lariat-upstream"], "mock/gpt-test");
    assert_eq!(response.headers()["cache-control"], "no-cache");
    let events = SseReader::new(response).collect().await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(events.iter().filter(|e| *e == "[DONE]").count(), 1);
    let chunks = json_events(&events);
    assert_eq!(chunks.len(), 5, "{events:?}");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "Hello world");
    let id = chunks[0]["id"].as_str().unwrap();
    assert!(id.starts_with("chatcmpl-") && !id.starts_with("chatcmpl-up"), "{id}");
    assert!(
        chunks.iter().all(|c| c["id"] == id && c["model"] == "assistant" && c["object"] == "chat.completion.chunk")
    );
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");
    // The upstream was asked to stream.
    assert_eq!(mock.last_body()["stream"], true);
}

#[tokio::test]
async fn each_chunk_reaches_the_client_before_the_upstream_sends_the_next() {
    let mock = MockUpstream::start().await;
    let gate = Arc::new(Notify::new());
    mock.push(Reply::Sse(vec![
        Step::Data(chunk(json!({"role": "assistant", "content": "first"}), None)),
        Step::Wait(gate.clone()),
        Step::Data(chunk(json!({"content": "second"}), Some("stop"))),
        Step::Data("[DONE]".into()),
    ]));
    let lariat = Lariat::start(&config(&mock, "")).await;
    let mut reader = SseReader::new(lariat.chat(request("assistant", true)).await);
    // The upstream holds "second" back until we have seen "first": a buffering relay
    // would never deliver it and the read below would time out.
    let first: serde_json::Value = serde_json::from_str(&reader.next().await.unwrap()).unwrap();
    assert_eq!(first["choices"][0]["delta"]["content"], "first");
    gate.notify_one();
    let second: serde_json::Value = serde_json::from_str(&reader.next().await.unwrap()).unwrap();
    assert_eq!(second["choices"][0]["delta"]["content"], "second");
    assert_eq!(reader.next().await.as_deref(), Some("[DONE]"));
    assert_eq!(reader.next().await, None);
}

#[tokio::test]
async fn client_disconnect_cancels_the_upstream_call() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::Sse(vec![
        Step::Data(chunk(json!({"role": "assistant", "content": "partial"}), None)),
        Step::Wait(Arc::new(Notify::new())), // never released
    ]));
    let lariat = Lariat::start(&config(&mock, "")).await;
    let mut reader = SseReader::new(lariat.chat(request("assistant", true)).await);
    assert!(reader.next().await.unwrap().contains("partial"));
    let gauge = |text: String| text.lines().find(|l| l.starts_with("lariat_active_streams ")).map(str::to_owned);
    let metrics = lariat.get("/metrics", None).send().await.unwrap().text().await.unwrap();
    assert_eq!(gauge(metrics).as_deref(), Some("lariat_active_streams 1"));
    drop(reader);
    assert!(mock.wait_stream_dropped().await, "the upstream stream was not cancelled after the client left");
    // The stream guard is released with the response.
    let mut released = false;
    for _ in 0..50 {
        let metrics = lariat.get("/metrics", None).send().await.unwrap().text().await.unwrap();
        if gauge(metrics).as_deref() == Some("lariat_active_streams 0") {
            released = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(released, "active_streams did not return to 0");
}

#[tokio::test]
async fn quiet_upstreams_get_keepalive_comments() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::Sse(vec![
        Step::Data(chunk(json!({"role": "assistant", "content": "a"}), None)),
        Step::Sleep(Duration::from_millis(700)),
        Step::Data(chunk(json!({"content": "b"}), Some("stop"))),
        Step::Data("[DONE]".into()),
    ]));
    let lariat = Lariat::start(&config_with_server(&mock, "keepalive_s = 0.2", "")).await;
    let mut reader = SseReader::new(lariat.chat(request("assistant", true)).await);
    let mut events = Vec::new();
    while let Some(e) = reader.next().await {
        events.push(e);
    }
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(reader.comments >= 2, "expected keep-alive comments during the pause, got {}", reader.comments);
}

#[tokio::test]
async fn non_streaming_upstream_answers_are_streamed() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::text("whole answer"));
    let lariat = Lariat::start(&config(&mock, "")).await;
    let mut body = request("assistant", true);
    body["stream_options"] = json!({"include_usage": true});
    let events = SseReader::new(lariat.chat(body).await).collect().await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks = json_events(&events);
    assert_eq!(chunks[0]["choices"][0]["delta"], json!({"role": "assistant", "content": "whole answer"}));
    assert_eq!(chunks[1]["choices"][0]["finish_reason"], "stop");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["total_tokens"], 15);
    let id = &chunks[0]["id"];
    assert!(chunks.iter().all(|c| &c["id"] == id && c["model"] == "assistant"));
}

#[tokio::test]
async fn failure_before_the_first_chunk_is_a_json_error() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::error(503, "overloaded"));
    let lariat = Lariat::start(&config(&mock, "")).await;
    let error = expect_error(lariat.chat(request("assistant", true)).await, 502, "upstream_failed").await;
    assert!(error["message"].as_str().unwrap().contains("overloaded"));

    mock.push(Reply::Sse(vec![Step::Cut]));
    expect_error(lariat.chat(request("assistant", true)).await, 502, "upstream_failed").await;
}

#[tokio::test]
async fn stream_cut_after_content_ends_with_an_error_event_and_done() {
    let mock = MockUpstream::start().await;
    // The pause lets the first frame leave the mock before the connection is cut.
    mock.push(Reply::Sse(vec![
        Step::Data(chunk(json!({"role": "assistant", "content": "half an ans"}), None)),
        Step::Sleep(Duration::from_millis(100)),
        Step::Cut,
    ]));
    mock.push(Reply::Sse(vec![Step::Data(chunk(json!({"role": "assistant", "content": "clean close"}), None))]));
    mock.push(Reply::Sse(vec![
        Step::Data(chunk(json!({"role": "assistant", "content": "x"}), None)),
        Step::Data(r#"{"error": {"message": "model crashed"}}"#.into()),
    ]));
    let lariat = Lariat::start(&config(&mock, "")).await;
    for expected in ["stream failed", "closed the stream before the answer was complete", "model crashed"] {
        let events = SseReader::new(lariat.chat(request("assistant", true)).await).collect().await;
        assert_eq!(events.len(), 3, "{events:?}");
        assert!(events[0].contains("\"content\""), "{events:?}");
        let error: serde_json::Value = serde_json::from_str(&events[1]).unwrap();
        assert_eq!(error["error"]["code"], "upstream_failed");
        assert!(error["error"]["message"].as_str().unwrap().contains(expected), "{error}");
        assert_eq!(events[2], "[DONE]");
    }
}

#[tokio::test]
async fn oversized_upstream_events_are_an_upstream_failure() {
    let mock = MockUpstream::start().await;
    let huge = "x".repeat(4096);
    mock.push(Reply::Sse(vec![Step::Bytes(format!("data: {{\"pad\": \"{huge}\"}}\n\n"))]));
    let lariat = Lariat::start(&config_with_server(&mock, "max_event_bytes = 2048", "")).await;
    let error = expect_error(lariat.chat(request("assistant", true)).await, 502, "upstream_failed").await;
    assert!(error["message"].as_str().unwrap().contains("exceeded 2048 bytes"), "{error}");
}
