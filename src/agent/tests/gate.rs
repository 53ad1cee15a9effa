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
    assert_eq!(confirmation.tools, ["delete_file"]);
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
