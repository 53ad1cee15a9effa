//! Bearer keys: 401 / 403 / 404, per-key model lists, open loopback mode.

use crate::harness::*;

#[tokio::test]
async fn missing_and_unknown_keys_get_401() {
    let mock = MockUpstream::start().await;
    let lariat = Lariat::start(&config(&mock, "")).await;
    let chat =
        |key: Option<&'static str>| lariat.post("/v1/chat/completions", key).json(&request("assistant", false)).send();
    let response = chat(None).await.unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    expect_error(response, 401, "invalid_api_key").await;
    expect_error(chat(Some("sk-wrong-000000000")).await.unwrap(), 401, "invalid_api_key").await;
    let raw =
        lariat.post("/v1/chat/completions", None).header("authorization", ALICE).json(&request("assistant", false));
    expect_error(raw.send().await.unwrap(), 401, "invalid_api_key").await;
    expect_error(lariat.get("/v1/models", None).send().await.unwrap(), 401, "invalid_api_key").await;
    assert!(mock.received().is_empty());
}

/// Every `/v1` route refuses a request without a valid key, and before reading its
/// body: a request whose declared body never comes is answered at once, not after
/// the body timeout.
#[tokio::test]
async fn every_v1_route_needs_a_key_before_its_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mock = MockUpstream::start().await;
    let lariat = Lariat::start(&config(&mock, "")).await;
    let routes = [
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/responses"),
        ("GET", "/v1/responses/resp_123"),
        ("DELETE", "/v1/responses/resp_123"),
        ("GET", "/v1/models"),
        ("GET", "/v1/models/assistant"),
    ];
    let addr = lariat.url.trim_start_matches("http://").to_owned();
    for (method, path) in routes {
        for key in ["", "Authorization: Bearer sk-wrong-000000000\r\n"] {
            let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let head = format!(
                "{method} {path} HTTP/1.1\r\nHost: lariat\r\n{key}Content-Type: application/json\r\n\
                 Content-Length: 1000\r\n\r\n{{\"model\":"
            );
            stream.write_all(head.as_bytes()).await.unwrap();
            let mut answer = vec![0u8; 4096];
            let n = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut answer))
                .await
                .unwrap_or_else(|_| panic!("{method} {path}: no answer before the body"))
                .unwrap();
            let answer = String::from_utf8_lossy(&answer[..n]);
            assert!(answer.starts_with("HTTP/1.1 401"), "{method} {path} ({key:?}): {answer}");
            assert!(answer.contains("invalid_api_key"), "{method} {path}: {answer}");
        }
    }
    assert!(mock.received().is_empty());
}

#[tokio::test]
async fn keys_are_limited_to_their_models() {
    let mock = MockUpstream::start().await;
    mock.always(Reply::text("ok"));
    let lariat = Lariat::start(&config(&mock, "")).await;
    // BOB is configured by sha256 and may only use `other`.
    let bob = |model: &str| lariat.post("/v1/chat/completions", Some(BOB)).json(&request(model, false)).send();
    assert_eq!(bob("other").await.unwrap().status(), 200);
    let e = expect_error(bob("assistant").await.unwrap(), 403, "model_not_allowed").await;
    assert!(e["message"].as_str().unwrap().contains("assistant"));
    expect_error(bob("ghost").await.unwrap(), 404, "model_not_found").await;
    assert_eq!(mock.received().len(), 1);
    assert_eq!(mock.received()[0].body["model"], "other-model");
}

#[tokio::test]
async fn hidden_models_answer_404() {
    let mock = MockUpstream::start().await;
    let lariat = Lariat::start(&config_with_server(&mock, "hide_forbidden_models = true", "")).await;
    let response =
        lariat.post("/v1/chat/completions", Some(BOB)).json(&request("assistant", false)).send().await.unwrap();
    let e = expect_error(response, 404, "model_not_found").await;
    assert!(e["message"].as_str().unwrap().contains("does not exist or you do not have access"));
}

#[tokio::test]
async fn model_list_is_filtered_by_key() {
    let mock = MockUpstream::start().await;
    let lariat = Lariat::start(&config(&mock, "")).await;
    let ids = |body: serde_json::Value| -> Vec<String> {
        assert_eq!(body["object"], "list");
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                assert_eq!(m["object"], "model");
                assert!(m["created"].as_u64().unwrap() > 1_600_000_000);
                m["id"].as_str().unwrap().to_owned()
            })
            .collect()
    };
    let alice = lariat.get("/v1/models", Some(ALICE)).send().await.unwrap().json().await.unwrap();
    assert_eq!(ids(alice), ["assistant", "other"]);
    let bob = lariat.get("/v1/models", Some(BOB)).send().await.unwrap().json().await.unwrap();
    assert_eq!(ids(bob), ["other"]);
}

#[tokio::test]
async fn without_keys_everyone_is_served_on_loopback() {
    let mock = MockUpstream::start().await;
    mock.always(Reply::text("open"));
    let lariat = Lariat::start(&format!(
        "[providers.mock]\nbase_url = \"{}\"\n[models.assistant]\nchain = [\"mock/m\"]\n",
        mock.url
    ))
    .await;
    assert!(lariat.state.keys.is_open());
    let response = lariat.post("/v1/chat/completions", None).json(&request("assistant", false)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let models: serde_json::Value = lariat.get("/v1/models", None).send().await.unwrap().json().await.unwrap();
    assert_eq!(models["data"][0]["id"], "assistant");
}
