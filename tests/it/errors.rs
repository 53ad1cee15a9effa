//! Every rejection is OpenAI-shaped JSON with the right status.

use axum::routing::get;
use serde_json::json;

use crate::harness::*;

#[tokio::test]
async fn bad_requests_name_the_problem() {
    let mock = MockUpstream::start().await;
    let lariat = Lariat::start(&config(&mock, "")).await;
    let send = |body: &'static str| {
        lariat.post("/v1/chat/completions", Some(ALICE)).header("content-type", "application/json").body(body).send()
    };
    expect_error(send("{\"model\": ").await.unwrap(), 400, "invalid_json").await;
    expect_error(send("").await.unwrap(), 400, "invalid_json").await;
    let e =
        expect_error(send(r#"{"model": "assistant", "messages": "hi"}"#).await.unwrap(), 400, "invalid_request").await;
    assert_eq!(e["param"], "messages");
    let e = expect_error(
        send(r#"{"messages": [{"role": "user", "content": "x"}]}"#).await.unwrap(),
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(e["param"], "model");
    let e =
        expect_error(send(r#"{"model": "assistant", "messages": []}"#).await.unwrap(), 400, "invalid_request").await;
    assert_eq!(e["param"], "messages");
    let e = expect_error(
        send(r#"{"model": "assistant", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}"#)
            .await
            .unwrap(),
        400,
        "invalid_request",
    )
    .await;
    assert_eq!(e["param"], "stream");
    let e = expect_error(
        send(r#"{"model": "nope", "messages": [{"role": "user", "content": "x"}]}"#).await.unwrap(),
        404,
        "model_not_found",
    )
    .await;
    assert!(e["message"].as_str().unwrap().contains("nope"));
    // Nothing reached the upstream.
    assert!(mock.received().is_empty());
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let mock = MockUpstream::start().await;
    mock.always(Reply::text("ok"));
    let lariat = Lariat::start(&config_with_server(&mock, "max_body_bytes = 2048", "")).await;
    let mut body = request("assistant", false);
    body["messages"][0]["content"] = json!("x".repeat(4096));
    let e = expect_error(lariat.chat(body).await, 413, "payload_too_large").await;
    assert!(e["message"].as_str().unwrap().contains("2048"));
    // Chunked bodies without a length are caught too.
    let stream = futures::stream::iter((0..8).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024])));
    let response =
        lariat.post("/v1/chat/completions", Some(ALICE)).body(reqwest::Body::wrap_stream(stream)).send().await.unwrap();
    expect_error(response, 413, "payload_too_large").await;
    // And a request under the limit still works.
    assert_eq!(lariat.chat(request("assistant", false)).await.status(), 200);
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json() {
    let mock = MockUpstream::start().await;
    let lariat = Lariat::start(&config(&mock, "")).await;
    let e = expect_error(lariat.get("/v2/whatever", None).send().await.unwrap(), 404, "not_found").await;
    assert!(e["message"].as_str().unwrap().contains("/v2/whatever"));
    expect_error(lariat.get("/v1/chat/completions", Some(ALICE)).send().await.unwrap(), 405, "method_not_allowed")
        .await;
    expect_error(lariat.post("/health", None).send().await.unwrap(), 405, "method_not_allowed").await;
}

#[tokio::test]
async fn panics_become_json_500() {
    let mock = MockUpstream::start().await;
    async fn boom() -> &'static str {
        panic!("handler bug")
    }
    let panicking = axum::Router::new().route("/boom", get(boom));
    let lariat = Lariat::start_with(&config(&mock, ""), panicking).await;
    let response = lariat.get("/boom", None).send().await.unwrap();
    assert!(response.headers().contains_key("x-request-id"));
    let e = expect_error(response, 500, "internal_error").await;
    assert!(!e["message"].as_str().unwrap().contains("handler bug"), "panic payloads stay internal: {e}");
    // The server keeps serving.
    assert_eq!(lariat.get("/health", None).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn health_ready_and_metrics_answer() {
    let mock = MockUpstream::start().await;
    let lariat = Lariat::start(&config(&mock, "")).await;
    let health: serde_json::Value = lariat.get("/health", None).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
    let ready = lariat.get("/ready", None).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let metrics = lariat.get("/metrics", None).send().await.unwrap();
    assert!(metrics.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = metrics.text().await.unwrap();
    assert!(text.contains("# TYPE lariat_requests counter"), "{text}");
    assert!(text.contains("lariat_active_streams 0"), "{text}");
}
