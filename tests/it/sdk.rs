//! The official `openai` Python SDK as a client (non-stream and stream).
//!
//! `.ci/run` creates `.venv` with the SDK. Outside CI a missing SDK skips with a
//! message; under CI=true it fails, so the check can never silently disappear
//! (`venv_program`).

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
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/openai_client.py");
    let out = tokio::process::Command::new(python)
        .arg(script)
        .env("LARIAT_URL", format!("{}/v1", lariat.url))
        .env("LARIAT_KEY", ALICE)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
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
