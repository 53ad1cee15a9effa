//! Compaction (SPEC §6): every upstream call fits its target's context budget, the
//! message list stays valid, and a target that still finds a prompt too long gets it
//! once more, compacted tighter.

use lariat::compact::{Tokenizer, count};
use lariat::openai::{Message, ToolDef};
use serde_json::{Value, json};

use crate::harness::*;
use crate::tools::{agent_config, ask};

/// `agent` on `chain` (TOML array), with the `big` tool (about 20 kB per call).
fn config(mock: &MockUpstream, tools: &ToolServer, chain: &str) -> String {
    format!(
        "{}\n[tools.http.big]\ndescription = \"Returns a large log\"\nurl = \"{}/big\"\n",
        agent_config(mock, tools, "").replace("chain = [\"mock/gpt-test\"]", &format!("chain = {chain}")),
        tools.url
    )
}

/// The prompt tokens of an upstream request body, counted as lariat counts them.
fn tokens(body: &Value, tokenizer: Tokenizer) -> usize {
    let messages: Vec<Message> = serde_json::from_value(body["messages"].clone()).unwrap();
    let tools: Vec<ToolDef> = serde_json::from_value(body.get("tools").cloned().unwrap_or(json!([]))).unwrap();
    count(&messages, &tools, tokenizer)
}

fn all_text(body: &Value) -> String {
    body["messages"].to_string()
}

#[tokio::test]
async fn a_loop_of_20_kb_results_fits_a_6000_token_window() {
    let mock = MockUpstream::start().await;
    let tools = ToolServer::start().await;
    let lariat =
        Lariat::start(&config(&mock, &tools, r#"[{ target = "mock/gpt-4o-mini", context_window = 6000 }]"#)).await;
    assert!(big_result().len() >= 20_000);
    for round in 0..6 {
        mock.push(Reply::tool_calls(&[(&format!("up_{round}"), "big", "{}")]));
    }
    mock.push(Reply::text("The logs look healthy."));
    let response = lariat.chat(ask("check the logs six times")).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "The logs look healthy.");
    assert_eq!(tools.hits("/big").len(), 6);

    let received = mock.received();
    assert_eq!(received.len(), 7);
    let budget = 6000 * 3 / 4;
    for (i, request) in received.iter().enumerate() {
        let used = tokens(&request.body, Tokenizer::O200k);
        assert!(used <= budget, "upstream request {i} carries {used} tokens, over the budget of {budget}");
    }
    for request in &received[1..] {
        let text = all_text(&request.body);
        assert!(text.contains("chars omitted]"), "results are cut with the marker: {}", &text[..text.len().min(500)]);
        // Every tool call still has its result, in order.
        let messages = request.body["messages"].as_array().unwrap();
        for (i, m) in messages.iter().enumerate() {
            if let Some(calls) = m["tool_calls"].as_array() {
                for (k, call) in calls.iter().enumerate() {
                    assert_eq!(messages[i + 1 + k]["tool_call_id"], call["id"]);
                }
            }
        }
        assert_eq!(messages.iter().filter(|m| m["role"] == "user").count(), 1, "the user's turn is never dropped");
    }
    // The latest result keeps more than the older ones.
    let last = &received[6].body["messages"];
    let results: Vec<&str> = last
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(results.len(), 6);
    assert!(results[5].len() > results[0].len(), "{:?}", results.iter().map(|r| r.len()).collect::<Vec<_>>());

    let metrics = lariat.get("/metrics", None).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(r#"lariat_compactions_total{model="agent",target="mock/gpt-4o-mini",result="compacted"}"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_context_length_refusal_is_retried_once_compacted_tighter() {
    let mock = MockUpstream::start().await;
    let tools = ToolServer::start().await;
    // No context_window: lariat learns the limit only from the refusal.
    let lariat = Lariat::start(&config(&mock, &tools, r#"["mock/qwen2.5:7b"]"#)).await;
    mock.push(Reply::tool_calls(&[("up_1", "big", "{}"), ("up_2", "big", "{}")]));
    let too_long = json!({"error": {"message": "the request exceeds the available context size (8192 tokens)", "type": "invalid_request_error"}});
    mock.push(Reply::json(400, too_long));
    mock.push(Reply::text("Summarised."));
    let answer: Value = lariat.chat(ask("read the logs")).await.json().await.unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "Summarised.");
    let received = mock.received();
    assert_eq!(received.len(), 3, "one refusal, one retry");
    let (refused, retried) =
        (tokens(&received[1].body, Tokenizer::Estimate), tokens(&received[2].body, Tokenizer::Estimate));
    assert!(retried * 10 <= refused * 7 + 10, "the retry is at most 70% of the refused prompt: {retried} vs {refused}");
    assert!(all_text(&received[2].body).contains("chars omitted]"));
    let metrics = lariat.get("/metrics", None).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"result="tighter"} 1"#), "{metrics}");
}

#[tokio::test]
async fn a_backup_with_a_smaller_window_gets_its_own_compaction() {
    let mock = MockUpstream::start().await;
    let small = MockUpstream::start().await;
    let tools = ToolServer::start().await;
    let chain = r#"[{ target = "mock/gpt-4o", context_window = 128000 }, { target = "small/gpt-4o-mini", context_window = 6000 }]"#;
    let text = config(&mock, &tools, chain)
        .replace("[models.agent]", &format!("[providers.small]\nbase_url = \"{}\"\n\n[models.agent]", small.url));
    let lariat = Lariat::start(&text).await;
    mock.push(Reply::error(503, "overloaded"));
    small.push(Reply::text("From the backup."));
    let log = big_result();
    let body = json!({"model": "agent", "messages": [
        {"role": "user", "content": "fetch the log"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "big", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": log},
        {"role": "assistant", "content": "Fetched."},
        {"role": "user", "content": "and now summarise it"}
    ]});
    let answer: Value = lariat.chat(body).await.json().await.unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "From the backup.");
    let primary = mock.received()[0].body["messages"].clone();
    let result = primary.as_array().unwrap().iter().find(|m| m["role"] == "tool").unwrap();
    assert!(result["content"] == log.as_str(), "the large window got the result whole");
    let backup = &small.received()[0].body;
    assert!(tokens(backup, Tokenizer::O200k) <= 4500);
    let messages = backup["messages"].as_array().unwrap();
    assert_eq!(messages.last().unwrap()["content"], "and now summarise it");
}

#[tokio::test]
async fn a_prompt_that_cannot_fit_is_a_400_with_the_numbers() {
    let mock = MockUpstream::start().await;
    let tools = ToolServer::start().await;
    let lariat =
        Lariat::start(&config(&mock, &tools, r#"[{ target = "mock/gpt-4o-mini", context_window = 2000 }]"#)).await;
    let huge = "word ".repeat(5000);
    let error = expect_error(lariat.chat(ask(&huge)).await, 400, "context_length_exceeded").await;
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("tokens after compaction; the budget is 1500"), "{message}");
    assert!(message.contains("mock/gpt-4o-mini"), "{message}");
    assert!(mock.received().is_empty(), "nothing that cannot fit is sent");
}
