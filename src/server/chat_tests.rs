use super::*;
use crate::agent::Confirmation;
use crate::openai::{Content, FinishReason, Message, Usage};

fn stream_face(include_usage: bool) -> StreamFace {
    let face = Face { id: "chatcmpl-1".into(), model: "m".into() };
    StreamFace::new(face, include_usage, Progress::Off)
}

fn render(face: &mut StreamFace, event: Event) -> Vec<serde_json::Value> {
    let json = |chunk: Outgoing| {
        let mut out = Vec::new();
        chunk.write(&mut out).unwrap();
        serde_json::from_slice(&out).unwrap()
    };
    face.render(event).into_iter().flatten().map(|c| json(c.unwrap())).collect()
}

fn text(role: bool, text: &str) -> Event {
    Event::Delta(Delta { role, text: Some(text.into()), ..Delta::default() })
}

#[test]
fn the_role_goes_once_and_empty_chunks_not_at_all() {
    let mut face = stream_face(false);
    let first = render(&mut face, text(true, "Hi"));
    assert_eq!(first[0]["choices"][0]["delta"], json!({"role": "assistant", "content": "Hi"}));
    assert_eq!((first[0]["id"].as_str(), first[0]["model"].as_str()), (Some("chatcmpl-1"), Some("m")));
    let again = render(&mut face, text(true, " there"));
    assert_eq!(again[0]["choices"][0]["delta"], json!({"content": " there"}), "a later round sends no role");
    let empty = Event::Delta(Delta { role: true, ..Delta::default() });
    assert!(render(&mut face, empty).is_empty(), "nothing left for the client");
}

#[test]
fn what_the_upstream_sent_besides_goes_out_untouched() {
    let mut face = stream_face(false);
    let remains: ChatChunk = serde_json::from_value(json!({"id": "up", "model": "up-model",
        "system_fingerprint": "fp", "choices": [{"index": 0, "delta": {"reasoning_content": "hmm"}}]}))
    .unwrap();
    let delta = Delta { text: Some("a".into()), remains: Some(Remains::Typed(Box::new(remains))), ..Delta::default() };
    let out = render(&mut face, Event::Delta(delta));
    assert_eq!(out[0]["system_fingerprint"], "fp");
    assert_eq!(out[0]["choices"][0]["delta"], json!({"content": "a", "reasoning_content": "hmm"}));
    assert_eq!(out[0]["id"], "chatcmpl-1");
}

#[test]
fn the_end_is_the_finish_reason_then_the_usage() {
    let mut face = stream_face(true);
    let finished = Finished {
        usage: Some(Usage { prompt_tokens: 1, completion_tokens: 2, total_tokens: 3, ..Usage::default() }),
        ..Finished::plain(Message::assistant(Content::None, Vec::new()))
    };
    let end = render(&mut face, Event::Finished(Box::new(finished)));
    assert_eq!(end.len(), 2);
    assert_eq!(end[0]["choices"][0]["finish_reason"], "stop");
    assert_eq!(end[1]["usage"]["total_tokens"], 3);
    assert_eq!(end[1]["choices"], json!([]));

    // A finish reason relayed from the upstream is not sent twice.
    let mut face = stream_face(false);
    let relayed = Delta { finish: Some(FinishReason::ToolCalls), ..Delta::default() };
    assert_eq!(render(&mut face, Event::Delta(relayed))[0]["choices"][0]["finish_reason"], "tool_calls");
    let finished = Finished::plain(Message::assistant(Content::None, Vec::new()));
    assert!(render(&mut face, Event::Finished(Box::new(finished))).is_empty());
}

#[test]
fn a_question_carries_the_confirmation_beside_its_footer() {
    let mut face = stream_face(false);
    let confirmation = Confirmation {
        id: "abc".into(),
        held: vec![crate::openai::FunctionCall { name: "delete".into(), arguments: "{}".into() }],
        expires_at: 9,
    };
    let out = render(&mut face, Event::ConfirmationAsked { text: "\n\nfooter".into(), confirmation });
    let delta = &out[0]["choices"][0]["delta"];
    assert_eq!(delta["role"], "assistant", "the first chunk of the response");
    assert_eq!(delta["content"], "\n\nfooter");
    assert_eq!(delta["lariat"]["confirmation"], json!({"id": "abc", "tools": ["delete"], "expires_at": 9}));
}

fn tool_started() -> Event {
    Event::ToolStarted { id: "1".into(), name: "lookup".into(), arguments: "{}".into() }
}

#[test]
fn progress_shows_as_status_lines_and_the_last_one_is_closed() {
    let mut face = StreamFace::new(Face { id: "c".into(), model: "m".into() }, false, Progress::Status);
    let status = render(&mut face, tool_started());
    assert_eq!(status[0]["choices"], json!([]));
    assert_eq!(
        status[0]["event"],
        json!({"type": "status", "data": {"description": "Running lookup…", "done": false}})
    );
    assert_eq!(status[0]["id"], "c");
    let finished = Finished::plain(Message::assistant(Content::None, Vec::new()));
    let end = render(&mut face, Event::Finished(Box::new(finished)));
    assert_eq!(end[0]["event"]["data"], json!({"description": "Running lookup…", "done": true}));
    assert_eq!(end[1]["choices"][0]["finish_reason"], "stop");
}

#[test]
fn progress_as_reasoning_or_content_or_not_at_all() {
    let mut face = StreamFace::new(Face { id: "c".into(), model: "m".into() }, false, Progress::Reasoning);
    let thinking = render(&mut face, tool_started());
    assert_eq!(
        thinking[0]["choices"][0]["delta"],
        json!({"role": "assistant", "reasoning_content": "Running `lookup`…\n"})
    );
    let answer = render(&mut face, text(true, "Hi"));
    assert_eq!(answer[0]["choices"][0]["delta"], json!({"content": "Hi"}), "the role went with the progress");

    let mut face = StreamFace::new(Face { id: "c".into(), model: "m".into() }, false, Progress::Content);
    let line = render(&mut face, tool_started());
    assert_eq!(line[0]["choices"][0]["delta"]["content"], "_Running `lookup`…_\n\n");

    let mut face = StreamFace::new(Face { id: "c".into(), model: "m".into() }, false, Progress::Off);
    assert!(render(&mut face, tool_started()).is_empty());
}

fn relayed(json: serde_json::Value) -> Event {
    let chunk = crate::openai::StreamChunk::read(json.to_string().into(), crate::openai::Reading::Relayed).unwrap();
    let crate::openai::StreamChunk::Relayed(mut chunk) = chunk else { panic!("read typed") };
    let choice = chunk.choice.take().unwrap();
    let (role, text, finish) = (choice.delta.role, choice.delta.content, choice.finish_reason);
    Event::Delta(Delta { role, text, finish, remains: Some(Remains::Relayed(chunk)), ..Delta::default() })
}

#[test]
fn a_relayed_chunk_goes_out_as_it_came_under_the_response_s_id_and_model() {
    let mut face = StreamFace::new(Face { id: "c".into(), model: "m".into() }, false, Progress::Reasoning);
    let first = json!({"model": "up", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "a"},
        "logprobs": null}], "id": "up-1", "created": 7});
    let out = render(&mut face, relayed(first.clone()));
    let mut expected = first;
    (expected["id"], expected["model"]) = (json!("c"), json!("m"));
    assert_eq!(out, [expected]);
    let last = json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
    assert_eq!(render(&mut face, relayed(last))[0]["choices"][0]["finish_reason"], "stop");
    let finished = Finished::plain(Message::assistant(Content::None, Vec::new()));
    assert!(render(&mut face, Event::Finished(Box::new(finished))).is_empty(), "the finish reason went out");

    // A role already sent with a progress line is not sent again.
    let mut face = StreamFace::new(Face { id: "c".into(), model: "m".into() }, false, Progress::Reasoning);
    assert_eq!(render(&mut face, tool_started())[0]["choices"][0]["delta"]["role"], "assistant");
    let first = json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": "a"}}], "x": 1});
    let out = render(&mut face, relayed(first));
    assert_eq!(out[0]["choices"][0]["delta"], json!({"content": "a"}));
    assert_eq!((out[0]["x"].as_i64(), out[0]["id"].as_str()), (Some(1), Some("c")));
}
