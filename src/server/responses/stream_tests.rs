use serde_json::json;

use super::*;
use crate::agent::{CallDelta, Delta};
use crate::openai::responses::ResponsesRequest;

fn face(progress: Progress) -> StreamFace {
    let request: ResponsesRequest = serde_json::from_value(json!({"model": "m", "input": "x"})).unwrap();
    StreamFace::new(Shell::new(&request, true), progress)
}

fn kinds(outs: &[Out]) -> Vec<&'static str> {
    outs.iter().map(|o| o.kind).collect()
}

fn text(t: &str) -> Event {
    Event::Delta(Delta { role: true, text: Some(t.into()), ..Delta::default() })
}

#[test]
fn a_call_after_words_closes_the_message_and_streams_its_arguments() {
    let mut face = face(Progress::Off);
    assert_eq!(kinds(&face.start()), ["response.created", "response.in_progress"]);
    let (outs, _) = face.render(text("Let me add."));
    assert_eq!(
        kinds(&outs),
        ["response.output_item.added", "response.content_part.added", "response.output_text.delta"]
    );
    let call = |id: Option<&str>, args: &str| CallDelta {
        index: 0,
        id: id.map(str::to_owned),
        name: id.map(|_| "add".to_owned()),
        arguments: Some(args.into()),
    };
    let (outs, _) = face.render(Event::Delta(Delta { calls: vec![call(Some("c1"), "{\"a\"")], ..Delta::default() }));
    assert_eq!(
        kinds(&outs),
        [
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.function_call_arguments.delta",
        ]
    );
    assert_eq!(outs[3].data["item"]["call_id"], "c1");
    let (outs, _) = face.render(Event::Delta(Delta { calls: vec![call(None, ":1}")], ..Delta::default() }));
    assert_eq!(outs[0].data["delta"], ":1}");
    let finished = Finished {
        finish_reason: crate::openai::FinishReason::ToolCalls,
        ..Finished::plain(Message::assistant(Content::None, Vec::new()))
    };
    let (outs, ending) = face.render(Event::Finished(Box::new(finished)));
    assert_eq!(
        kinds(&outs),
        ["response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    );
    assert_eq!(outs[0].data["arguments"], "{\"a\":1}");
    let After::Finished(ending) = ending else { panic!("the loop finished") };
    assert_eq!(ending.message.content, Content::Text("Let me add.".into()));
    assert_eq!(ending.message.calls()[0].function.arguments, "{\"a\":1}");
    assert_eq!(ending.response["output"].as_array().unwrap().len(), 2);
}

#[test]
fn progress_is_a_reasoning_item_the_conversation_never_holds() {
    let mut face = face(Progress::Status);
    face.start();
    let started = Event::ToolStarted { id: "1".into(), name: "lookup".into(), arguments: "{}".into() };
    let (outs, _) = face.render(started);
    assert_eq!(
        kinds(&outs),
        [
            "response.output_item.added",
            "response.reasoning_summary_part.added",
            "response.reasoning_summary_text.delta"
        ]
    );
    assert_eq!(outs[2].data["delta"], "Running `lookup`…\n");
    let (outs, _) = face.render(text("Found."));
    assert_eq!(outs[2].kind, "response.output_item.done", "the progress item closes before the answer");
    let finished = Finished::plain(Message::assistant(Content::Text("Found.".into()), Vec::new()));
    let (_, ending) = face.render(Event::Finished(Box::new(finished)));
    let After::Finished(ending) = ending else { panic!("the loop finished") };
    assert_eq!(ending.message.content, Content::Text("Found.".into()));
    assert_eq!(ending.response["output"][0]["type"], "reasoning");
    assert_eq!(ending.response["output"][1]["content"][0]["text"], "Found.");
}
