//! Table tests: tokenizers, each compaction step in order, the structural
//! invariants, and the cache.

use std::fmt::Write;

use serde_json::{Value, json};

use super::shape::invalid;
use super::truncate::truncate;
use super::*;
use crate::openai::Content;
use crate::openai::{Message, ToolDef};

pub(super) fn message(value: Value) -> Message {
    serde_json::from_value(value).unwrap()
}
pub(super) fn system(text: &str) -> Message {
    message(json!({"role": "system", "content": text}))
}
pub(super) fn user(text: &str) -> Message {
    message(json!({"role": "user", "content": text}))
}
pub(super) fn answer(text: &str) -> Message {
    message(json!({"role": "assistant", "content": text}))
}
/// An assistant message calling `f` once per id.
pub(super) fn calls(ids: &[&str]) -> Message {
    let calls: Vec<Value> = ids
        .iter()
        .map(|id| json!({"id": id, "type": "function", "function": {"name": "f", "arguments": "{\"q\":1}"}}))
        .collect();
    message(json!({"role": "assistant", "content": null, "tool_calls": calls}))
}
pub(super) fn result(id: &str, text: &str) -> Message {
    message(json!({"role": "tool", "tool_call_id": id, "content": text}))
}
fn tool(name: &str) -> ToolDef {
    serde_json::from_value(json!({"type": "function", "function": {
        "name": name, "description": "Looks something up.",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
    }}))
    .unwrap()
}

/// Small caps keep the fixtures and snapshots readable.
fn policy() -> Policy {
    Policy { keep_recent: 2, head_chars: 10, recent_cap_chars: 40, ..Policy::default() }
}

/// One line per message, long texts abbreviated.
fn render(messages: &[Message], report: Option<&Report>) -> String {
    let mut out = String::new();
    if let Some(r) = report {
        let _ = writeln!(out, "truncated={} capped={} dropped={}", r.truncated, r.capped, r.dropped_messages);
    }
    for m in messages {
        let role = serde_json::to_value(m.role).unwrap();
        let mut line = role.as_str().unwrap().to_string();
        if let Some(id) = &m.tool_call_id {
            let _ = write!(line, "[{id}]");
        }
        if let Some(calls) = &m.tool_calls {
            let ids: Vec<&str> = calls.iter().map(|c| c.id.as_str()).collect();
            let _ = write!(line, " calls {ids:?}");
        }
        let content = match &m.content {
            Content::Text(s) if s.chars().count() > 70 => {
                format!("{:?}… ({} chars)", s.chars().take(20).collect::<String>(), s.chars().count())
            }
            Content::None => String::new(),
            other => serde_json::to_string(other).unwrap(),
        };
        let _ = writeln!(out, "{line}: {content}");
    }
    out
}

/// A conversation of three user turns with tool rounds; the last turn is running.
fn history() -> Vec<Message> {
    vec![
        system("You are a careful assistant."),
        user("What is in the first file?"),
        calls(&["a1"]),
        result("a1", &"alpha ".repeat(100)),
        answer("The first file repeats alpha."),
        user("And the second and third?"),
        calls(&["b1", "b2"]),
        result("b1", &"beta ".repeat(120)),
        result("b2", &"gamma ".repeat(90)),
        answer("Beta and gamma."),
        user("Now summarise the fourth."),
        calls(&["c1"]),
        result("c1", &"delta ".repeat(150)),
    ]
}

const T: Tokenizer = Tokenizer::O200k;

fn run(messages: &mut Vec<Message>, limit: usize) -> Result<Report, Overflow> {
    let tools = [tool("lookup")];
    let out = compact(messages, &tools, Budget { limit }, T, &policy());
    assert_eq!(invalid(messages), None, "{}", render(messages, None));
    out
}

fn exact(messages: &[Message]) -> usize {
    count(messages, &[tool("lookup")], T)
}

/// `history()` as step 1 leaves it: all but the last two results cut to 10 chars.
fn after_step_1() -> Vec<Message> {
    let mut h = history();
    for i in [3, 7] {
        assert!(truncate(&mut h[i].content, 10));
    }
    h
}

fn after_step_2() -> Vec<Message> {
    let mut h = after_step_1();
    for i in [8, 12] {
        assert!(truncate(&mut h[i].content, 40));
    }
    h
}

#[test]
fn model_names_pick_their_tokenizer() {
    let table = [
        ("gpt-4o", Tokenizer::O200k),
        ("gpt-4o-mini-2024-07-18", Tokenizer::O200k),
        ("openai/gpt-4.1-nano", Tokenizer::O200k),
        ("GPT-5", Tokenizer::O200k),
        ("gpt-5-mini", Tokenizer::O200k),
        ("o1", Tokenizer::O200k),
        ("o3-mini", Tokenizer::O200k),
        ("o4-mini-2025-04-16", Tokenizer::O200k),
        ("ft:gpt-4o-mini:acme::abc123", Tokenizer::O200k),
        ("chatgpt-4o-latest", Tokenizer::O200k),
        ("gpt-oss-20b", Tokenizer::O200k),
        ("gpt-4", Tokenizer::Cl100k),
        ("gpt-4-turbo", Tokenizer::Cl100k),
        ("gpt-4-0613", Tokenizer::Cl100k),
        ("gpt-3.5-turbo", Tokenizer::Cl100k),
        ("gpt-35-turbo", Tokenizer::Cl100k),
        ("text-embedding-3-small", Tokenizer::Cl100k),
        ("llama3:8b", Tokenizer::Estimate),
        ("qwen2.5:7b", Tokenizer::Estimate),
        ("claude-sonnet-4", Tokenizer::Estimate),
        ("o1000-custom", Tokenizer::Estimate),
        ("my-azure-deployment", Tokenizer::Estimate),
        ("", Tokenizer::Estimate),
    ];
    for (model, expected) in table {
        assert_eq!(Tokenizer::for_model(model), expected, "{model}");
    }
}

#[test]
fn known_token_counts() {
    let table = [
        ("hello world", 2, 2),
        ("tiktoken is great!", 6, 6),
        ("", 0, 0),
        // Regression values: o200k_base is the more efficient vocabulary for Cyrillic.
        ("Привет, как дела?", 6, 8),
    ];
    for (text, o200k, cl100k) in table {
        assert_eq!(Tokenizer::O200k.count(text), o200k, "o200k {text:?}");
        assert_eq!(Tokenizer::Cl100k.count(text), cl100k, "cl100k {text:?}");
    }
}

#[test]
fn bounds_bound_the_counts() {
    let samples = [
        "hello world",
        "{\"id\": 123456, \"items\": [1, 2, 3], \"name\": \"x\"}",
        "fn main() {\n    println!(\"hi\");\n}\n",
        "Привет, как дела? 你好世界 🦀🦀",
        "aGVsbG8gd29ybGQgdGhpcyBpcyBiYXNlNjQ=",
        "0123456789",
    ];
    for tokenizer in [Tokenizer::O200k, Tokenizer::Cl100k, Tokenizer::Estimate] {
        for text in samples {
            assert!(tokenizer.count(text) <= tokenizer.bound(text), "{tokenizer} {text:?}");
        }
    }
}

#[test]
fn the_estimate_overestimates_common_text() {
    let samples = [
        "The quick brown fox jumps over the lazy dog. It was the best of times, it was the worst of times.",
        "{\"id\": 1234567, \"status\": \"ok\", \"items\": [{\"sku\": \"A-100\", \"qty\": 3, \"price\": 19.99}]}",
        "2026-05-05T22:01:54Z INFO request_id=7f3a9c user=alice latency_ms=42 status=200 path=/v1/chat",
        "Der schnelle braune Fuchs springt über den faulen Hund. Ça coûte très cher, señor.",
        "Съешь же ещё этих мягких французских булок, да выпей чаю.",
        "日本語のテキストは一文字ごとに多くのトークンを使います。",
    ];
    for text in samples {
        let estimate = Tokenizer::Estimate.count(text);
        let cl100k = Tokenizer::Cl100k.count(text);
        assert!(estimate >= cl100k, "{estimate} < {cl100k} for {text:?}");
        assert!(estimate <= cl100k * 2 + 2, "{estimate} far above {cl100k} for {text:?}");
    }
}

#[test]
fn message_framing_and_parts_are_counted() {
    let text = count(&[user("hello world")], &[], T);
    assert_eq!(text, REPLY_PRIMING + MESSAGE_OVERHEAD + 2);
    let parts = message(json!({"role": "user", "content": [
        {"type": "text", "text": "hello world"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]}));
    assert_eq!(count(&[parts], &[], T), text + IMAGE_TOKENS);
    let named = message(json!({"role": "user", "content": "hello world", "name": "bob"}));
    assert_eq!(count(&[named], &[], T), text + 2);
    assert!(count(&[calls(&["x"])], &[], T) > count(&[answer("")], &[], T) + 5, "tool calls cost");
    let with_tools = count(&[user("hello world")], &[tool("lookup"), tool("search")], T);
    assert!(with_tools > text + 2 * 20, "tool schemas cost: {with_tools}");
}

#[test]
fn a_list_that_fits_is_left_alone() {
    let mut h = history();
    let report = run(&mut h, exact(&history())).unwrap();
    assert!(report.is_noop());
    assert_eq!(h, history());
    assert_eq!(report.tokens_after, exact(&history()), "an upper bound within the limit is exact");
}

#[test]
fn step_1_alone_when_it_suffices() {
    let mut h = history();
    let report = run(&mut h, exact(&after_step_1())).unwrap();
    assert_eq!(h, after_step_1());
    assert_eq!((report.truncated, report.capped, report.dropped_messages), (2, 0, 0));
    assert!(report.tokens_after <= exact(&after_step_1()));
    insta::assert_snapshot!(render(&h, Some(&report)));
}

#[test]
fn step_2_when_step_1_is_not_enough() {
    let mut h = history();
    let report = run(&mut h, exact(&after_step_1()) - 1).unwrap();
    assert_eq!(h, after_step_2());
    assert_eq!((report.truncated, report.capped, report.dropped_messages), (2, 2, 0));
    insta::assert_snapshot!(render(&h, Some(&report)));
}

#[test]
fn step_3_drops_the_oldest_turns_whole() {
    let mut h = history();
    let report = run(&mut h, exact(&after_step_2()) - 1).unwrap();
    // One message too many: the whole first turn goes, not just its question.
    assert_eq!(report.dropped_messages, 4);
    assert_eq!(h[1], user("And the second and third?"));
    let mut h = history();
    let without_first_turn: Vec<Message> =
        after_step_2().into_iter().enumerate().filter(|(i, _)| !(1..5).contains(i)).map(|(_, m)| m).collect();
    let report = run(&mut h, exact(&without_first_turn) - 1).unwrap();
    assert_eq!(report.dropped_messages, 9, "{}", render(&h, Some(&report)));
    assert_eq!(h[1], user("Now summarise the fourth."));
    insta::assert_snapshot!(render(&h, Some(&report)));
}

#[test]
fn the_latest_turn_and_instructions_stay() {
    let mut h = history();
    h.insert(5, message(json!({"role": "developer", "content": "Be brief."})));
    let minimal: Vec<Message> = {
        let mut m = h.clone();
        for i in [3, 8] {
            truncate(&mut m[i].content, 10);
        }
        for i in [9, 13] {
            truncate(&mut m[i].content, 40);
        }
        m.into_iter()
            .enumerate()
            .filter(|(i, m)| *i >= 11 || matches!(m.role, crate::openai::Role::System | crate::openai::Role::Developer))
            .map(|(_, m)| m)
            .collect()
    };
    let mut fits = h.clone();
    let report = run(&mut fits, exact(&minimal)).unwrap();
    assert_eq!(fits, minimal);
    assert_eq!(report.dropped_messages, 9);
    insta::assert_snapshot!(render(&fits, Some(&report)));
}

#[test]
fn overflow_reports_the_numbers() {
    let mut h = history();
    // Steps 1–3, then step 4 cuts the two recent results down to `head_chars`.
    let minimal = {
        let mut m = after_step_2();
        m.drain(1..10);
        for message in m.iter_mut().filter(|m| m.role == crate::openai::Role::Tool) {
            truncate(&mut message.content, 10);
        }
        m
    };
    let needed = exact(&minimal);
    let overflow = run(&mut h, needed - 1).unwrap_err();
    assert_eq!(overflow, Overflow { needed, limit: needed - 1 });
    assert_eq!(h, minimal, "left as compacted as it gets");
    assert_eq!(
        overflow.to_string(),
        format!("the prompt needs {needed} tokens after compaction; the budget is {}", needed - 1)
    );
    assert!(run(&mut vec![system("x"), user("y")], 0).is_err());
}

#[test]
fn compaction_is_idempotent() {
    for limit in [exact(&after_step_1()), exact(&after_step_1()) - 1, exact(&after_step_2()) - 30, 1] {
        let mut once = history();
        let first = run(&mut once, limit);
        let mut twice = once.clone();
        let second = run(&mut twice, limit);
        assert_eq!(once, twice, "limit {limit}");
        assert_eq!(first.is_ok(), second.is_ok());
        if let Ok(second) = second {
            assert!(second.is_noop(), "limit {limit}: {second:?}");
        }
    }
}

#[test]
fn multibyte_results_are_cut_on_char_boundaries() {
    let mut h = vec![
        user("go"),
        calls(&["a", "b", "c"]),
        result("a", &"日本語🦀é".repeat(50)),
        result("b", "x"),
        result("c", "y"),
    ];
    let limit = exact(&h) - 1;
    run(&mut h, limit).unwrap();
    let Content::Text(cut) = &h[2].content else { panic!() };
    assert_eq!(*cut, format!("{}{}", "日本語🦀é".repeat(2), marker(240)));
}

#[test]
fn text_parts_of_tool_results_are_cut() {
    let parts = json!([{"type": "text", "text": "p".repeat(300)}, {"type": "text", "text": "q".repeat(300)}]);
    let mut h = vec![
        user("go"),
        calls(&["a", "b", "c"]),
        message(json!({"role": "tool", "tool_call_id": "a", "content": parts})),
        result("b", "x"),
        result("c", "y"),
    ];
    let limit = exact(&h) - 1;
    let report = run(&mut h, limit).unwrap();
    assert_eq!(report.truncated, 1);
    assert_eq!(h[2].content, json!([{"type": "text", "text": format!("pppppppppp{}", marker(590))}]));
}

#[test]
fn a_kept_compactor_agrees_with_a_fresh_one() {
    let mut compactor = Compactor::new(policy());
    let tools = [tool("lookup")];
    // Warm the counts on the first two turns, then let the history grow.
    assert_eq!(compactor.count(&history()[..10], &tools, T), exact(&history()[..10]));
    for limit in [exact(&history()), exact(&after_step_1()), exact(&after_step_2()) - 30, 10] {
        let (mut kept, mut fresh) = (history(), history());
        let a = compactor.compact(&mut kept, &tools, Budget { limit }, T);
        let b = compact(&mut fresh, &tools, Budget { limit }, T, &policy());
        assert_eq!(kept, fresh, "limit {limit}");
        assert_eq!(
            a.map(|r| (r.truncated, r.capped, r.dropped_messages)),
            b.map(|r| (r.truncated, r.capped, r.dropped_messages))
        );
    }
}

#[test]
fn an_edited_message_is_recounted() {
    let mut compactor = Compactor::new(policy());
    let mut h = history();
    let before = compactor.count(&h, &[], T);
    h[1] = user(&"a much longer question than before ".repeat(10));
    assert_eq!(compactor.count(&h, &[], T), count(&h, &[], T));
    assert!(compactor.count(&h, &[], T) > before);
    h.remove(0);
    assert_eq!(compactor.count(&h, &[], T), count(&h, &[], T), "shifted messages");
    assert_eq!(compactor.count(&h, &[], Tokenizer::Estimate), count(&h, &[], Tokenizer::Estimate), "other tokenizer");
}

#[test]
fn a_turn_too_long_for_the_window_has_its_recent_results_cut_further() {
    let mut h = history();
    let mut minimal = after_step_2();
    minimal.drain(1..10);
    let after_drop = exact(&minimal);
    for message in minimal.iter_mut().filter(|m| m.role == crate::openai::Role::Tool) {
        truncate(&mut message.content, 10);
    }
    let floor = exact(&minimal);
    assert!(floor < after_drop);
    let report = run(&mut h, after_drop - 1).unwrap();
    assert!(exact(&h) < after_drop, "step 4 made room");
    assert_eq!(report.dropped_messages, 9);
    let shortened = h.iter().filter(|m| m.role == crate::openai::Role::Tool).all(|m| {
        let text = m.content.as_str().unwrap_or_default();
        text.contains("chars omitted]") && text.chars().count() < 40 + 30
    });
    assert!(shortened, "{}", render(&h, Some(&report)));
}
