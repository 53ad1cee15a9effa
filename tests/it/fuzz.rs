//! A fuzz target that stays: valid chat requests mutated (types, nesting, unicode,
//! sizes, raw bytes) against a running lariat. Whatever a client sends, the answer
//! is OpenAI-shaped — JSON errors, or a completion — and never a 5xx for a client's
//! fault (the mock upstream always answers, so no 5xx is anyone else's either).

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use crate::harness::*;

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        Just(json!(u64::MAX)),
        ".{0,40}".prop_map(Value::from),
        "[\\u{0}-\\u{10FFFF}]{0,20}".prop_map(Value::from),
        (1usize..200_000).prop_map(|n| Value::from("é".repeat(n / 2))),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

/// A value nested `depth` levels deep (serde_json refuses past 128).
fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Set a top-level field (known or not) to a value.
    Field(String, Value),
    /// Set a field of the first message.
    MessageField(String, Value),
    /// Replace the messages with a value.
    Messages(Value),
    Remove(String),
    /// Send these bytes instead of JSON.
    Raw(Vec<u8>),
    /// A deeply nested value in place of the content.
    Deep(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let field = prop_oneof![
        Just("model".to_owned()),
        Just("messages".to_owned()),
        Just("stream".to_owned()),
        Just("tools".to_owned()),
        Just("tool_choice".to_owned()),
        Just("max_tokens".to_owned()),
        Just("stream_options".to_owned()),
        Just("lariat".to_owned()),
        Just("n".to_owned()),
        "[a-z_]{1,16}",
    ];
    let message_field = prop_oneof![
        Just("role".to_owned()),
        Just("content".to_owned()),
        Just("tool_calls".to_owned()),
        Just("tool_call_id".to_owned()),
        Just("name".to_owned()),
    ];
    prop_oneof![
        (field.clone(), value()).prop_map(|(f, v)| Mutation::Field(f, v)),
        (message_field, value()).prop_map(|(f, v)| Mutation::MessageField(f, v)),
        value().prop_map(Mutation::Messages),
        field.prop_map(Mutation::Remove),
        prop::collection::vec(any::<u8>(), 0..512).prop_map(Mutation::Raw),
        (100usize..5000).prop_map(Mutation::Deep),
    ]
}

fn apply(mutations: &[Mutation], stream: bool) -> Vec<u8> {
    let mut request =
        json!({"model": "assistant", "stream": stream, "messages": [{"role": "user", "content": "hello"}]});
    for m in mutations {
        match m {
            Mutation::Field(f, v) => request[f.as_str()] = v.clone(),
            Mutation::MessageField(f, v) => {
                if let Some(first) = request["messages"].get_mut(0).filter(|m| m.is_object()) {
                    first[f.as_str()] = v.clone();
                }
            }
            Mutation::Messages(v) => request["messages"] = v.clone(),
            Mutation::Remove(f) => {
                if let Some(o) = request.as_object_mut() {
                    o.remove(f);
                }
            }
            Mutation::Raw(bytes) => return bytes.clone(),
            Mutation::Deep(depth) => {
                let text = serde_json::to_string(&request).unwrap();
                return text.replacen("\"hello\"", &nested(*depth), 1).into_bytes();
            }
        }
    }
    serde_json::to_vec(&request).unwrap()
}

#[test]
fn mutated_requests_get_openai_shaped_answers_and_no_5xx() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (lariat, _mock) = runtime.block_on(async {
        let mock = MockUpstream::start().await;
        mock.always(Reply::text("fine"));
        (Lariat::start(&config(&mock, "")).await, mock)
    });
    let http = client();
    let config = ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() };
    proptest!(config, |(mutations in prop::collection::vec(mutation(), 1..4), stream in any::<bool>())| {
        let body = apply(&mutations, stream);
        let (status, content_type, text) = runtime.block_on(async {
            let response = http
                .post(format!("{}/v1/chat/completions", lariat.url))
                .bearer_auth(ALICE)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            (status, content_type, response.text().await.unwrap())
        });
        prop_assert!(status < 500, "{status} for {:.300}: {text:.300}", String::from_utf8_lossy(&body));
        if content_type.starts_with("text/event-stream") {
            prop_assert_eq!(status, 200);
            prop_assert!(text.trim_end().ends_with("data: [DONE]"), "{text:.300}");
        } else {
            prop_assert!(content_type.starts_with("application/json"), "{status} {content_type}: {text:.300}");
            let parsed: Value = serde_json::from_str(&text).map_err(|e| TestCaseError::fail(format!("{e}: {text:.300}")))?;
            if status >= 400 {
                let error = &parsed["error"];
                prop_assert!(error["message"].is_string() && error["type"].is_string(), "{parsed}");
                prop_assert!(error.get("param").is_some() && error.get("code").is_some(), "{parsed}");
            } else {
                prop_assert_eq!(status, 200);
                prop_assert!(parsed["choices"].is_array(), "{parsed}");
            }
        }
    });
}
