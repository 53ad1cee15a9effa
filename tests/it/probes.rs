//! What operators see of health probes and model listings: probes stay out of INFO
//! logs, a 503 from `/ready` is one line naming what is not ready, and a model's
//! `description` reaches the clients that list models.

use serde_json::Value;

use crate::cli::Child;
use crate::harness::*;

fn json_lines(logs: &str) -> Vec<Value> {
    logs.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).collect()
}

fn path_of(line: &Value) -> Option<&str> {
    line["spans"].as_array()?.iter().find_map(|s| s["path"].as_str())
}

/// Hundreds of `/health`, `/ready` and `/metrics` requests leave the INFO log as it
/// was; an ordinary request is still logged at INFO (so the test can see lines).
#[tokio::test]
async fn a_probe_storm_stays_out_of_the_info_log() {
    let mock = MockUpstream::start().await;
    mock.push(Reply::text("hi"));
    let child = Child::start_logging(&config(&mock, ""), "json", "info").await;
    for _ in 0..200 {
        if client().get(format!("{}/ready", child.url)).send().await.unwrap().status() == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    for _ in 0..150 {
        for path in ["/health", "/ready", "/metrics"] {
            let response = client().get(format!("{}{path}", child.url)).send().await.unwrap();
            assert_eq!(response.status(), 200, "{path}");
        }
    }
    let chat = client()
        .post(format!("{}/v1/chat/completions", child.url))
        .bearer_auth(ALICE)
        .json(&request("assistant", false))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 200);
    child.terminate();
    let (status, logs) = child.wait();
    assert!(status.success(), "{logs}");
    let lines = json_lines(&logs);
    let probes: Vec<&Value> =
        lines.iter().filter(|l| matches!(path_of(l), Some("/health" | "/ready" | "/metrics"))).collect();
    assert!(probes.is_empty(), "{} probe lines at INFO, e.g. {:?}", probes.len(), probes.first());
    assert!(
        lines.iter().any(|l| path_of(l) == Some("/v1/chat/completions")
            && l["level"] == "INFO"
            && l["message"] == "finished processing request"),
        "the chat request's access line is missing:\n{logs}"
    );
    assert!(lines.len() < 20, "the log grew with the probes: {} lines\n{logs}", lines.len());
}

/// While a tool source is still starting, `/ready` answers 503 naming it, and the
/// log has exactly one line for that request (not the error and a trace failure).
#[tokio::test]
async fn a_503_from_ready_is_one_log_line_naming_what_is_not_ready() {
    let mock = MockUpstream::start().await;
    // `sleep` never answers the MCP handshake, so the source stays "starting".
    let sources = "[tools.mcp.sluggish]\ncommand = \"sleep\"\nargs = [\"60\"]\n";
    let child = Child::start_logging(&config(&mock, sources), "json", "info").await;
    let response =
        client().get(format!("{}/ready", child.url)).header("x-request-id", "ready-probe").send().await.unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("tool source `sluggish` (starting)"), "{message}");
    child.terminate();
    let (_, logs) = child.wait();
    let lines: Vec<Value> = json_lines(&logs).into_iter().filter(|l| l["spans"][0]["id"] == "ready-probe").collect();
    assert_eq!(lines.len(), 1, "one line per failed probe:\n{logs}");
    assert_eq!(lines[0]["level"], "WARN");
    assert!(lines[0]["error"].as_str().unwrap().contains("sluggish"), "{}", lines[0]);
}

/// A configured `description` is part of the model's entry, listed and retrieved;
/// a model without one has no such field.
#[tokio::test]
async fn model_descriptions_reach_the_model_list() {
    let mock = MockUpstream::start().await;
    let text = config(&mock, "")
        .replace("[models.other]\n", "[models.other]\ndescription = \"The other model: cheap, no tools\"\n");
    let lariat = Lariat::start(&text).await;
    let listed: Value = lariat.get("/v1/models", Some(ALICE)).send().await.unwrap().json().await.unwrap();
    let entry = |id: &str| listed["data"].as_array().unwrap().iter().find(|m| m["id"] == id).cloned().unwrap();
    assert_eq!(entry("other")["description"], "The other model: cheap, no tools");
    assert!(entry("assistant").get("description").is_none(), "{listed}");
    let one: Value = lariat.get("/v1/models/other", Some(BOB)).send().await.unwrap().json().await.unwrap();
    assert_eq!(one["description"], "The other model: cheap, no tools");
}
