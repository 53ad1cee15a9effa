//! Small parts of the API clients rely on: `GET /v1/models/{id}`, the retry advice
//! on final upstream failures, and `lariat check` into a closed pipe.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::harness::*;

#[tokio::test]
async fn a_model_is_retrieved_with_the_list_s_filtering() {
    let mock = MockUpstream::start().await;
    let lariat = Lariat::start(&config(&mock, "")).await;
    let response = lariat.get("/v1/models/assistant", Some(ALICE)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let model: Value = response.json().await.unwrap();
    assert_eq!((model["id"].as_str(), model["object"].as_str()), (Some("assistant"), Some("model")));
    let listed: Value = lariat.get("/v1/models", Some(ALICE)).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["data"][0], model, "the same entry as in the list");
    expect_error(lariat.get("/v1/models/assistant", Some(BOB)).send().await.unwrap(), 404, "model_not_found").await;
    expect_error(lariat.get("/v1/models/nope", Some(ALICE)).send().await.unwrap(), 404, "model_not_found").await;
    expect_error(lariat.get("/v1/models/assistant", None).send().await.unwrap(), 401, "invalid_api_key").await;
}

#[tokio::test]
async fn final_upstream_failures_tell_sdks_not_to_retry_again() {
    let mock = MockUpstream::start().await;
    let lariat = Lariat::start(&config(&mock, "")).await;
    mock.push(Reply::error(500, "boom"));
    let response = lariat.chat(request("assistant", false)).await;
    assert_eq!(response.status(), 502);
    assert_eq!(response.headers()["x-should-retry"], "false");
    assert_eq!(response.headers()["x-lariat-attempts"], "1");

    mock.push(Reply::error(429, "slow down").with_header("retry-after", "120"));
    let response = lariat.chat(request("assistant", false)).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "120", "the upstream's own advice");
    assert!(response.headers().get("x-should-retry").is_none(), "a rate limit may pass");

    let response = lariat.chat(serde_json::json!({"model": "assistant", "messages": []})).await;
    assert_eq!(response.status(), 400);
    assert_eq!(response.headers()["x-lariat-attempts"], "0", "every chat answer says how many attempts it took");
    assert!(response.headers().get("x-should-retry").is_none());
}

#[test]
fn check_into_a_closed_pipe_does_not_panic() {
    let mut text = String::from("[providers.p]\nbase_url = \"http://127.0.0.1:9/v1\"\n");
    for i in 0..300 {
        text.push_str(&format!("[models.m{i}]\nchain = [\"p/model\"]\ntools = []\n"));
    }
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_lariat"))
        .args(["check", "--config"])
        .arg(file.path())
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(first.contains("config ok"), "{first}");
    // The reader is gone (as with `| head -1`); the rest of the output meets a closed pipe.
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "the config is valid: {stderr}");
}

#[tokio::test]
async fn a_made_up_tool_name_leaves_no_trace_in_the_metrics() {
    let (mock, _tools, lariat) = crate::tools::setup("").await;
    mock.push(Reply::tool_calls(&[("up_1", "zz_invented_by_the_model_42", "{}")]));
    mock.push(Reply::text("sorry"));
    let response = lariat.chat(crate::tools::ask("do it")).await;
    assert_eq!(response.status(), 200);
    let metrics = lariat.get("/metrics", None).send().await.unwrap().text().await.unwrap();
    assert!(!metrics.contains("zz_invented_by_the_model_42"), "{metrics}");
    assert!(metrics.contains(r#"lariat_tool_calls_total{tool="unknown",outcome="unknown_tool"} 1"#), "{metrics}");
}

#[test]
fn check_shows_the_loop_chain_and_the_answer_chain() {
    let text = "[providers.local]\nbase_url = \"http://127.0.0.1:9/v1\"\n[providers.cloud]\nbase_url = \"http://127.0.0.1:9/v1\"\n\
        [models.writer]\nchain = [\"cloud/big\", \"local/backup\"]\ntools = []\n\
        [models.researcher]\nchain = [\"local/small\"]\ntools = []\nanswer_with = \"writer\"\nanswer_when = \"tools_used\"\n";
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lariat")).args(["check", "--config"]).arg(file.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains(
            "model researcher: local/small\n  answer (writer, when tools were used): cloud/big → local/backup"
        ),
        "{stdout}"
    );
}
