//! The engine driven against a scripted in-memory upstream on tokio's paused clock:
//! rounds, tool runs, suspension, the confirmation gate, the round limit, streams
//! and failures, seen as the events the loop emits.

mod answer;
mod gate;
mod script;

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{Ending, Event, Finished, ToolOutcome};
use crate::openai::FinishReason;
use crate::tools::testing;
use script::{Answer, Rig, ask, calls, stream, text};

const SECOND: Duration = Duration::from_secs(1);

fn finished(events: &[Event]) -> &Finished {
    match events.last() {
        Some(Event::Finished(finished)) => finished,
        other => panic!("the loop did not finish: {other:?}"),
    }
}

/// A short name per event, to check their order.
fn names(events: &[Event]) -> Vec<&'static str> {
    events
        .iter()
        .map(|e| match e {
            Event::Started { .. } => "started",
            Event::Delta(_) => "delta",
            Event::ClientCall(_) => "client_call",
            Event::RoundStarted { .. } => "round_started",
            Event::RoundFinished { .. } => "round_finished",
            Event::ToolStarted { .. } => "tool_started",
            Event::ToolFinished { .. } => "tool_finished",
            Event::SourceRead { .. } => "source_read",
            Event::Fallback { .. } => "fallback",
            Event::Compacted { .. } => "compacted",
            Event::HandedOver { .. } => "handed_over",
            Event::ConfirmationAsked { .. } => "confirmation_asked",
            Event::Suspended { .. } => "suspended",
            Event::Finished(_) => "finished",
            Event::Failed(_) => "failed",
        })
        .collect()
}

fn tool_outcomes(events: &[Event]) -> Vec<(String, ToolOutcome)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ToolFinished { name, outcome, .. } => Some((name.clone(), *outcome)),
            _ => None,
        })
        .collect()
}

fn echo() -> crate::tools::Tool {
    testing::tool("lookup", Duration::ZERO, 30 * SECOND, Ok("found it")).0
}

#[tokio::test(start_paused = true)]
async fn without_server_tools_the_answer_is_relayed_in_one_round() {
    let rig = Rig::new(Vec::new(), "");
    rig.script.push(text("Hello!"));
    let events = rig.run(ask("hi")).await;
    assert_eq!(names(&events), ["round_started", "started", "finished"]);
    let done = finished(&events);
    assert_eq!(done.message.content, "Hello!");
    assert_eq!((done.rounds, done.ended_by), (0, Ending::Answer));
    let sent = rig.script.received();
    assert!(sent[0].tools.is_empty(), "no tools offered in a relay");
    assert_eq!(sent[0].message(0), &json!({"role": "user", "content": "hi"}), "no overlay without tools or prompt");
}

#[tokio::test(start_paused = true)]
async fn a_server_call_runs_and_its_result_goes_back_to_the_model() {
    let rig = Rig::new(vec![echo()], "");
    rig.script.push(calls(&[("lookup", "{\"q\": \"x\"}")]));
    rig.script.push(text("It is x."));
    let events = rig.run(ask("look it up")).await;
    assert_eq!(
        names(&events),
        ["round_started", "started", "round_finished", "tool_started", "tool_finished", "round_started", "finished"]
    );
    assert!(
        matches!(&events[3], Event::ToolStarted { name, arguments, .. } if name == "lookup" && arguments == "{\"q\":\"x\"}")
    );
    let done = finished(&events);
    assert_eq!((done.rounds, done.message.content.text().as_ref()), (1, "It is x."));
    assert_eq!(done.usage.as_ref().map(|u| u.total_tokens), Some(30), "usage is summed over both rounds");
    let second = &rig.script.received()[1];
    assert_eq!(second.tools, ["lookup"]);
    assert_eq!(second.message(-2)["tool_calls"][0]["id"], "up_0");
    assert_eq!(second.message(-1), &json!({"role": "tool", "tool_call_id": "up_0", "content": "found it"}));
    assert!(second.message(0)["content"].as_str().unwrap().contains("You have access to tools"));
}

#[tokio::test(start_paused = true)]
async fn the_calls_of_a_round_run_concurrently() {
    let (a, a_runs) = testing::tool("slow_a", 5 * SECOND, 30 * SECOND, Ok("a"));
    let (b, b_runs) = testing::tool("slow_b", 5 * SECOND, 30 * SECOND, Ok("b"));
    let rig = Rig::new(vec![a, b], "");
    rig.script.push(calls(&[("slow_a", "{}"), ("slow_b", "{}")]));
    rig.script.push(text("done"));
    let started = Instant::now();
    let events = rig.run(ask("both")).await;
    assert_eq!(started.elapsed(), 5 * SECOND, "two 5 s tools take 5 s together");
    assert_eq!((a_runs.finished(), b_runs.finished()), (1, 1));
    let results: Vec<Value> = rig.script.received()[1].messages.as_array().unwrap()[3..].to_vec();
    assert_eq!(results[0]["content"], "a");
    assert_eq!(results[1]["content"], "b");
    assert_eq!(finished(&events).rounds, 1);
}

#[tokio::test(start_paused = true)]
async fn a_failing_or_slow_tool_becomes_a_result_not_an_error() {
    let (broken, _) = testing::tool("broken", Duration::ZERO, 30 * SECOND, Err("disk full"));
    let (hang, hang_runs) = testing::tool("hang", 3600 * SECOND, 2 * SECOND, Ok("never"));
    let rig = Rig::new(vec![broken, hang], "");
    rig.script.push(calls(&[("broken", "{}"), ("hang", "{}")]));
    rig.script.push(text("sorry"));
    let events = rig.run(ask("try")).await;
    let outcomes = tool_outcomes(&events);
    assert!(outcomes.contains(&("broken".into(), ToolOutcome::Error)));
    assert!(outcomes.contains(&("hang".into(), ToolOutcome::Timeout)));
    assert_eq!(hang_runs.finished(), 0);
    let sent = &rig.script.received()[1];
    assert_eq!(sent.message(-2)["content"], "Tool error: disk full");
    assert!(sent.message(-1)["content"].as_str().unwrap().contains("timed out after 2s"));
    assert_eq!(finished(&events).message.content, "sorry");
}

#[tokio::test(start_paused = true)]
async fn a_made_up_tool_or_bad_arguments_tell_the_model_what_was_wrong() {
    let rig = Rig::new(vec![echo()], "");
    rig.script.push(calls(&[("invented_tool_9", "{}"), ("lookup", "[1, 2]")]));
    rig.script.push(text("ok"));
    let events = rig.run(ask("go")).await;
    let outcomes = tool_outcomes(&events);
    assert_eq!(
        outcomes,
        [("invented_tool_9".into(), ToolOutcome::UnknownTool), ("lookup".into(), ToolOutcome::BadArguments)]
    );
    let sent = &rig.script.received()[1];
    assert!(sent.message(-2)["content"].as_str().unwrap().contains("there is no tool named `invented_tool_9`"));
    assert!(sent.message(-1)["content"].as_str().unwrap().contains("must be a JSON object, but got an array"));
    let metrics = rig.agent.metrics.encode();
    assert!(!metrics.contains("invented_tool_9"), "a made-up name is no label value:\n{metrics}");
    assert!(metrics.contains("tool=\"unknown\",outcome=\"unknown_tool\""), "{metrics}");
}

#[tokio::test(start_paused = true)]
async fn at_the_round_limit_the_model_answers_without_tools() {
    let rig = Rig::new(vec![echo()], "");
    for _ in 0..3 {
        rig.script.push(calls(&[("lookup", "{}")]));
    }
    rig.script.push(calls(&[("lookup", "{}")]));
    let events = rig.run(ask("loop forever")).await;
    let done = finished(&events);
    assert_eq!((done.rounds, done.ended_by, &done.finish_reason), (3, Ending::RoundLimit, &FinishReason::Stop));
    assert!(done.message.tool_calls.is_none(), "the calls of the last round are not handed out");
    let sent = rig.script.received();
    assert_eq!(sent.len(), 4, "max_rounds = 3, then one words-only call");
    assert_eq!(sent[3].tool_choice, Some(json!("none")));
    assert!(sent[..3].iter().all(|r| r.tool_choice.is_none()));
}

#[tokio::test(start_paused = true)]
async fn a_forced_tool_choice_relaxes_after_one_round() {
    let rig = Rig::new(vec![echo()], "");
    rig.script.push(calls(&[("lookup", "{}")]));
    rig.script.push(text("done"));
    let mut body = ask("go");
    body["tool_choice"] = json!("required");
    rig.run(body).await;
    let sent = rig.script.received();
    assert_eq!(sent[0].tool_choice, Some(json!("required")));
    assert_eq!(sent[1].tool_choice, Some(json!("auto")));
}

#[tokio::test(start_paused = true)]
async fn client_calls_suspend_the_loop_and_the_round_comes_back_whole() {
    let rig = Rig::new(vec![echo()], "");
    rig.script.push(calls(&[("lookup", "{}"), ("web_search", "{\"q\":\"rust\"}")]));
    let client_tool =
        json!([{"type": "function", "function": {"name": "web_search", "parameters": {"type": "object"}}}]);
    let mut body = ask("search");
    body["tools"] = client_tool.clone();
    let events = rig.run(body).await;
    let done = finished(&events);
    assert_eq!((done.ended_by, &done.finish_reason), (Ending::ClientTools, &FinishReason::ToolCalls));
    let handed = done.message.tool_calls.as_ref().unwrap();
    assert_eq!(handed.len(), 1, "only the client's call goes out");
    assert_eq!(handed[0].function.name, "web_search");
    assert!(handed[0].id.starts_with("call_"), "under lariat's id");
    assert!(names(&events).contains(&"suspended"));
    assert_eq!(tool_outcomes(&events), [("lookup".into(), ToolOutcome::Ok)], "the server call ran meanwhile");

    // The client comes back with its result: the upstream sees the whole round.
    rig.script.push(text("Rust it is."));
    let id = handed[0].id.clone();
    let back = json!({"tools": client_tool, "messages": [
        {"role": "user", "content": "search"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": id, "type": "function", "function": {"name": "web_search", "arguments": "{\"q\":\"rust\"}"}}]},
        {"role": "tool", "tool_call_id": id, "content": "rust-lang.org"}
    ]});
    let events = rig.run(back).await;
    assert_eq!(finished(&events).rounds, 1, "the suspended round's count carries over");
    let sent = rig.script.received().pop().unwrap();
    let n = sent.messages.as_array().unwrap().len();
    assert_eq!(sent.message(-3)["tool_calls"].as_array().unwrap().len(), 2, "server and client call");
    assert_eq!(sent.message(-2), &json!({"role": "tool", "tool_call_id": "up_0", "content": "found it"}));
    assert_eq!(sent.message(-1)["content"], "rust-lang.org");
    assert!(n >= 4);
}

#[tokio::test(start_paused = true)]
async fn streamed_rounds_emit_text_as_it_arrives_and_separate_rounds() {
    let rig = Rig::new(vec![echo()], "");
    rig.script.push(Answer::Chunks(
        vec![
            json!({"role": "assistant", "content": "Let me look."}),
            json!({"tool_calls": [{"index": 0, "id": "up_0", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]}),
        ],
        "tool_calls",
    ));
    rig.script.push(stream(&["Found ", "it."]));
    let mut body = ask("look");
    body["stream"] = json!(true);
    let events = rig.run(body).await;
    let texts: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::Delta(d) => d.text.as_deref(),
            _ => None,
        })
        .collect();
    assert_eq!(texts, ["Let me look.", "\n\nFound ", "it."]);
    assert!(events.iter().all(|e| !matches!(e, Event::Delta(d) if !d.calls.is_empty())), "server calls stay hidden");
    assert!(rig.script.received().iter().all(|r| r.stream));
    assert_eq!(finished(&events).message.content, "\n\nFound it.");
}

#[tokio::test(start_paused = true)]
async fn a_failure_before_the_start_is_the_first_event() {
    let rig = Rig::new(Vec::new(), "");
    rig.script.push(Answer::Fail);
    let events = rig.run(ask("hi")).await;
    assert_eq!(names(&events), ["round_started", "failed"], "no Started: the face can still answer with a status");
}

#[tokio::test(start_paused = true)]
async fn a_stream_cut_after_the_start_fails_after_what_arrived() {
    let rig = Rig::new(Vec::new(), "");
    rig.script.push(Answer::Cut(vec![json!({"role": "assistant", "content": "Half an ans"})]));
    let mut body = ask("hi");
    body["stream"] = json!(true);
    let events = rig.run(body).await;
    assert_eq!(names(&events), ["round_started", "started", "delta", "failed"]);
    let Some(Event::Failed(error)) = events.last() else { unreachable!() };
    assert!(error.to_string().contains("connection reset"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn a_failing_second_round_fails_the_started_loop() {
    let rig = Rig::new(vec![echo()], "");
    rig.script.push(calls(&[("lookup", "{}")]));
    rig.script.push(Answer::Fail);
    let events = rig.run(ask("go")).await;
    assert_eq!(names(&events)[..2], ["round_started", "started"]);
    assert!(matches!(events.last(), Some(Event::Failed(super::Error::Upstream(_)))));
}

#[tokio::test(start_paused = true)]
async fn dropping_the_events_cancels_the_tools_in_flight() {
    let (slow, runs) = testing::tool("slow", 60 * SECOND, 600 * SECOND, Ok("late"));
    let rig = Rig::new(vec![slow], "");
    rig.script.push(calls(&[("slow", "{}")]));
    rig.script.push(text("never asked"));
    let mut events = rig.events(ask("go")).await;
    while let Some(event) = events.next().await {
        if matches!(event, Event::ToolStarted { .. }) {
            break;
        }
    }
    drop(events);
    tokio::time::sleep(120 * SECOND).await;
    assert_eq!((runs.runs(), runs.finished()), (1, 0), "the tool was cancelled with the request");
    assert_eq!(rig.script.left(), 1, "no further upstream call");
}

#[tokio::test(start_paused = true)]
async fn a_slow_upstream_is_waited_for_on_tokio_s_clock() {
    let rig = Rig::new(Vec::new(), "");
    rig.script.push(Answer::After(90 * SECOND, Box::new(text("finally"))));
    let started = Instant::now();
    let events = rig.run(ask("hi")).await;
    assert_eq!(started.elapsed(), 90 * SECOND);
    assert_eq!(finished(&events).message.content, "finally");
}

#[tokio::test(start_paused = true)]
async fn server_tools_off_by_tool_choice_none_make_a_relay() {
    let rig = Rig::new(vec![echo()], "");
    rig.script.push(text("words only"));
    let mut body = ask("hi");
    body["tool_choice"] = json!("none");
    rig.run(body).await;
    let sent = &rig.script.received()[0];
    assert!(sent.tools.is_empty());
    assert_eq!(sent.tool_choice, Some(json!("none")));
}

#[tokio::test(start_paused = true)]
async fn a_client_tool_named_like_a_server_tool_is_refused_before_anything_runs() {
    let rig = Rig::new(vec![echo()], "");
    let mut body = ask("hi");
    body["tools"] = json!([{"type": "function", "function": {"name": "lookup"}}]);
    let refused = rig.agent.run(rig.request(body)).await;
    assert!(matches!(refused, Err(super::Error::BadRequest { param: "tools", .. })));
    assert!(rig.script.received().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_compaction_before_a_call_is_announced() {
    let rig = Rig::new(vec![echo()], "[compaction]\ndefault_context_window = 2000\n");
    rig.script.push(calls(&[("lookup", "{}")]));
    rig.script.push(text("short now"));
    let old_turns: Vec<Value> = (0..40)
        .flat_map(|i| {
            [
                json!({"role": "user", "content": format!("question {i}: {}", "words ".repeat(40))}),
                json!({"role": "assistant", "content": format!("answer {i}: {}", "more words ".repeat(40))}),
            ]
        })
        .chain([json!({"role": "user", "content": "and now?"})])
        .collect();
    let events = rig.run(json!({"messages": old_turns})).await;
    let compacted: Vec<(usize, usize, usize)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Compacted { target, tokens_before, tokens_after, dropped_messages } => {
                assert_eq!(&**target, "mock/model-a");
                Some((*tokens_before, *tokens_after, *dropped_messages))
            }
            _ => None,
        })
        .collect();
    assert!(!compacted.is_empty(), "{:?}", names(&events));
    let (before, after, dropped) = compacted[0];
    assert!(after < before && after <= 1500 && dropped > 0, "{compacted:?}");
    assert_eq!(names(&events)[..3], ["round_started", "compacted", "started"], "progress may precede the start");
    let first = &rig.script.received()[0];
    assert_eq!(first.message(-1)["content"], "and now?", "the latest question is never dropped");
}

#[tokio::test(start_paused = true)]
async fn a_chat_ui_s_background_task_gets_no_server_tools() {
    let rig = Rig::new(vec![echo()], "");
    rig.script.push(text("{\"title\": \"Weather\"}"));
    let task = "### Task:\nGenerate a concise title for the chat history.\n### Chat History:\nUSER: weather?";
    let events = rig.run(ask(task)).await;
    assert_eq!(finished(&events).message.content, "{\"title\": \"Weather\"}");
    let sent = &rig.script.received()[0];
    assert!(sent.tools.is_empty(), "nothing a title request could run");
    assert!(!sent.message(0)["content"].as_str().unwrap_or_default().contains("You have access to tools"));

    // The same words streamed, or with the client's own tools, are a chat.
    rig.script.push(text("ok"));
    let mut body = ask(task);
    body["stream"] = json!(true);
    rig.run(body).await;
    assert_eq!(rig.script.received()[1].tools, ["lookup"]);
}
