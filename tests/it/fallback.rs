//! The fallback chain: retries, backoff and `Retry-After`, moving on,
//! cool-downs, stickiness, streams failing before and after their first chunk.
//!
//! Tests that wait (backoff, `Retry-After`, timeouts, cool-downs) run under tokio's
//! paused time: the clock jumps over sleeps, so nothing really waits.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lariat::config::Config;
use lariat::openai::ChatRequest;
use lariat::telemetry::Metrics;
use lariat::upstream::{Fixed, Params, Reply as UpstreamReply, Route, Upstream};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::harness::*;

/// A config whose model `chained` walks one provider per mock (`a`, `b`, `c`...),
/// each target `<provider>/m`, with `upstream` lines and per-entry `entry` settings.
fn chain_config(mocks: &[&MockUpstream], upstream: &str, entry: &[&str]) -> String {
    let names = ["a", "b", "c", "d"];
    let mut text = format!("[upstream]\nbackoff_base_s = 0.5\nbackoff_max_s = 4\n{upstream}\n");
    for (name, mock) in names.iter().zip(mocks) {
        text.push_str(&format!("[providers.{name}]\nbase_url = \"{}\"\n", mock.url));
    }
    let chain: Vec<String> = names
        .iter()
        .zip(mocks)
        .enumerate()
        .map(|(i, (name, _))| {
            format!("{{ target = \"{name}/m\"{} }}", entry.get(i).map(|e| format!(", {e}")).unwrap_or_default())
        })
        .collect();
    text.push_str(&format!("[models.chained]\nchain = [{}]\n", chain.join(", ")));
    text
}

async fn mocks(n: usize) -> Vec<MockUpstream> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(MockUpstream::start().await);
    }
    out
}

async fn answer(response: reqwest::Response) -> (String, String, Value) {
    assert_eq!(response.status(), 200);
    let upstream = response.headers()["x-lariat-upstream"].to_str().unwrap().to_owned();
    let attempts = response.headers()["x-lariat-attempts"].to_str().unwrap().to_owned();
    (upstream, attempts, response.json().await.unwrap())
}

#[tokio::test(start_paused = true)]
async fn a_500_is_retried_on_the_same_target() {
    let m = mocks(2).await;
    m[0].push(Reply::error(500, "hiccup")).push(Reply::text("second try"));
    let lariat = Lariat::start(&chain_config(&[&m[0], &m[1]], "", &[])).await;
    let (upstream, attempts, body) = answer(lariat.chat(request("chained", false)).await).await;
    assert_eq!((upstream.as_str(), attempts.as_str()), ("a/m", "2"));
    assert_eq!(body["choices"][0]["message"]["content"], "second try");
    assert!(m[1].received().is_empty());
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_and_capped() {
    let m = mocks(2).await;
    m[0].push(Reply::error(429, "slow down").with_header("retry-after", "7")).push(Reply::text("after the pause"));
    m[1].always(Reply::text("from b"));
    let lariat = Lariat::start(&chain_config(&[&m[0], &m[1]], "retry_after_max_s = 30", &[])).await;
    let started = Instant::now();
    let (upstream, _, _) = answer(lariat.chat(request("chained", false)).await).await;
    assert_eq!(upstream, "a/m");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(7) && waited < Duration::from_secs(8), "waited {waited:?}");

    // A pause longer than the cap is not waited for: the next target answers.
    m[0].push(Reply::error(429, "come back in an hour").with_header("retry-after", "3600"));
    let started = Instant::now();
    let (upstream, attempts, _) = answer(lariat.chat(request("chained", false)).await).await;
    assert_eq!((upstream.as_str(), attempts.as_str()), ("b/m", "2"));
    assert!(started.elapsed() < Duration::from_secs(1), "waited {:?}", started.elapsed());
}

#[tokio::test(start_paused = true)]
async fn backoff_grows_between_retries() {
    let m = mocks(1).await;
    m[0].push(Reply::error(503, "busy")).push(Reply::error(503, "busy")).push(Reply::text("third time"));
    let lariat = Lariat::start(&chain_config(&[&m[0]], "retries = 2", &[])).await;
    let started = Instant::now();
    let (_, attempts, _) = answer(lariat.chat(request("chained", false)).await).await;
    assert_eq!(attempts, "3");
    // 0.5 s then 1 s, each jittered down to half at most.
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(750) && waited <= Duration::from_millis(1600), "waited {waited:?}");
}

#[tokio::test(start_paused = true)]
async fn auth_failures_move_on_at_once() {
    let m = mocks(2).await;
    m[0].always(Reply::error(401, "bad key"));
    m[1].always(Reply::text("from b"));
    let lariat = Lariat::start(&chain_config(&[&m[0], &m[1]], "retries = 3", &[])).await;
    let (upstream, attempts, _) = answer(lariat.chat(request("chained", false)).await).await;
    assert_eq!((upstream.as_str(), attempts.as_str()), ("b/m", "2"));
    assert_eq!(m[0].received().len(), 1, "a 401 is not retried");
    for status in [403, 404] {
        m[0].push(Reply::error(status, "no"));
        let (upstream, _, _) = answer(lariat.chat(request("chained", false)).await).await;
        assert_eq!(upstream, "b/m");
    }
    let metrics = lariat.get("/metrics", None).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"lariat_upstream_fallbacks_total{from="a/m",to="b/m"} 3"#), "{metrics}");
}

#[tokio::test(start_paused = true)]
async fn a_client_error_goes_back_without_fallback() {
    let m = mocks(2).await;
    m[0].push(Reply::error(400, "messages[0].content is required"));
    let lariat = Lariat::start(&chain_config(&[&m[0], &m[1]], "retries = 3", &[])).await;
    let error = expect_error(lariat.chat(request("chained", false)).await, 400, "upstream_rejected").await;
    assert_eq!(error["message"], "messages[0].content is required");
    assert_eq!(m[0].received().len(), 1);
    assert!(m[1].received().is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_whole_chain_failing_names_every_target() {
    let m = mocks(3).await;
    m[0].always(Reply::error(503, "overloaded"));
    m[1].always(Reply::Raw { status: 200, content_type: "application/json", body: "<html>oops</html>".into() });
    m[2].always(Reply::error(401, "invalid key"));
    let lariat = Lariat::start(&chain_config(&[&m[0], &m[1], &m[2]], "retries = 1", &[])).await;
    let error = expect_error(lariat.chat(request("chained", false)).await, 502, "upstream_failed").await;
    let message = error["message"].as_str().unwrap();
    for part in ["a/m (2 attempts) → HTTP 503: overloaded", "b/m → invalid response", "c/m → HTTP 401: invalid key"]
    {
        assert!(message.contains(part), "{part:?} missing from {message}");
    }
    assert_eq!(m[1].received().len(), 1, "a garbage body is not retried");
}

#[tokio::test(start_paused = true)]
async fn hanging_targets_hit_their_timeouts() {
    let m = mocks(2).await;
    m[0].always(Reply::Hang);
    m[1].always(Reply::Hang);
    let entry = ["timeout_s = 20", "first_byte_timeout_s = 5, timeout_s = 30"];
    let lariat = Lariat::start(&chain_config(&[&m[0], &m[1]], "retries = 0", &entry)).await;
    // Non-streaming: the total timeout; every target timed out, so 504.
    let error = expect_error(lariat.chat(request("chained", false)).await, 504, "upstream_timeout").await;
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("a/m → no answer after 20s") && message.contains("b/m → no answer after 30s"),
        "{message}"
    );
    // Streaming: the first-byte timeout.
    let error = expect_error(lariat.chat(request("chained", true)).await, 504, "upstream_timeout").await;
    assert!(error["message"].as_str().unwrap().contains("b/m → no first chunk after 5s"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn a_hanging_target_falls_back_to_a_live_one() {
    let m = mocks(2).await;
    m[0].always(Reply::Hang);
    m[1].always(Reply::stream(&["rescued"]));
    let lariat = Lariat::start(&chain_config(&[&m[0], &m[1]], "retries = 0", &["first_byte_timeout_s = 3"])).await;
    let response = lariat.chat(request("chained", true)).await;
    assert_eq!(response.headers()["x-lariat-upstream"], "b/m");
    let chunks = json_events(&SseReader::new(response).collect().await);
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "rescued");
}

#[tokio::test(start_paused = true)]
async fn cool_down_skips_a_dead_target_and_recovers() {
    let m = mocks(2).await;
    m[0].push(Reply::error(500, "down")).push(Reply::error(500, "down"));
    m[1].always(Reply::text("from b"));
    let upstream = "retries = 0\ncooldown_after = 2\ncooldown_s = 30";
    let lariat = Lariat::start(&chain_config(&[&m[0], &m[1]], upstream, &[])).await;
    for _ in 0..2 {
        let (answered, _, _) = answer(lariat.chat(request("chained", false)).await).await;
        assert_eq!(answered, "b/m");
    }
    assert_eq!(m[0].received().len(), 2);
    // Cooling: the next request goes straight to b.
    let (answered, attempts, _) = answer(lariat.chat(request("chained", false)).await).await;
    assert_eq!((answered.as_str(), attempts.as_str()), ("b/m", "1"));
    assert_eq!(m[0].received().len(), 2, "a cooling target is skipped");
    let metrics = lariat.get("/metrics", None).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"lariat_upstream_cooldowns_total{target="a/m"} 1"#), "{metrics}");
    // After the cool-down a is tried again, and answers.
    tokio::time::advance(Duration::from_secs(31)).await;
    m[0].push(Reply::text("a is back"));
    let (answered, _, _) = answer(lariat.chat(request("chained", false)).await).await;
    assert_eq!(answered, "a/m");
}

#[tokio::test(start_paused = true)]
async fn every_target_cooling_still_gets_a_try() {
    let m = mocks(2).await;
    m[0].push(Reply::error(500, "down"));
    m[1].push(Reply::error(500, "down"));
    let upstream = "retries = 0\ncooldown_after = 1\ncooldown_s = 300";
    let lariat = Lariat::start(&chain_config(&[&m[0], &m[1]], upstream, &[])).await;
    expect_error(lariat.chat(request("chained", false)).await, 502, "upstream_failed").await;
    // Both cool down; a failed first, so it is the least recently failed and goes first.
    m[0].push(Reply::text("a again"));
    let (answered, _, _) = answer(lariat.chat(request("chained", false)).await).await;
    assert_eq!(answered, "a/m");
}

#[tokio::test(start_paused = true)]
async fn a_stream_failing_before_its_first_chunk_falls_back_invisibly() {
    let m = mocks(3).await;
    m[0].push(Reply::Sse(vec![Step::Cut]));
    m[1].push(Reply::Sse(vec![Step::Data("this is not json".into())]));
    m[2].push(Reply::stream(&["clean ", "answer"]));
    let lariat = Lariat::start(&chain_config(&[&m[0], &m[1], &m[2]], "retries = 0", &[])).await;
    let response = lariat.chat(request("chained", true)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-lariat-upstream"], "c/m");
    assert_eq!(response.headers()["x-lariat-attempts"], "3");
    let events = SseReader::new(response).collect().await;
    assert!(events.iter().all(|e| !e.contains("error")), "{events:?}");
    let text: String =
        json_events(&events).iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, "clean answer");
}

#[tokio::test(start_paused = true)]
async fn a_stream_cut_after_content_ends_with_an_error_not_a_fallback() {
    let m = mocks(2).await;
    m[0].push(Reply::Sse(vec![
        Step::Data(chunk(json!({"role": "assistant", "content": "half"}), None)),
        Step::Sleep(Duration::from_millis(100)),
        Step::Cut,
    ]));
    m[1].always(Reply::stream(&["never"]));
    let lariat = Lariat::start(&chain_config(&[&m[0], &m[1]], "retries = 2", &[])).await;
    let events = SseReader::new(lariat.chat(request("chained", true)).await).collect().await;
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(events[0].contains("half"));
    let error: Value = serde_json::from_str(&events[1]).unwrap();
    assert!(error["error"]["message"].as_str().unwrap().contains("a/m"), "{error}");
    assert_eq!(events[2], "[DONE]");
    assert!(m[1].received().is_empty(), "content already reached the client: no silent switch");
}

#[tokio::test(start_paused = true)]
async fn a_stalled_stream_ends_with_an_error_event() {
    let m = mocks(1).await;
    m[0].push(Reply::Sse(vec![
        Step::Data(chunk(json!({"role": "assistant", "content": "thinking"}), None)),
        Step::Wait(Arc::new(tokio::sync::Notify::new())),
    ]));
    let lariat = Lariat::start(&chain_config(&[&m[0]], "retries = 0", &["stall_timeout_s = 10"])).await;
    let events = SseReader::new(lariat.chat(request("chained", true)).await).collect().await;
    assert_eq!(events.len(), 3, "{events:?}");
    assert!(events[1].contains("stream stalled: no chunk after 10s"), "{events:?}");
    assert_eq!(events[2], "[DONE]");
}

#[tokio::test(start_paused = true)]
async fn a_context_length_error_moves_to_a_larger_window() {
    let m = mocks(3).await;
    let too_long = json!({"error": {"message": "This model's maximum context length is 8192 tokens", "code": "context_length_exceeded"}});
    m[0].always(Reply::json(400, too_long.clone()));
    m[1].always(Reply::text("small window"));
    m[2].always(Reply::text("big window"));
    let entry = ["context_window = 8192", "context_window = 4096", "context_window = 128000"];
    let lariat = Lariat::start(&chain_config(&[&m[0], &m[1], &m[2]], "retries = 2", &entry)).await;
    let (answered, _, _) = answer(lariat.chat(request("chained", false)).await).await;
    assert_eq!(answered, "c/m");
    assert_eq!(m[0].received().len(), 1, "a context-length error is not retried as is");
    assert!(m[1].received().is_empty(), "a smaller window cannot help");

    // No larger window anywhere: the client gets context_length_exceeded.
    let lariat = Lariat::start(&chain_config(&[&m[0], &m[1]], "", &entry)).await;
    let error = expect_error(lariat.chat(request("chained", false)).await, 400, "context_length_exceeded").await;
    assert!(error["message"].as_str().unwrap().contains("maximum context length"), "{error}");
}

/// Stickiness is per request: driven through the library, two upstream calls share
/// one `Route` the way the rounds of one tool loop do.
#[tokio::test(start_paused = true)]
async fn a_request_sticks_to_the_target_that_answered() {
    let m = mocks(2).await;
    m[0].push(Reply::error(401, "rotated key"));
    m[0].always(Reply::text("a"));
    m[1].always(Reply::text("b"));
    let text = chain_config(&[&m[0], &m[1]], "retries = 0", &[]);
    let config = Config::from_toml(Path::new("sticky.toml"), &text, &|_| None).unwrap();
    let upstream = Upstream::new(&config, Arc::new(Metrics::default())).unwrap();
    let chain = &config.models["chained"].chain;
    let request: ChatRequest = serde_json::from_value(request("chained", false)).unwrap();
    let (params, messages) = (Params::from_request(&request), &request.messages);
    let answered_by = |reply: &UpstreamReply| match reply {
        UpstreamReply::Complete(c) => c.choices[0].message.content.as_str().unwrap().to_owned(),
        UpstreamReply::Stream(_) => panic!("asked for JSON"),
        UpstreamReply::Relayed(_) => panic!("asked for a typed answer"),
    };

    let mut route = Route::default();
    let first = upstream.call(chain, &mut route, &mut Fixed(messages), &params, false).await.unwrap();
    assert_eq!((first.target.label(), answered_by(&first.reply)), ("b/m", "b".to_owned()));
    // a would answer now, but this request stays on b...
    let second = upstream.call(chain, &mut route, &mut Fixed(messages), &params, false).await.unwrap();
    assert_eq!(answered_by(&second.reply), "b");
    assert_eq!(m[0].received().len(), 1);
    // ...while a new request starts from the top of the chain.
    let third = upstream.call(chain, &mut Route::default(), &mut Fixed(messages), &params, false).await.unwrap();
    assert_eq!(answered_by(&third.reply), "a");
}
