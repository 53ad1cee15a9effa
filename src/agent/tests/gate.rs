//! The confirmation gate, driven through the engine: the question, the human's
//! reply, and what runs (exactly once, or never).

use std::time::Duration;

use serde_json::{Value, json};

use super::script::{Rig, calls, text};
use super::{Ending, Event, finished, names};
use crate::agent::confirm;
use crate::tools::testing;

const GATE: &str = "[confirm]\ntools = [\"delete_*\"]\nttl_s = 60\n";

fn rig() -> (Rig, std::sync::Arc<crate::tools::testing::Scripted>) {
    let (tool, runs) = testing::tool("delete_file", Duration::ZERO, Duration::from_secs(30), Ok("deleted"));
    let (safe, _) = testing::tool("lookup", Duration::ZERO, Duration::from_secs(30), Ok("found"));
    (Rig::new(vec![tool, safe], GATE), runs)
}

/// Asks to delete; returns the question the client got.
async fn asked(rig: &Rig) -> String {
    rig.script.push(calls(&[("lookup", "{}"), ("delete_file", "{\"path\": \"/tmp/x\"}")]));
    rig.script.push(text("Shall I delete /tmp/x?"));
    let events = rig.run(json!({"messages": [{"role": "user", "content": "delete /tmp/x"}]})).await;
    let done = finished(&events);
    assert_eq!(done.ended_by, Ending::Confirmation);
    let confirmation = done.confirmation.as_ref().unwrap();
    assert_eq!(confirmation.held.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["delete_file"]);
    assert!(names(&events).contains(&"confirmation_asked"));
    done.message.content.text().into_owned()
}

fn reply(question: &str, answer: &str) -> Value {
    json!({"messages": [
        {"role": "user", "content": "delete /tmp/x"},
        {"role": "assistant", "content": question},
        {"role": "user", "content": answer}
    ]})
}

#[tokio::test(start_paused = true)]
async fn a_held_call_waits_and_the_model_phrases_the_question() {
    let (rig, runs) = rig();
    let question = asked(&rig).await;
    assert_eq!(runs.runs(), 0, "held, not run");
    assert!(question.starts_with("Shall I delete /tmp/x?"));
    assert!(
        confirm::find_reply(&serde_json::from_value::<Vec<_>>(reply(&question, "yes")["messages"].clone()).unwrap())
            .is_some()
    );
    let phrasing = &rig.script.received()[1];
    assert_eq!(phrasing.tool_choice, Some(json!("none")), "the question is words only");
    assert_eq!(phrasing.message(-2)["content"], "found", "the round's other call ran");
    assert_eq!(phrasing.message(-1)["content"], confirm::PLACEHOLDER);
}

#[tokio::test(start_paused = true)]
async fn yes_runs_the_held_call_once_and_a_replay_runs_nothing() {
    let (rig, runs) = rig();
    let question = asked(&rig).await;
    rig.script.push(text("Deleted."));
    let events = rig.run(reply(&question, "Yes!")).await;
    assert_eq!(names(&events)[0], "started", "the response starts before the held call runs");
    assert_eq!(runs.runs(), 1);
    let done = finished(&events);
    assert_eq!((done.message.content.text().as_ref(), done.rounds), ("Deleted.", 1));
    let resumed = rig.script.received().pop().unwrap();
    assert_eq!(resumed.message(-1), &json!({"role": "tool", "tool_call_id": "up_1", "content": "deleted"}));
    assert_eq!(resumed.message(-2), &json!({"role": "tool", "tool_call_id": "up_0", "content": "found"}));

    let calls_before = rig.script.received().len();
    let replay = rig.run(reply(&question, "yes")).await;
    assert_eq!(runs.runs(), 1, "a replayed yes runs nothing");
    assert_eq!(rig.script.received().len(), calls_before, "and calls no upstream");
    assert!(finished(&replay).message.content.text().contains("already answered"));
}

#[tokio::test(start_paused = true)]
async fn no_denies_the_held_call_and_the_model_is_told() {
    let (rig, runs) = rig();
    let question = asked(&rig).await;
    rig.script.push(text("Cancelled."));
    let events = rig.run(reply(&question, "no")).await;
    assert_eq!(runs.runs(), 0);
    assert_eq!(finished(&events).message.content, "Cancelled.");
    let sent = rig.script.received().pop().unwrap();
    assert_eq!(sent.message(-1)["content"], confirm::DENIED);
}

#[tokio::test(start_paused = true)]
async fn another_reply_denies_and_the_model_answers_the_message() {
    let (rig, runs) = rig();
    let question = asked(&rig).await;
    rig.script.push(text("Which file then?"));
    rig.run(reply(&question, "wait, the other file")).await;
    assert_eq!(runs.runs(), 0);
    let sent = rig.script.received().pop().unwrap();
    assert_eq!(sent.message(-1), &json!({"role": "user", "content": "wait, the other file"}));
    assert_eq!(sent.message(-2)["content"], question.as_str());
    assert_eq!(sent.message(-3)["content"], confirm::DENIED_OTHER);
}

#[tokio::test(start_paused = true)]
async fn a_yes_after_the_ttl_is_told_the_approval_expired() {
    let (rig, runs) = rig();
    let question = asked(&rig).await;
    tokio::time::advance(Duration::from_secs(61)).await;
    let calls_before = rig.script.received().len();
    let events = rig.run(reply(&question, "yes")).await;
    assert_eq!(runs.runs(), 0);
    assert_eq!(rig.script.received().len(), calls_before);
    let done = finished(&events);
    assert_eq!(done.ended_by, Ending::Notice);
    assert!(done.message.content.text().contains("expired"), "{:?}", done.message.content);
    assert!(events.iter().any(|e| matches!(e, Event::Started { target: None, attempts: 0 })));
}

#[tokio::test(start_paused = true)]
async fn a_regenerated_question_supersedes_the_older_one() {
    let (rig, runs) = rig();
    let first = asked(&rig).await;
    let second = asked(&rig).await;
    assert_ne!(first, second, "each question has its own marker");
    let calls_before = rig.script.received().len();
    let stale = rig.run(reply(&first, "yes")).await;
    assert_eq!(runs.runs(), 0, "the replaced question runs nothing");
    assert_eq!(rig.script.received().len(), calls_before);
    assert!(
        finished(&stale).message.content.text().contains("newer question"),
        "{:?}",
        finished(&stale).message.content
    );

    rig.script.push(text("Deleted."));
    rig.run(reply(&second, "yes")).await;
    assert_eq!(runs.runs(), 1, "the latest question runs, once");
    let again = rig.run(reply(&first, "yes")).await;
    assert_eq!(runs.runs(), 1);
    assert!(finished(&again).message.content.text().contains("newer question"));
}

#[tokio::test(start_paused = true)]
async fn a_no_after_the_action_ran_tells_the_model_the_truth() {
    let (rig, runs) = rig();
    let question = asked(&rig).await;
    rig.script.push(text("Deleted."));
    rig.run(reply(&question, "yes")).await;
    assert_eq!(runs.runs(), 1);
    // The user edits their "yes" into "no" in the chat UI and sends it again.
    rig.script.push(text("It was already deleted; I cannot undo that."));
    rig.run(reply(&question, "no")).await;
    assert_eq!(runs.runs(), 1);
    let sent = rig.script.received().pop().unwrap();
    let system = sent.message(0)["content"].as_str().unwrap();
    assert!(system.contains("`delete_file`") && system.contains("already approved and run"), "{system}");
    assert_eq!(sent.message(-1)["content"], "no");
}

#[tokio::test(start_paused = true)]
async fn continue_on_a_question_repeats_it_without_a_new_checkpoint() {
    let (rig, runs) = rig();
    let question = asked(&rig).await;
    let calls_before = rig.script.received().len();
    let continued = rig
        .run(json!({"messages": [
            {"role": "user", "content": "delete /tmp/x"},
            {"role": "assistant", "content": question}
        ]}))
        .await;
    assert_eq!(finished(&continued).message.content, question.as_str(), "the same question, the same marker");
    assert_eq!(rig.script.received().len(), calls_before, "no upstream call, no new checkpoint");
    rig.script.push(text("Deleted."));
    rig.run(reply(&question, "yes")).await;
    assert_eq!(runs.runs(), 1, "the question still answers");
}

#[tokio::test(start_paused = true)]
async fn a_reply_through_another_model_is_told_where_the_action_waits() {
    let (tool, runs) = testing::tool("delete_file", Duration::ZERO, Duration::from_secs(30), Ok("deleted"));
    let (safe, _) = testing::tool("lookup", Duration::ZERO, Duration::from_secs(30), Ok("found"));
    let rig = Rig::new(vec![tool, safe], &format!("{GATE}\n[models.n]\nchain = [\"mock/model-b\"]\n"));
    let question = asked(&rig).await;
    let mut elsewhere = reply(&question, "yes");
    elsewhere["model"] = json!("n");
    let events = rig.run(elsewhere).await;
    assert_eq!(runs.runs(), 0);
    assert!(finished(&events).message.content.text().contains("waiting for your answer in the model `m`"));
    rig.script.push(text("Deleted."));
    rig.run(reply(&question, "yes")).await;
    assert_eq!(runs.runs(), 1, "the question is still open in its own model");
}

#[tokio::test(start_paused = true)]
async fn a_round_with_held_and_client_calls_hands_the_client_calls_out_after_yes() {
    let (rig, runs) = rig();
    let client_tool =
        json!([{"type": "function", "function": {"name": "web_search", "parameters": {"type": "object"}}}]);
    rig.script.push(super::script::Answer::Chunks(
        vec![
            json!({"role": "assistant", "content": ""}),
            json!({"tool_calls": [{"index": 0, "id": "up_0", "type": "function", "function": {"name": "web_search", "arguments": "{\"q\":\"x\"}"}}]}),
            json!({"tool_calls": [{"index": 1, "id": "up_1", "type": "function", "function": {"name": "delete_file", "arguments": "{}"}}]}),
        ],
        "tool_calls",
    ));
    rig.script.push(text("Shall I delete it?"));
    let body =
        json!({"stream": true, "tools": client_tool, "messages": [{"role": "user", "content": "search and delete"}]});
    let events = rig.run(body).await;
    let streamed_calls =
        |events: &[Event]| events.iter().filter(|e| matches!(e, Event::Delta(d) if !d.calls.is_empty())).count();
    assert_eq!(streamed_calls(&events), 0, "no client call goes out before the question is answered");
    let question = finished(&events).message.content.text().into_owned();

    let mut yes = reply(&question, "yes");
    yes["stream"] = json!(true);
    yes["tools"] = client_tool;
    let events = rig.run(yes).await;
    assert_eq!(runs.runs(), 1);
    assert_eq!(streamed_calls(&events), 1, "the client's call goes out now");
    let done = finished(&events);
    assert_eq!(done.ended_by, Ending::ClientTools);
    assert_eq!(done.message.tool_calls.as_ref().unwrap()[0].function.name, "web_search");
}
