use serde_json::{Value, json};

use super::*;
use crate::openai::mutations::mutations;
use crate::openai::{ChatCompletion, FinishReason};

const ANSWER: &str = r#"{"id":"up-1","object":"chat.completion","created":7,"model":"up-model","system_fingerprint":"fp",
 "choices":[{"index":0,"message":{"role":"assistant","content":"hi \"there\"","refusal":null},"logprobs":null,"finish_reason":"stop"}],
 "usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5,"completion_tokens_details":{"reasoning_tokens":0}}}"#;

fn written(kept: &KeptCompletion) -> String {
    let mut out = Vec::new();
    kept.write("\"chatcmpl-1\"", "\"virtual\"", 1_700_000_000, &mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn id_and_model_are_replaced_and_every_other_byte_kept() {
    let relayed = RelayedCompletion::read(ANSWER.into()).unwrap();
    let expected = ANSWER.replace(r#""up-model""#, r#""virtual""#).replace(r#""up-1""#, r#""chatcmpl-1""#);
    assert_eq!(written(&relayed.kept), expected);
    assert_eq!(relayed.choice.message.content.text(), "hi \"there\"");
    assert_eq!(relayed.choice.message.rest["refusal"], Value::Null);
    assert_eq!(relayed.choice.finish_reason, Some(FinishReason::Stop));
    assert_eq!(relayed.choice.rest["logprobs"], Value::Null);
    let usage = relayed.usage.unwrap();
    assert_eq!((usage.prompt_tokens, usage.total_tokens), (3, 5));
    assert_eq!(usage.rest["completion_tokens_details"], json!({"reasoning_tokens": 0}));
}

#[test]
fn what_is_missing_is_written_first_and_a_null_model_is_refused() {
    let answer =
        r#" {"choices":[{"message":{"role":"assistant","content":"a"},"finish_reason":"length"}],"model":null}"#;
    let Err(bytes) = RelayedCompletion::read(answer.into()) else { panic!("a null model is not a string") };
    assert_eq!(bytes, answer.as_bytes(), "what cannot be relayed comes back whole");
    let answer = r#" {"choices":[{"message":{"role":"assistant","content":"a"},"finish_reason":"length"}]}"#;
    let relayed = RelayedCompletion::read(answer.into()).unwrap();
    assert_eq!(
        written(&relayed.kept),
        r#" {"id":"chatcmpl-1","model":"virtual","object":"chat.completion","created":1700000000,"choices":[{"message":{"role":"assistant","content":"a"},"finish_reason":"length"}]}"#
    );
    assert!(relayed.usage.is_none());
}

#[test]
fn what_a_relay_would_change_comes_back_to_be_read_typed() {
    let two = r#"{"choices":[{"index":0,"message":{"role":"assistant","content":"a"},"finish_reason":"stop"},
        {"index":1,"message":{"role":"assistant","content":"b"},"finish_reason":"stop"}]}"#;
    let unfinished = r#"{"choices":[{"index":0,"message":{"role":"assistant","content":"a"},"finish_reason":null}]}"#;
    let calls = r#"{"choices":[{"message":{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"tool_calls"}]}"#;
    let numbered = r#"{"id":7,"choices":[{"message":{"role":"assistant","content":"a"},"finish_reason":"stop"}]}"#;
    let surrogate =
        r#"{"id":"\ud800","choices":[{"message":{"role":"assistant","content":"a"},"finish_reason":"stop"}]}"#;
    let twice =
        r#"{"id":"a","id":"b","choices":[{"message":{"role":"assistant","content":"a"},"finish_reason":"stop"}]}"#;
    for answer in [two, unfinished, calls, numbered, surrogate, twice, r#"{"id":"a"}"#, "[1]", "{", "\u{0}"] {
        let Err(bytes) = RelayedCompletion::read(answer.into()) else { panic!("relayed: {answer}") };
        assert_eq!(bytes, answer.as_bytes());
    }
    // A typed read drops an empty list of calls (OpenAI refuses one sent back); a lone
    // surrogate and a number out of range in a member lariat does not read are refused
    // by a typed read, so they are by this one too.
    let no_calls =
        r#"{"choices":[{"message":{"role":"assistant","content":"a","tool_calls":[]},"finish_reason":"stop"}]}"#;
    let lone = r#"{"x":"\udc00","choices":[{"message":{"role":"assistant","content":"a"},"finish_reason":"stop"}]}"#;
    let huge = r#"{"x":[1e400],"choices":[{"message":{"role":"assistant","content":"a"},"finish_reason":"stop"}]}"#;
    for answer in [no_calls, lone, huge] {
        assert_eq!(RelayedCompletion::read(answer.into()).unwrap_err(), answer.as_bytes());
    }
    assert!(
        serde_json::from_str::<ChatCompletion>(lone).is_err() && serde_json::from_str::<ChatCompletion>(huge).is_err()
    );
}

/// Every text a few edits away from real answers: what is relayed is what a typed
/// read takes, with the same choice and usage; what is written is the answer's own
/// JSON with lariat's `id` and `model` (and `object` and `created` where missing);
/// and every answer a typed read takes with one finished choice that calls nothing
/// is relayed, not read twice.
#[test]
fn reads_what_a_typed_read_takes_of_answers_and_their_mutations() {
    let templates = [
        ANSWER,
        r#"{"choices":[{"message":{"content":"x","role":"assistant"},"finish_reason":"stop","index":0}],"model":"m","id":"a","x":[true,false,-1.5e3,{"y":[]}]}"#,
        r#"{"id":"u","choices":[{"index":0,"message":{"role":"assistant","content":null},"finish_reason":"length"}],"usage":null,"created":null}"#,
    ];
    let (mut relayed_count, mut typed_count) = (0, 0);
    for bytes in mutations(&templates, 3000, 0x2545_f491_4f6c_dd1d) {
        let typed = serde_json::from_slice::<ChatCompletion>(&bytes);
        match RelayedCompletion::read(bytes.clone()) {
            Ok(relayed) => {
                let typed = typed.unwrap_or_else(|e| panic!("relayed what a typed read refuses ({e}): {bytes:?}"));
                same_reading(&relayed, &typed, &bytes);
                relayed_count += 1;
            }
            Err(back) => {
                assert_eq!(back, bytes);
                if let Ok(typed) = typed {
                    let relayable = typed.choices.len() == 1
                        && typed.choices[0].finish_reason.is_some()
                        && typed.choices[0].message.tool_calls.is_none();
                    assert!(!relayable, "read typed though it could be relayed: {}", String::from_utf8_lossy(&bytes));
                }
                typed_count += 1;
            }
        }
    }
    assert!(relayed_count > 1000 && typed_count > 1000, "{relayed_count} relayed, {typed_count} back");
}

fn same_reading(relayed: &RelayedCompletion, typed: &ChatCompletion, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let mut expected: Value = serde_json::from_slice(bytes).unwrap();
    expected["id"] = json!("chatcmpl-1");
    expected["model"] = json!("virtual");
    let object = expected.as_object_mut().unwrap();
    object.entry("object").or_insert(json!("chat.completion"));
    object.entry("created").or_insert(json!(1_700_000_000));
    assert_eq!(serde_json::from_str::<Value>(&written(&relayed.kept)).unwrap(), expected, "{text}");
    let choice = &typed.choices[0];
    assert_eq!(relayed.choice.message, choice.message, "{text}");
    assert_eq!(relayed.choice.finish_reason, choice.finish_reason, "{text}");
    assert_eq!(relayed.choice.rest, choice.rest, "{text}");
    assert_eq!(relayed.usage, typed.usage, "{text}");
}
