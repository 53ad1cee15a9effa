//! Memory grows with what lariat is configured to hold, not with what clients or
//! upstreams send: a bounded store of paused conversations, bounded upstream answers.

use serde_json::{Value, json};

use crate::harness::*;
use crate::tools::agent_config;

/// Held confirmations with big conversations fill the store up to its cap; the
/// next ones are refused with a clear 503 (nothing run), and the ones held are
/// still there to be answered: nothing was evicted to make room.
#[tokio::test]
async fn held_confirmations_stay_under_the_store_cap() {
    let mock = MockUpstream::start().await;
    let tools = ToolServer::start().await;
    let config = format!(
        "{}\n[confirm]\ntools = [\"echo\"]\n\n[store]\nmax_entry_bytes = 1048576\nmax_bytes = 2097152\n",
        agent_config(&mock, &tools, "")
    );
    let lariat = Lariat::start(&config).await;
    mock.always(Reply::tool_calls(&[("up_1", "echo", r#"{"text": "hi"}"#)]));
    let big = "x".repeat(600 * 1024);
    let (mut held, mut refused) = (Vec::new(), 0);
    for i in 0..8 {
        let body = json!({"model": "agent", "messages": [{"role": "user", "content": format!("{i} {big}")}]});
        let response = lariat.chat(body.clone()).await;
        match response.status().as_u16() {
            200 => {
                let id = response.headers()["x-lariat-confirmation"].to_str().unwrap().to_owned();
                held.push((body, id));
            }
            503 => {
                let error = expect_error(response, 503, "unavailable").await;
                let message = error["message"].as_str().unwrap();
                assert!(message.contains("full") && message.contains("nothing was run"), "{message}");
                refused += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!((2..=3).contains(&held.len()), "{} held", held.len());
    assert_eq!(held.len() + refused, 8);
    assert!(tools.hits("/echo").is_empty(), "nothing runs unconfirmed");
    // The first one held is still answerable.
    let (mut body, id) = held.swap_remove(0);
    body["lariat"] = json!({"confirm": {"id": id, "approve": true}});
    mock.push(Reply::text("done"));
    let response = lariat.chat(body).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["choices"][0]["message"]["content"], "done", "{answer}");
    assert_eq!(tools.hits("/echo").len(), 1);
}

/// One key's held confirmations fill its share (`store.max_bytes_per_key`) long
/// before the store is full: the next is refused with a 503 that says so.
#[tokio::test]
async fn held_confirmations_of_one_key_stay_under_its_share() {
    let mock = MockUpstream::start().await;
    let tools = ToolServer::start().await;
    let config = format!(
        "{}\n[confirm]\ntools = [\"echo\"]\n\n[store]\nmax_entry_bytes = 1048576\nmax_bytes_per_key = 1572864\n",
        agent_config(&mock, &tools, "")
    );
    let lariat = Lariat::start(&config).await;
    mock.always(Reply::tool_calls(&[("up_1", "echo", r#"{"text": "hi"}"#)]));
    let big = "x".repeat(600 * 1024);
    let mut statuses = Vec::new();
    for i in 0..4 {
        let body = json!({"model": "agent", "messages": [{"role": "user", "content": format!("{i} {big}")}]});
        let response = lariat.chat(body).await;
        statuses.push(response.status().as_u16());
        if response.status() == 503 {
            let error = expect_error(response, 503, "unavailable").await;
            let message = error["message"].as_str().unwrap();
            assert!(message.contains("`store.max_bytes_per_key`") && message.contains("nothing was run"), "{message}");
        }
    }
    assert_eq!(statuses, [200, 200, 503, 503]);
    assert!(tools.hits("/echo").is_empty(), "nothing runs unconfirmed");
}

/// A non-streaming upstream answer over `upstream.max_response_bytes` is a failed
/// attempt, not 50 MB buffered and relayed.
#[tokio::test]
async fn an_oversized_upstream_answer_is_refused() {
    let mock = MockUpstream::start().await;
    let config =
        config(&mock, "").replace("[upstream]\nretries = 0", "[upstream]\nretries = 0\nmax_response_bytes = 4096");
    let lariat = Lariat::start(&config).await;
    mock.push(Reply::text(&"y".repeat(10_000)));
    mock.push(Reply::text("small enough"));
    let error = expect_error(lariat.chat(request("assistant", false)).await, 502, "upstream_failed").await;
    assert!(error["message"].as_str().unwrap().contains("exceeded 4096 bytes"), "{error}");
    let ok: Value = lariat.chat(request("assistant", false)).await.json().await.unwrap();
    assert_eq!(ok["choices"][0]["message"]["content"], "small enough");
}

/// Established connections to `port` on loopback, as the kernel lists them.
fn established_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            fields.len() > 3 && fields[1].ends_with(&local) && fields[3] == "01"
        })
        .count()
}

/// After a burst, the upstream pool keeps at most `pool_max_idle_per_host` idle
/// connections, and none after `pool_idle_timeout_s` (2,000 used to linger for
/// minutes).
#[tokio::test]
async fn the_upstream_pool_lets_a_burst_go() {
    let mock = MockUpstream::start().await;
    mock.always(Reply::Delayed(std::time::Duration::from_millis(100), Box::new(Reply::text("ok"))));
    let port: u16 = mock.url.trim_end_matches("/v1").rsplit(':').next().unwrap().parse().unwrap();
    let config = config(&mock, "").replace(
        "[upstream]\nretries = 0",
        "[upstream]\nretries = 0\npool_max_idle_per_host = 4\npool_idle_timeout_s = 0.5",
    );
    let lariat = Lariat::start(&config).await;
    let burst = (0..60).map(|_| lariat.chat(request("assistant", false)));
    let statuses: Vec<u16> = futures::future::join_all(burst).await.iter().map(|r| r.status().as_u16()).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    if std::fs::metadata("/proc/net/tcp").is_err() {
        eprintln!("SKIPPED: no /proc/net/tcp to count connections");
        return;
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let after_burst = established_to(port);
    assert!(after_burst <= 4, "{after_burst} upstream connections kept after the burst");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(established_to(port), 0, "idle upstream connections outlived pool_idle_timeout_s");
}
