//! Property tests: random histories and budgets either compact to a valid list
//! within budget, or overflow only when the most compacted list cannot fit.

use proptest::prelude::*;

use super::shape::{invalid, is_instruction, is_result};
use super::tests::{answer, calls, result, system, user};
use super::truncate::truncate;
use super::*;
use crate::openai::{Message, Role};

/// Texts of every shape that matters: prose, JSON, multi-byte, empty, huge.
fn text() -> impl Strategy<Value = String> {
    let chunk = prop::sample::select(vec!["lorem ipsum dolor ", "{\"k\": 12, \"v\": [1, 2]}, ", "日本語🦀é ", "x"]);
    let repeats = prop_oneof![4 => 0usize..8, 3 => 8usize..80, 1 => 300usize..700];
    (chunk, repeats).prop_map(|(chunk, n)| chunk.repeat(n))
}

/// One round: an assistant message calling 0..=3 tools and their results, or a
/// plain answer.
fn round(turn: usize, round: usize) -> impl Strategy<Value = Vec<Message>> {
    prop::collection::vec(text(), 0..=3).prop_flat_map(move |results| {
        text().prop_map(move |answer_text| {
            if results.is_empty() {
                return vec![answer(&answer_text)];
            }
            let ids: Vec<String> = (0..results.len()).map(|k| format!("t{turn}r{round}c{k}")).collect();
            let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            let mut out = vec![calls(&id_refs)];
            out.extend(ids.iter().zip(&results).map(|(id, text)| result(id, text)));
            out
        })
    })
}

fn turn(turn: usize) -> impl Strategy<Value = Vec<Message>> {
    (text(), any::<bool>(), (0usize..4).prop_flat_map(move |n| (0..n).map(|r| round(turn, r)).collect::<Vec<_>>()))
        .prop_map(|(question, developer, rounds)| {
            let mut out = Vec::new();
            if developer {
                out.push(Message { role: Role::Developer, ..system("Be brief.") });
            }
            out.push(user(&question));
            out.extend(rounds.into_iter().flatten());
            out
        })
}

fn history() -> impl Strategy<Value = Vec<Message>> {
    (any::<bool>(), (1usize..5).prop_flat_map(|n| (0..n).map(turn).collect::<Vec<_>>())).prop_map(|(sys, turns)| {
        let mut out = if sys { vec![system("You are a careful assistant.")] } else { Vec::new() };
        out.extend(turns.into_iter().flatten());
        out
    })
}

fn policy() -> impl Strategy<Value = Policy> {
    (0usize..4, 0usize..50, 0usize..200).prop_map(|(keep_recent, head_chars, extra)| Policy {
        keep_recent,
        head_chars,
        recent_cap_chars: head_chars + extra,
        ..Policy::default()
    })
}

/// The most compacted list, built independently of the compactor: every result cut
/// to `head_chars`, and only instructions plus the latest user message onwards kept.
fn minimal(history: &[Message], policy: &Policy) -> Vec<Message> {
    let mut out = history.to_vec();
    for message in out.iter_mut().filter(|m| is_result(m)) {
        truncate(&mut message.content, policy.head_chars);
    }
    let latest = out.iter().rposition(|m| m.role == Role::User).unwrap_or(0);
    out.into_iter().enumerate().filter(|(i, m)| *i >= latest || is_instruction(m)).map(|(_, m)| m).collect()
}

fn tokenizer() -> impl Strategy<Value = Tokenizer> {
    prop::sample::select(vec![Tokenizer::O200k, Tokenizer::Cl100k, Tokenizer::Estimate])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn compacts_within_budget_or_overflows_only_when_it_must(
        original in history(), policy in policy(), tokenizer in tokenizer(), share in 0.0f64..1.2,
    ) {
        let tools = [];
        let before = count(&original, &tools, tokenizer);
        let limit = (before as f64 * share) as usize;
        let mut messages = original.clone();
        let outcome = compact(&mut messages, &tools, Budget { limit }, tokenizer, &policy);
        let smallest = minimal(&original, &policy);
        prop_assert_eq!(invalid(&messages), None);
        match outcome {
            Ok(report) => {
                let after = count(&messages, &tools, tokenizer);
                prop_assert!(after <= limit, "{} > {}", after, limit);
                prop_assert!(after <= report.tokens_after && report.tokens_after <= limit);
                prop_assert_eq!(report.dropped_messages, original.len() - messages.len());
                if before <= limit {
                    prop_assert!(report.is_noop());
                    prop_assert_eq!(&messages, &original);
                }
                // The latest turn is all there, its tool results at most shortened.
                let latest = |list: &[Message]| list.iter().rposition(|m| m.role == Role::User).unwrap_or(0);
                let (kept_tail, original_tail) = (&messages[latest(&messages)..], &original[latest(&original)..]);
                prop_assert_eq!(kept_tail.len(), original_tail.len());
                for (kept, was) in kept_tail.iter().zip(original_tail) {
                    prop_assert!(kept.content == was.content || is_result(was));
                    prop_assert_eq!((kept.role, &kept.tool_calls, &kept.tool_call_id), (was.role, &was.tool_calls, &was.tool_call_id));
                }
                let instructions = |list: &[Message]| list.iter().filter(|m| is_instruction(m)).cloned().collect::<Vec<_>>();
                prop_assert_eq!(instructions(&messages), instructions(&original));
                // Idempotent.
                let mut again = messages.clone();
                let second = compact(&mut again, &tools, Budget { limit }, tokenizer, &policy);
                prop_assert!(second.is_ok_and(|r| r.is_noop()));
                prop_assert_eq!(&again, &messages);
            }
            Err(overflow) => {
                let needed = count(&smallest, &tools, tokenizer);
                prop_assert!(needed > limit);
                prop_assert_eq!(overflow, Overflow { needed, limit });
                prop_assert_eq!(&messages, &smallest);
            }
        }
    }

    #[test]
    fn a_kept_compactor_matches_a_fresh_one(
        original in history(), policy in policy(), tokenizer in tokenizer(), share in 0.0f64..1.2, seen in 0.0f64..1.0,
    ) {
        let limit = (count(&original, &[], tokenizer) as f64 * share) as usize;
        let mut kept = Compactor::new(policy.clone());
        // The loop's use: counts of an earlier, shorter list are already known.
        let prefix = (original.len() as f64 * seen) as usize;
        kept.count(&original[..prefix], &[], tokenizer);
        let (mut a, mut b) = (original.clone(), original.clone());
        let ra = kept.compact(&mut a, &[], Budget { limit }, tokenizer);
        let rb = compact(&mut b, &[], Budget { limit }, tokenizer, &policy);
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(ra.map(|r| (r.truncated, r.capped, r.dropped_messages)), rb.map(|r| (r.truncated, r.capped, r.dropped_messages)));
        prop_assert_eq!(kept.count(&a, &[], tokenizer), count(&a, &[], tokenizer));
    }

    #[test]
    fn dropped_groups_come_back_with_room_for_their_summary(
        original in history(), policy in policy(), tokenizer in tokenizer(), share in 0.0f64..1.2, reserve in 0usize..300,
    ) {
        let limit = (count(&original, &[], tokenizer) as f64 * share) as usize;
        let mut messages = original.clone();
        let outcome = Compactor::new(policy.clone()).compact_keeping(&mut messages, &[], Budget { limit }, tokenizer, reserve);
        let Ok((report, dropped)) = outcome else { return Ok(()) };
        prop_assert_eq!(report.dropped_messages, dropped.messages.len());
        prop_assert_eq!(messages.len() + dropped.messages.len(), original.len());
        prop_assert!(dropped.messages.iter().all(|m| !is_instruction(m)));
        if dropped.is_empty() {
            return Ok(());
        }
        // The oldest groups went (the first message after the instructions is among
        // them), and what is kept starts with a user message (no turn is cut in half).
        let first = original.iter().find(|m| !is_instruction(m)).map(|m| (m.role, &m.tool_calls));
        prop_assert_eq!(first, dropped.messages.first().map(|m| (m.role, &m.tool_calls)));
        prop_assert_eq!(messages.iter().find(|m| !is_instruction(m)).map(|m| m.role), Some(Role::User));
        // Kept and dropped interleave back into the original (results at most shortened).
        let (mut kept, mut gone) = (messages.iter().peekable(), dropped.messages.iter().peekable());
        let same = |a: &Message, b: &Message| {
            (a.role, &a.tool_calls, &a.tool_call_id) == (b.role, &b.tool_calls, &b.tool_call_id)
                && (a.content == b.content || is_result(b))
        };
        for was in &original {
            let next = if gone.peek().is_some_and(|m| same(m, was)) { gone.next() } else { kept.next() };
            prop_assert!(next.is_some_and(|m| same(m, was)), "{:?} is neither kept nor dropped", was);
        }
        // A summary of up to `reserve` tokens fits whenever the most compacted list leaves room for it.
        let after = count(&messages, &[], tokenizer);
        if count(&minimal(&original, &policy), &[], tokenizer) + reserve <= limit {
            prop_assert!(after + reserve <= limit, "{} + {} > {}", after, reserve, limit);
        }
    }
}
