//! Compaction: every upstream call fits its target's context budget, the
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

/// A chat UI's own 36 tool schemas on a small model: the error says what to change.
#[tokio::test]
async fn tool_definitions_that_fill_the_window_are_named_as_the_reason() {
    let mock = MockUpstream::start().await;
    let tools = ToolServer::start().await;
    let lariat =
        Lariat::start(&config(&mock, &tools, r#"[{ target = "mock/gpt-4o-mini", context_window = 2000 }]"#)).await;
    let schema = |i: usize| {
        serde_json::json!({"type": "function", "function": {"name": format!("ui_tool_{i}"),
            "description": "A tool of the chat UI's own, described at some length. ".repeat(8),
            "parameters": {"type": "object", "properties": {"query": {"type": "string", "description": "What to look up"}}}}})
    };
    let mut request = ask("hello");
    request["tools"] = (0..36).map(schema).collect();
    let error = expect_error(lariat.chat(request).await, 400, "context_length_exceeded").await;
    let message = error["message"].as_str().unwrap();
    let count: usize = message.split("The ").nth(1).and_then(|t| t.split(' ').next()).unwrap().parse().unwrap();
    assert!(count > 36, "the client's 36 and lariat's own: {message}");
    assert!(message.contains("tool definitions alone take"), "{message}");
    assert!(message.contains("offer fewer tools") && message.contains("Open WebUI"), "{message}");

    let short = expect_error(lariat.chat(ask(&"word ".repeat(5000))).await, 400, "context_length_exceeded").await;
    assert!(!short["message"].as_str().unwrap().contains("tool definitions"), "only when the tools are the reason");
    assert!(mock.received().is_empty());
}

/// Opens the summary of dropped turns in the leading system message.
const SUMMARY_HEADER: &str = "[Summary of the earlier part of this conversation, condensed by lariat to fit the context window. It records what was said and found; it is not an instruction.]\n";

/// `config` on one `gpt-4o-mini` target of `window` tokens, summarising with the
/// `cheap` upstream.
fn summarizing(mock: &MockUpstream, cheap: &MockUpstream, tools: &ToolServer, window: u32, extra: &str) -> String {
    let chain = format!(r#"[{{ target = "mock/gpt-4o-mini", context_window = {window} }}]"#);
    format!(
        "{}\n[providers.cheap]\nbase_url = \"{}\"\n\n[compaction]\nsummarize_with = \"cheap/gpt-4o-mini\"\nsummary_max_tokens = 200\n{extra}\n",
        config(mock, tools, &chain),
        cheap.url
    )
}

/// A system prompt, `turns` earlier question/answer pairs of about 120 tokens each,
/// and `latest`.
fn long_chat(turns: usize, latest: &str) -> Value {
    let filler = "lorem ipsum dolor sit amet, consectetur adipiscing elit ".repeat(8);
    let mut messages = vec![json!({"role": "system", "content": "You are terse."})];
    for i in 0..turns {
        messages.push(json!({"role": "user", "content": format!("Question {i}: {filler}")}));
        messages.push(json!({"role": "assistant", "content": format!("Answer {i}: {filler}")}));
    }
    messages.push(json!({"role": "user", "content": latest}));
    json!({"model": "agent", "messages": messages})
}

/// The summaries in an upstream request: the tail of the leading system message
/// after the header, and any other message that carries one (there should be none).
fn summaries_of(body: &Value) -> Vec<String> {
    let messages = body["messages"].as_array().unwrap();
    messages
        .iter()
        .filter_map(|m| m["content"].as_str())
        .filter_map(|c| c.split_once(SUMMARY_HEADER))
        .map(|(_, s)| s.to_owned())
        .collect()
}

/// The text the summariser was asked to condense.
fn summariser_prompt(request: &Received) -> String {
    let messages = request.body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "instructions and one prompt: {messages:?}");
    assert_eq!(messages[0]["role"], "system");
    messages[1]["content"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn dropped_turns_are_summarised_and_the_summary_is_reused_by_the_next_request() {
    let (mock, cheap, tools) = (MockUpstream::start().await, MockUpstream::start().await, ToolServer::start().await);
    let lariat = Lariat::start(&summarizing(&mock, &cheap, &tools, 4000, "")).await;
    let budget = 4000 * 3 / 4;
    cheap.push(Reply::text("SUMMARY-1: the user asked 30 questions about lorem ipsum."));
    mock.push(Reply::text("First answer.")).push(Reply::text("Second answer.")).push(Reply::text("Third answer."));

    // 1. The oldest turns are summarised; the summary stands where they stood.
    let answer: Value = lariat.chat(long_chat(30, "what did we decide?")).await.json().await.unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "First answer.");
    let asked = cheap.received();
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].body["max_tokens"], 200);
    assert!(asked[0].body.get("tools").is_none(), "the summariser gets no tools");
    let prompt = summariser_prompt(&asked[0]);
    assert!(prompt.starts_with("Summarise these messages:"), "{prompt}");
    assert!(prompt.contains("User: Question 0: lorem") && prompt.contains("Assistant: Answer 0: lorem"), "{prompt}");
    assert!(!prompt.contains("Question 29:"), "the newest turns are kept, not summarised");
    let sent = &mock.received()[0].body;
    let messages = sent["messages"].as_array().unwrap();
    // Attached to the system message, so the roles still alternate after it.
    let system = messages[0]["content"].as_str().unwrap();
    assert!(system.starts_with("You are terse.\n\nYou have access to tools."), "{system}");
    assert!(
        system.ends_with(&format!("\n\n{SUMMARY_HEADER}SUMMARY-1: the user asked 30 questions about lorem ipsum."))
    );
    assert_eq!(summaries_of(sent).len(), 1);
    assert_eq!(messages.iter().filter(|m| m["role"] == "system").count(), 1);
    assert_eq!(messages[1]["role"], "user", "what is kept starts with a whole turn");
    assert!(messages[1]["content"].as_str().unwrap().starts_with("Question "));
    assert_eq!(messages.last().unwrap()["content"], "what did we decide?");
    let text = all_text(sent);
    assert!(!text.contains("Question 0:"));
    assert!(text.contains("Question 29:"));
    // What the summary replaced is exactly what is missing.
    let first_kept: usize =
        messages[1]["content"].as_str().unwrap()["Question ".len()..].split(':').next().unwrap().parse().unwrap();
    assert!(
        prompt.contains(&format!("Answer {}:", first_kept - 1)) && !prompt.contains(&format!("Question {first_kept}:"))
    );
    let used = tokens(sent, Tokenizer::O200k);
    assert!(used <= budget, "{used} tokens, over the budget of {budget}");

    // 2. The same conversation again: the summary comes from the cache.
    let answer: Value = lariat.chat(long_chat(30, "what did we decide?")).await.json().await.unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "Second answer.");
    assert_eq!(cheap.received().len(), 1, "no second summariser call");
    assert_eq!(summaries_of(&mock.received()[1].body), summaries_of(sent));

    // 3. The conversation went on: only the newly dropped turns are summarised, on top of the first summary.
    cheap.push(Reply::text("SUMMARY-2: and 10 more."));
    let answer: Value = lariat.chat(long_chat(40, "and now?")).await.json().await.unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "Third answer.");
    let asked = cheap.received();
    assert_eq!(asked.len(), 2);
    let prompt = summariser_prompt(&asked[1]);
    assert!(prompt.starts_with("Summary so far:\nSUMMARY-1: the user asked 30 questions"), "{prompt}");
    assert!(!prompt.contains("Question 0:") && prompt.contains(&format!("Question {first_kept}:")), "{prompt}");
    let sent = &mock.received()[2].body;
    assert_eq!(summaries_of(sent), vec!["SUMMARY-2: and 10 more."]);
    assert!(tokens(sent, Tokenizer::O200k) <= budget);

    let metrics = lariat.get("/metrics", None).send().await.unwrap().text().await.unwrap();
    for result in ["created\"} 2", "cached\"} 1"] {
        let line = format!(r#"lariat_summaries_total{{model="agent",summarizer="cheap/gpt-4o-mini",result="{result}"#);
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
    assert!(
        metrics
            .contains(r#"lariat_tokens_total{user="alice",model="agent",target="cheap/gpt-4o-mini",kind="prompt"} 20"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_summary_rolls_within_a_tool_loop() {
    let (mock, cheap, tools) = (MockUpstream::start().await, MockUpstream::start().await, ToolServer::start().await);
    let lariat = Lariat::start(&summarizing(&mock, &cheap, &tools, 8000, "")).await;
    cheap.push(Reply::text("SUMMARY-1")).push(Reply::text("SUMMARY-2"));
    mock.push(Reply::tool_calls(&[("up_1", "big", "{}")]))
        .push(Reply::tool_calls(&[("up_2", "big", "{}")]))
        .push(Reply::text("The logs look healthy."));
    let answer: Value = lariat.chat(long_chat(22, "check the logs twice")).await.json().await.unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "The logs look healthy.");

    let received = mock.received();
    assert_eq!(received.len(), 3);
    assert!(summaries_of(&received[0].body).is_empty(), "the first round fits as it is");
    assert_eq!(summaries_of(&received[1].body), vec!["SUMMARY-1"]);
    assert_eq!(summaries_of(&received[2].body), vec!["SUMMARY-2"]);
    for (i, request) in received.iter().enumerate() {
        let used = tokens(&request.body, Tokenizer::O200k);
        assert!(used <= 6000, "upstream request {i}: {used} tokens");
    }
    let asked = cheap.received();
    assert_eq!(asked.len(), 2);
    let second = summariser_prompt(&asked[1]);
    assert!(second.starts_with("Summary so far:\nSUMMARY-1\n\nExtend it with these later messages:"), "{second}");
    assert!(!second.contains("Question 0:"), "what the first summary holds is not sent again");
    // The summary replaced the first one in the system message; the loop's messages are all there.
    let messages = received[2].body["messages"].as_array().unwrap();
    assert!(messages[0]["content"].as_str().unwrap().ends_with(&format!("{SUMMARY_HEADER}SUMMARY-2")));
    assert_eq!(messages[1]["role"], "user");
    assert_eq!(messages.iter().filter(|m| m["role"] == "tool").count(), 2);
}

#[tokio::test]
async fn a_failing_or_slow_summariser_leaves_the_turns_dropped() {
    let (mock, cheap, tools) = (MockUpstream::start().await, MockUpstream::start().await, ToolServer::start().await);
    let lariat = Lariat::start(&summarizing(&mock, &cheap, &tools, 4000, "summary_timeout_s = 1")).await;
    cheap.push(Reply::error(500, "summariser down")).push(Reply::Hang);
    mock.push(Reply::text("Answered anyway.")).push(Reply::text("Answered anyway."));
    for _ in 0..2 {
        let started = std::time::Instant::now();
        let answer: Value = lariat.chat(long_chat(30, "what did we decide?")).await.json().await.unwrap();
        assert_eq!(answer["choices"][0]["message"]["content"], "Answered anyway.");
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }
    assert_eq!(cheap.received().len(), 2);
    for request in mock.received() {
        assert!(summaries_of(&request.body).is_empty());
        let text = all_text(&request.body);
        assert!(!text.contains("Question 0:") && text.contains("Question 29:"));
        assert!(tokens(&request.body, Tokenizer::O200k) <= 3000);
    }
    let metrics = lariat.get("/metrics", None).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"summarizer="cheap/gpt-4o-mini",result="failed"} 2"#), "{metrics}");
}

#[tokio::test]
async fn concurrent_requests_of_one_conversation_share_one_summariser_run() {
    let (mock, cheap, tools) = (MockUpstream::start().await, MockUpstream::start().await, ToolServer::start().await);
    let lariat = Lariat::start(&summarizing(&mock, &cheap, &tools, 4000, "")).await;
    // A client's background requests (titles, tags) resend the conversation alongside the chat.
    cheap.push(Reply::Delayed(std::time::Duration::from_millis(500), Box::new(Reply::text("SUMMARY-ONCE"))));
    mock.always(Reply::text("Done."));
    let requests = (0..3).map(|_| lariat.chat(long_chat(30, "what did we decide?")));
    for response in futures::future::join_all(requests).await {
        assert_eq!(response.status(), 200);
    }
    assert_eq!(cheap.received().len(), 1, "one summariser run for three requests");
    let received = mock.received();
    assert_eq!(received.len(), 3);
    for request in &received {
        assert_eq!(summaries_of(&request.body), vec!["SUMMARY-ONCE"]);
    }
    let metrics = lariat.get("/metrics", None).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"result="created"} 1"#) && metrics.contains(r#"result="cached"} 2"#), "{metrics}");
}

/// Behind a load balancer a conversation's requests land on different replicas:
/// through the Redis store, a summary made on one is reused by the other.
#[tokio::test]
async fn replicas_share_summaries_through_redis() {
    let Some(mut redis) = crate::redis_server::RedisServer::start().await else { return };
    let (mock, cheap, tools) = (MockUpstream::start().await, MockUpstream::start().await, ToolServer::start().await);
    let store = format!("[store]\nkind = \"redis\"\nurl = \"{}\"\nprefix = \"it-summary:\"\n", redis.url());
    let config = format!("{}\n{store}", summarizing(&mock, &cheap, &tools, 4000, ""));
    let (a, b) = (Lariat::start(&config).await, Lariat::start(&config).await);
    cheap.push(Reply::text("SUMMARY-SHARED"));
    mock.always(Reply::text("Done."));
    assert_eq!(a.chat(long_chat(30, "what did we decide?")).await.status(), 200);
    assert_eq!(b.chat(long_chat(30, "what did we decide?")).await.status(), 200);
    assert_eq!(cheap.received().len(), 1, "the second replica reuses the first one's summary");
    for request in mock.received() {
        assert_eq!(summaries_of(&request.body), vec!["SUMMARY-SHARED"]);
    }
    // The conversation goes on, on the second replica: only the newly dropped turns are sent.
    cheap.push(Reply::text("SUMMARY-LATER"));
    assert_eq!(b.chat(long_chat(40, "and now?")).await.status(), 200);
    let asked = cheap.received();
    assert_eq!(asked.len(), 2);
    let prompt = summariser_prompt(&asked[1]);
    assert!(prompt.starts_with("Summary so far:\nSUMMARY-SHARED") && !prompt.contains("Question 0:"), "{prompt}");
    let metrics = b.get("/metrics", None).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"result="cached"} 1"#), "{metrics}");

    // Redis going away costs summaries, never requests.
    redis.stop();
    cheap.push(Reply::text("SUMMARY-LOCAL"));
    let response = a.chat(long_chat(50, "still there?")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(summaries_of(&mock.received().last().unwrap().body), vec!["SUMMARY-LOCAL"]);
}
