//! The official `openai` Python SDK as a client (non-stream and stream).
//!
//! `.ci/run` creates `.venv` with the SDK. Outside CI a missing SDK skips with a
//! message; under CI=true it fails, so the check can never silently disappear
//! (`venv_program`).

use crate::clients::script_json;
use crate::harness::*;

#[tokio::test]
async fn official_python_sdk_works_against_lariat() {
    let Some(python) = venv_program("python", &["-c", "import openai"]) else { return };
    let mock = MockUpstream::start().await;
    mock.push(Reply::text("Hello from lariat"));
    mock.push(Reply::stream(&["Hel", "lo ", "streamed"]));
    mock.push(Reply::Sse(vec![
        Step::Data(chunk(serde_json::json!({"role": "assistant", "content": "half an"}), None)),
        Step::Sleep(std::time::Duration::from_millis(100)),
        Step::Cut,
    ]));
    let lariat = Lariat::start(&config(&mock, "")).await;
    let result = script_json(python, "sdk/openai_client.py", &lariat).await;
    assert_eq!(result["models"], serde_json::json!(["assistant", "other"]));
    assert_eq!(result["complete"]["content"], "Hello from lariat");
    assert_eq!(result["complete"]["model"], "assistant");
    assert_eq!(result["complete"]["total_tokens"], 15);
    assert_eq!(result["stream"]["content"], "Hello streamed");
    assert_eq!(result["stream"]["ids"], 1);
    assert_eq!(result["stream"]["finish_reason"], "stop");
    assert_eq!(result["unknown_model_status"], 404);
    assert_eq!(result["broken_stream"]["partial"], "half an");
    let error = result["broken_stream"]["error"].as_str().expect("the SDK did not raise on the broken stream");
    assert!(error.contains("mock/gpt-test"), "{error}");
    assert_eq!(mock.received()[0].body["temperature"], 0.5);
}

/// The SDK's `responses.create` (plain, streamed with its event helpers, a function
/// tool round trip with `previous_response_id`), `retrieve` and `delete`.
#[tokio::test]
async fn official_python_sdk_speaks_the_responses_api() {
    let Some(python) = venv_program("python", &["-c", "import openai"]) else { return };
    let mock = MockUpstream::start().await;
    mock.push(Reply::text("Hello."));
    mock.push(Reply::stream_with_usage(&["Str", "eamed."]));
    mock.push(Reply::tool_calls(&[("call_1", "get_weather", r#"{"city":"Oslo"}"#)]));
    mock.push(Reply::text("Clear skies in Oslo."));
    let lariat = Lariat::start(&config(&mock, "")).await;
    let result = script_json(python, "sdk/responses_client.py", &lariat).await;
    let expected = serde_json::json!({
        "plain": {"text": "Hello.", "model": "assistant", "status": "completed", "input_tokens": 10, "output_tokens": 5},
        "stream": {"deltas": ["Str", "eamed."], "first": "response.created", "last": "response.completed",
                   "text": "Streamed.", "total_tokens": 15},
        "call": {"name": "get_weather", "arguments": {"city": "Oslo"}},
        "answered": "Clear skies in Oslo.",
        "fetched": "Clear skies in Oslo.",
        "after_delete": 404,
    });
    assert_eq!(result, expected);
    let last = mock.last_body();
    let tool = last["messages"].as_array().unwrap().iter().find(|m| m["role"] == "tool").unwrap().clone();
    assert_eq!(tool["content"], r#"{"sky": "clear"}"#, "{last}");
    assert_eq!(last["messages"][1]["tool_calls"][0]["id"], "call_1");
}
