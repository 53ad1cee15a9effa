//! The answer model through the engine: the loop gathers, the answer model writes.

use serde_json::json;

use super::script::{Answer, Rig, ask, calls, stream, text};
use super::{Ending, Event, echo, finished, names};
use crate::agent::prepare::TOOLS_LINE;
use crate::config::answer::DEFAULT_GATHER_PROMPT;

const WRITER: &str = "answer_with = \"mock/writer\"\n";

fn streamed_text(events: &[Event]) -> String {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Delta(d) => d.text.clone(),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn the_loop_gathers_and_the_answer_model_writes_the_reply() {
    let rig = Rig::new(vec![echo()], WRITER);
    rig.script.push(Answer::Chunks(
        vec![
            json!({"role": "assistant", "content": "Looking it up."}),
            json!({"tool_calls": [{"index": 0, "id": "up_0", "type": "function", "function": {"name": "lookup", "arguments": "{\"q\":\"x\"}"}}]}),
        ],
        "tool_calls",
    ));
    rig.script.push(stream(&["Notes: x was found."]));
    rig.script.push(stream(&["Here is ", "the answer."]));
    let mut body = ask("what is x?");
    body["stream"] = json!(true);
    let events = rig.run(body).await;
    assert_eq!(streamed_text(&events), "Here is the answer.", "only the answer model's words are the reply");
    assert!(names(&events).contains(&"handed_over"));
    let done = finished(&events);
    assert_eq!(done.answered_by.as_deref(), Some("mock/writer"));
    assert_eq!((done.rounds, done.ended_by), (1, Ending::Answer));
    assert_eq!(done.message.content, "Here is the answer.");

    let sent = rig.script.received();
    assert_eq!(sent.len(), 3);
    assert_eq!(sent[0].target, "mock/model-a");
    let loop_system = sent[0].message(0)["content"].as_str().unwrap();
    assert!(loop_system.contains(TOOLS_LINE) && loop_system.contains(DEFAULT_GATHER_PROMPT));
    let writer = &sent[2];
    assert_eq!(writer.target, "mock/writer");
    assert!(writer.tools.is_empty() && writer.tool_choice.is_none(), "the answer model gets no tools");
    assert_eq!(writer.messages.as_array().unwrap().len(), 1, "no system message of loop lines only");
    let last = writer.message(-1)["content"].as_str().unwrap();
    assert!(last.starts_with("what is x?\n\n"), "{last}");
    assert!(last.contains("### lookup({\"q\":\"x\"})\nfound it"), "{last}");
    assert!(last.contains("Looking it up.\n\nNotes: x was found."), "{last}");
}

#[tokio::test(start_paused = true)]
async fn with_answer_when_tools_used_a_tool_less_answer_stands() {
    let rig = Rig::new(vec![echo()], &format!("{WRITER}answer_when = \"tools_used\"\n"));
    rig.script.push(stream(&["Just ", "hello."]));
    let mut body = ask("hi");
    body["stream"] = json!(true);
    let events = rig.run(body).await;
    assert_eq!(rig.script.received().len(), 1, "no answer-model call");
    assert_eq!(streamed_text(&events), "Just hello.", "the loop model's words are revealed");
    let done = finished(&events);
    assert_eq!(done.answered_by, None);
    assert_eq!(done.usage.as_ref().map(|u| u.total_tokens), None, "the scripted stream sent no usage");
}

#[tokio::test(start_paused = true)]
async fn a_failing_answer_model_fails_the_request_or_leaves_the_notes() {
    let rig = Rig::new(vec![echo()], WRITER);
    rig.script.push(text("notes"));
    rig.script.push(Answer::Fail);
    let events = rig.run(ask("hi")).await;
    let Some(Event::Failed(error)) = events.last() else { panic!("{:?}", names(&events)) };
    assert!(error.to_string().contains("mock/writer"), "the error names the answer target: {error}");

    let rig = Rig::new(vec![echo()], &format!("{WRITER}answer_fallback = \"loop\"\n"));
    rig.script.push(text("the loop's notes"));
    rig.script.push(Answer::Fail);
    let events = rig.run(ask("hi")).await;
    let done = finished(&events);
    assert_eq!(done.message.content, "the loop's notes");
    assert_eq!(done.answered_by, None);
}

#[tokio::test(start_paused = true)]
async fn usage_sums_both_models() {
    let rig = Rig::new(vec![echo()], WRITER);
    rig.script.push(calls(&[("lookup", "{}")]));
    rig.script.push(text("notes"));
    rig.script.push(text("reply"));
    let events = rig.run(ask("go")).await;
    let done = finished(&events);
    assert_eq!(done.usage.as_ref().map(|u| u.total_tokens), Some(45), "three calls of 15 tokens");
    let metrics = rig.agent.metrics.encode();
    assert!(
        metrics.contains("lariat_answer_tokens_total{model=\"m\",target=\"mock/writer\",kind=\"prompt\"} 10"),
        "{metrics}"
    );
    assert!(metrics.contains("lariat_answers_total{model=\"m\",outcome=\"written\"} 1"), "{metrics}");
}
