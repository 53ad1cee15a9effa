//! Benchmark: compaction of a 1,000-message history and token counting throughput
//! (target: the loop's own work per round, compaction included, under 1 ms).
//!
//! `cargo run --release --example compact`. The history: a system prompt, 20 tool
//! schemas, then 50 user turns of 9 tool rounds each (an assistant call and a
//! 2–20 kB result of JSON, logs or prose) and a final answer: 1,001 messages, about
//! 5.5 MB. The budget is a 128k window at the default ratio (96,000 tokens).
//! "First" compacts it with a fresh `Compactor`; "per round" then grows the running
//! turn by one round (2 messages) and compacts again, 300 times, as the loop does
//! (with a new user question every ten rounds, as successive requests would bring).

#![expect(clippy::disallowed_methods, reason = "a benchmark measures real time")]

use std::error::Error;
use std::hint::black_box;
use std::time::{Duration, Instant};

use lariat::compact::{Budget, Compactor, Policy, Tokenizer};
use lariat::openai::{Message, ToolDef};
use serde_json::json;

const TARGET: Duration = Duration::from_millis(1);
const ROUNDS: usize = 300;

fn main() -> Result<(), Box<dyn Error>> {
    let mut rng = Lcg(0x2545_f491_4f6c_dd1d);
    let tools = tools()?;
    let history = history(&mut rng)?;
    let bytes: usize = history.iter().map(|m| m.content.as_str().map_or(0, str::len)).sum();
    let budget = Budget::new(128_000, 0.75, 0);
    println!(
        "history: {} messages, {:.1} MB of content, {} tools, budget {} tokens\n",
        history.len(),
        mb(bytes),
        tools.len(),
        budget.limit
    );

    for tokenizer in [Tokenizer::O200k, Tokenizer::Cl100k] {
        let start = Instant::now();
        tokenizer.warm_up();
        println!("{tokenizer}: tables built in {} (once per process: `Tokenizer::warm_up`)", ms(start.elapsed()));
    }
    println!();
    println!(
        "| tokenizer | first compaction | per round: median | p99 | max | rounds over 1 ms | what the first did |"
    );
    println!("|---|---|---|---|---|---|---|");
    for tokenizer in [Tokenizer::O200k, Tokenizer::Estimate] {
        let mut messages = history.clone();
        let mut compactor = Compactor::new(Policy::default());
        let start = Instant::now();
        let first = compactor.compact(&mut messages, &tools, budget, tokenizer);
        let first_time = start.elapsed();
        let first = first.map_err(|e| e.to_string())?;
        let mut times = Vec::with_capacity(ROUNDS);
        for round in 0..ROUNDS {
            if round % 10 == 9 {
                // A new question every ten rounds keeps the running turn from
                // outgrowing the budget on its own (the loop's round limit does that).
                messages.push(message(json!({"role": "user", "content": "And what about the next part?"}))?);
            }
            messages.push(call(&format!("call_bench_{round}"))?);
            messages.push(result(&format!("call_bench_{round}"), &mut rng)?);
            let start = Instant::now();
            let report = compactor.compact(&mut messages, &tools, budget, tokenizer);
            times.push(start.elapsed());
            black_box(report.map_err(|e| e.to_string())?);
        }
        times.sort_unstable();
        let over = times.iter().filter(|t| **t > TARGET).count();
        println!(
            "| {tokenizer} | {} | {} | {} | {} | {over} of {ROUNDS} | {} truncated, {} capped, {} dropped; {} → ≤ {} tokens |",
            ms(first_time),
            ms(times[ROUNDS / 2]),
            ms(times[ROUNDS * 99 / 100]),
            ms(times[ROUNDS - 1]),
            first.truncated,
            first.capped,
            first.dropped_messages,
            first.tokens_before,
            first.tokens_after,
        );
    }

    // Without a kept Compactor every round recounts what it needs from scratch.
    let mut messages = history.clone();
    lariat::compact::compact(&mut messages, &tools, budget, Tokenizer::O200k, &Policy::default())
        .map_err(|e| e.to_string())?;
    messages.push(call("call_once")?);
    messages.push(result("call_once", &mut rng)?);
    let start = Instant::now();
    let once = lariat::compact::compact(&mut messages, &tools, budget, Tokenizer::O200k, &Policy::default());
    let once_time = start.elapsed();
    black_box(once.map_err(|e| e.to_string())?);
    println!("\none round with the one-shot `compact` (no kept counts), o200k: {}", ms(once_time));

    let corpus: String = history.iter().filter_map(|m| m.content.as_str()).collect();
    println!("\ncounting {:.1} MB of tool results, system prompt and messages:\n", mb(corpus.len()));
    println!("| tokenizer | tokens | time | MB/s | tokens/s |");
    println!("|---|---|---|---|---|");
    for tokenizer in [Tokenizer::O200k, Tokenizer::Cl100k, Tokenizer::Estimate] {
        let start = Instant::now();
        let tokens = black_box(tokenizer.count(black_box(&corpus)));
        let secs = start.elapsed().as_secs_f64();
        println!(
            "| {tokenizer} | {tokens} | {} | {:.0} | {:.1} M |",
            ms(start.elapsed()),
            mb(corpus.len()) / secs,
            tokens as f64 / secs / 1e6
        );
    }
    println!("\ntarget: the loop's own work per round under {} including compaction", ms(TARGET));
    Ok(())
}

fn history(rng: &mut Lcg) -> Result<Vec<Message>, serde_json::Error> {
    let mut out =
        vec![message(json!({"role": "system", "content": "You are a careful research assistant. ".repeat(50)}))?];
    for turn in 0..50 {
        out.push(message(
            json!({"role": "user", "content": format!("Question {turn}: {}", "please look into this. ".repeat(8))}),
        )?);
        for round in 0..9 {
            let id = format!("call_{turn}_{round}");
            out.push(call(&id)?);
            out.push(result(&id, rng)?);
        }
        out.push(message(json!({"role": "assistant", "content": "Here is what I found. ".repeat(20)}))?);
    }
    Ok(out)
}

fn call(id: &str) -> Result<Message, serde_json::Error> {
    message(json!({"role": "assistant", "content": null, "tool_calls": [
        {"id": id, "type": "function", "function": {"name": "search_docs", "arguments": "{\"query\":\"context window compaction\",\"limit\":10}"}}
    ]}))
}

/// A tool result of 2–20 kB: JSON records, log lines or prose.
fn result(id: &str, rng: &mut Lcg) -> Result<Message, serde_json::Error> {
    let size = 2_000 + rng.below(18_000);
    let mut text = String::with_capacity(size + 200);
    let kind = rng.below(3);
    while text.len() < size {
        let n = rng.below(1_000_000);
        match kind {
            0 => text.push_str(&format!(
                "{{\"id\": {n}, \"name\": \"item-{n}\", \"score\": 0.{n}, \"tags\": [\"a\", \"b\"]}},\n"
            )),
            1 => text.push_str(&format!(
                "2026-05-05T22:01:{:02}Z INFO request id={n:x} latency_ms={} status=200\n",
                n % 60,
                n % 997
            )),
            _ => text.push_str("The budget is the context window times the ratio minus the reply length. "),
        }
    }
    message(json!({"role": "tool", "tool_call_id": id, "content": text}))
}

fn tools() -> Result<Vec<ToolDef>, serde_json::Error> {
    (0..20)
        .map(|i| {
            serde_json::from_value(json!({"type": "function", "function": {
                "name": format!("tool_{i}"),
                "description": "Searches the documentation and returns the best matching passages with their sources.",
                "parameters": {"type": "object", "properties": {
                    "query": {"type": "string", "description": "What to look for."},
                    "limit": {"type": "integer", "description": "How many passages to return.", "minimum": 1}
                }, "required": ["query"]}
            }}))
        })
        .collect()
}

fn message(value: serde_json::Value) -> Result<Message, serde_json::Error> {
    serde_json::from_value(value)
}

/// A deterministic generator, so every run measures the same history.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as usize) % n
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn mb(bytes: usize) -> f64 {
    bytes as f64 / 1e6
}
