//! What a new user meets first: warnings about keys that expanded to nothing and
//! Ollama URLs without `/v1`, `lariat check --probe` against real HTTP answers,
//! `check --as` (one key's view), and `lariat health` (the image's health check).

use std::process::Output;

use serde_json::json;

use crate::cli::{Child, lariat_bin, temp_config};
use crate::harness::*;

fn check(config: &tempfile::NamedTempFile, args: &[&str]) -> (Output, String, String) {
    let out = lariat_bin().args(["check", "--config"]).arg(config.path()).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

/// A provider whose `api_key` came out empty, and one on Ollama's port without
/// `/v1`: both named, with the variable and the fix; the config is still valid.
#[test]
fn check_warns_about_an_empty_key_and_an_ollama_url_without_v1() {
    let config = temp_config(
        r#"
[providers.openai]
base_url = "https://api.openai.com/v1"
api_key = "${LARIAT_TEST_UNSET_OPENAI_KEY:-}"

[providers.local]
base_url = "http://127.0.0.1:11434"

[providers.fine]
base_url = "http://127.0.0.1:11434/v1"

[models.m]
chain = ["openai/gpt-4o-mini", "local/qwen2.5:7b", "fine/qwen2.5:7b"]
tools = []
"#,
    );
    let (out, _, stderr) = check(&config, &[]);
    assert!(out.status.success(), "warnings are not problems: {stderr}");
    let line = |key: &str| {
        stderr
            .lines()
            .find(|l| l.contains("warning:") && l.contains(&format!("`{key}`")))
            .unwrap_or_else(|| panic!("no warning for {key}:\n{stderr}"))
            .to_owned()
    };
    let key = line("providers.openai.api_key");
    assert!(key.starts_with(&config.path().display().to_string()), "{key}");
    assert!(key.contains("`LARIAT_TEST_UNSET_OPENAI_KEY` is not set") && key.contains("provider `openai`"), "{key}");
    let url = line("providers.local.base_url");
    assert!(url.contains("looks like Ollama") && url.contains("`http://127.0.0.1:11434/v1`"), "{url}");
    assert_eq!(stderr.matches("warning:").count(), 2, "the `/v1` URL is fine:\n{stderr}");
    // The variable set: no warning.
    let out = lariat_bin()
        .args(["check", "--config"])
        .arg(config.path())
        .env("LARIAT_TEST_UNSET_OPENAI_KEY", "sk-test-0123456789")
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stderr).contains("api_key"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `serve` logs the same warning at start-up.
#[tokio::test]
async fn serving_warns_about_an_empty_key_at_start_up() {
    let mock = MockUpstream::start().await;
    let text = config(&mock, "")
        .replace(&format!("api_key = \"{PROVIDER_KEY}\""), "api_key = \"${LARIAT_TEST_UNSET_PROVIDER_KEY:-}\"");
    let child = Child::start_logging(&text, "json", "info").await;
    child.terminate();
    let (_, logs) = child.wait();
    let warning = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["key"] == "providers.mock.api_key")
        .unwrap_or_else(|| panic!("no start-up warning:\n{logs}"));
    assert_eq!(warning["level"], "WARN");
    let message = warning["message"].as_str().unwrap();
    assert!(message.contains("`LARIAT_TEST_UNSET_PROVIDER_KEY`") && message.contains("provider `mock`"), "{message}");
}

/// One provider of each verdict: ok (with the key sent), refused (status and the
/// provider's message), unreachable (nothing listens), timeout (never answers).
#[tokio::test]
async fn check_probe_gives_each_provider_a_verdict() {
    let ok = MockUpstream::start().await;
    ok.push(Reply::json(200, json!({"object": "list", "data": [{"id": "gpt-test"}, {"id": "other"}]})));
    let refusing = MockUpstream::start().await;
    refusing.push(Reply::error(401, "Incorrect API key provided"));
    let hanging = MockUpstream::start().await;
    hanging.push(Reply::Hang);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = temp_config(&format!(
        r#"
[providers.good]
base_url = "{}"
api_key = "{PROVIDER_KEY}"
[providers.refusing]
base_url = "{}"
[providers.hanging]
base_url = "{}"
[providers.gone]
base_url = "http://{closed}/v1"

[models.m]
chain = ["good/gpt-test", "good/not-pulled", "refusing/x", "hanging/y", "gone/z"]
tools = []
"#,
        ok.url, refusing.url, hanging.url
    ));
    let (out, stdout, stderr) = tokio::task::spawn_blocking(move || {
        let result = check(&config, &["--probe", "--probe-timeout", "1"]);
        drop(config);
        result
    })
    .await
    .unwrap();
    assert!(!out.status.success(), "failing providers fail the check:\n{stdout}\n{stderr}");
    let good = ok.received();
    assert_eq!(good.len(), 1);
    assert_eq!(good[0].path, "/v1/models");
    assert_eq!(good[0].headers["authorization"], format!("Bearer {PROVIDER_KEY}"));
    assert!(stdout.contains(&format!("provider good: GET {}/models: ok (2 models)", ok.url)), "{stdout}");
    assert!(stdout.contains("note: `not-pulled` is not in its list of models"), "{stdout}");
    assert!(!stdout.contains("`gpt-test` is not"), "{stdout}");
    let verdict = |provider: &str| {
        stderr
            .lines()
            .find(|l| l.contains(&format!("`providers.{provider}`")))
            .unwrap_or_else(|| panic!("no verdict for {provider}:\n{stderr}"))
            .to_owned()
    };
    assert!(verdict("refusing").contains("refused: HTTP 401: Incorrect API key provided"), "{stderr}");
    assert!(verdict("hanging").contains("timeout: no answer within 1 s"), "{stderr}");
    assert!(verdict("gone").contains("unreachable:"), "{stderr}");
    assert!(stderr.contains("3 problem(s) found"), "{stderr}");
}

#[tokio::test]
async fn check_probe_passes_when_every_provider_answers() {
    let mock = MockUpstream::start().await;
    mock.always(Reply::json(200, json!({"object": "list", "data": [{"id": "gpt-test"}, {"id": "other-model"}]})));
    let config = temp_config(&config(&mock, ""));
    let (out, stdout, stderr) = tokio::task::spawn_blocking(move || check(&config, &["--probe"])).await.unwrap();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("provider mock: GET") && stdout.contains("ok (2 models)"), "{stdout}");
    assert!(!stdout.contains("note:"), "{stdout}");
}

/// `--as` shows what one key's user gets: only the models the key may use, only the
/// tools its access level reaches.
#[test]
fn check_as_shows_one_users_models_and_tools() {
    let mock_url = "http://127.0.0.1:9/v1";
    let text = format!(
        r#"
[providers.p]
base_url = "{mock_url}"
[models.assistant]
chain = ["p/a"]
[models.other]
chain = ["p/b"]
[tools.http.admin_only]
description = "Admin tool"
url = "http://127.0.0.1:9/x"
min_access = "admin"
[[keys]]
key = "{ALICE}"
user = "alice"
access = "admin"
[[keys]]
key = "{BOB}"
user = "bob"
access = "user"
models = ["other"]
"#
    );
    let config = temp_config(&text);
    let (out, admin, _) = check(&config, &[]);
    assert!(out.status.success());
    assert!(admin.contains("model assistant: p/a"), "{admin}");
    let tools = admin.lines().find(|l| l.contains("tools (admin)")).unwrap_or_else(|| panic!("{admin}"));
    assert!(tools.contains("admin_only") && tools.contains("current_time"), "{tools}");
    let (out, bob, stderr) = check(&config, &["--as", "bob"]);
    assert!(out.status.success(), "{stderr}");
    assert!(bob.contains("model assistant: not offered to bob, user"), "{bob}");
    assert!(bob.contains("model other: p/b"), "{bob}");
    let tools = bob.lines().find(|l| l.contains("tools (bob, user)")).unwrap_or_else(|| panic!("{bob}"));
    assert!(tools.contains("current_time") && !tools.contains("admin_only"), "{tools}");
    let (out, _, stderr) = check(&config, &["--as", "carol"]);
    assert!(!out.status.success());
    assert!(stderr.contains("no [[keys]] entry has user `carol` (there are: alice, bob)"), "{stderr}");
}

/// `lariat health` answers for a running lariat (found through `--addr`, or through
/// the config's `listen`, `0.0.0.0` asked on loopback) and fails where none listens.
#[tokio::test]
async fn health_subcommand_checks_a_running_lariat() {
    let mock = MockUpstream::start().await;
    let child = Child::start(&config(&mock, ""), "json").await;
    let addr = child.url.trim_start_matches("http://").to_owned();
    let port = addr.rsplit(':').next().unwrap().to_owned();
    let run = |args: Vec<String>| async move {
        tokio::task::spawn_blocking(move || lariat_bin().arg("health").args(args).output().unwrap()).await.unwrap()
    };
    let out = run(vec!["--addr".into(), addr.clone()]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("healthy"));
    let in_container = temp_config(&format!(
        "[server]\nlisten = \"0.0.0.0:{port}\"\n[providers.p]\nbase_url = \"http://127.0.0.1:9/v1\"\n[models.m]\nchain = [\"p/x\"]\n[[keys]]\nkey = \"{ALICE}\"\nuser = \"a\"\n"
    ));
    let out = run(vec!["--config".into(), in_container.path().display().to_string()]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    child.terminate();
    let (status, logs) = child.wait();
    assert!(status.success(), "{logs}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let out = run(vec!["--addr".into(), closed.to_string(), "--timeout".into(), "1".into()]).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unreachable"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// The configs baked into the image and mounted by compose.yaml are valid with the
/// keys set, listen on every interface, and refuse to load without the client key.
#[test]
fn the_container_configs_load_with_keys_from_the_environment() {
    let root = env!("CARGO_MANIFEST_DIR");
    for file in ["config/container.toml", "deploy/lariat-compose.toml"] {
        let path = std::path::Path::new(root).join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let env = |name: &str| match name {
            "LARIAT_API_KEY" => Some("sk-container-0123456789".to_owned()),
            "LARIAT_WEBUI_KEY" => Some("sk-webui-0123456789".to_owned()),
            _ => None,
        };
        let config = lariat::config::Config::from_toml(&path, &text, &env).unwrap_or_else(|e| panic!("{file}: {e:?}"));
        assert_eq!(config.server.listen.to_string(), "0.0.0.0:8080", "{file}");
        assert!(!config.keys.is_empty(), "{file}");
        assert_eq!(config.providers["local"].chat_url, "http://host.docker.internal:11434/v1/chat/completions");
        let warned: Vec<&str> = config.warnings.iter().map(|w| w.key.as_str()).collect();
        assert_eq!(warned, ["providers.openai.api_key"], "{file}: no OpenAI key is worth a warning, nothing else");
        let missing = lariat::config::Config::from_toml(&path, &text, &|_| None).unwrap_err();
        assert!(
            missing.iter().any(|e| e.key.starts_with("keys[0].key") && e.reason.contains("`LARIAT_API_KEY`")),
            "{file}: {missing:?}"
        );
    }
}
