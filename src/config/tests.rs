use std::path::Path;

use secrecy::ExposeSecret;

use super::*;

const BASE: &str = r#"
[providers.openai]
base_url = "https://api.openai.com/v1/"
api_key = "${OPENAI_API_KEY}"
headers = { "OpenAI-Organization" = "org-1" }

[providers.webui]
base_url = "http://127.0.0.1:3000"
kind = "openwebui"

[models.assistant]
chain = ["openai/gpt-4o-mini", { target = "webui/llama3:8b", context_window = 8192, max_rounds = 2 }]
tools = ["current_time", "time__*"]
max_rounds = 50
"#;

fn env(name: &str) -> Option<String> {
    (name == "OPENAI_API_KEY").then(|| "sk-live-secret".to_owned())
}

fn load(text: &str) -> Result<Config, Vec<ConfigError>> {
    Config::from_toml(Path::new("t.toml"), text, &env)
}

fn errors(text: &str) -> Vec<(String, String)> {
    load(text).expect_err("config should be invalid").into_iter().map(|e| (e.key, e.reason)).collect()
}

#[test]
fn parses_the_documented_shape_with_defaults() {
    let c = load(BASE).unwrap();
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.server.max_body_bytes, 10 * 1024 * 1024);
    let openai = &c.providers["openai"];
    assert_eq!(openai.chat_url, "https://api.openai.com/v1/chat/completions");
    assert_eq!(c.providers["webui"].chat_url, "http://127.0.0.1:3000/api/chat/completions");
    let m = &c.models["assistant"];
    assert_eq!(m.chain.iter().map(ChainEntry::label).collect::<Vec<_>>(), ["openai/gpt-4o-mini", "webui/llama3:8b"]);
    assert_eq!(m.chain[1].context_window, Some(8192));
    // A model may not raise the global round ceiling.
    assert_eq!(m.max_rounds, 10);
    assert!(m.tools.as_ref().unwrap().matches("time__now"));
    assert!(c.tools.current_time.is_some() && c.tools.fetch_url.is_some(), "built-ins are on by default");
    assert!(c.confirm.yes_words.iter().any(|w| w == "yes"));
    assert!(matches!(c.store, Store::Memory { .. }));
}

#[test]
fn debug_output_never_shows_secrets() {
    let c = load(&format!("{BASE}\n[[keys]]\nkey = \"sk-client-secret\"\nuser = \"a\"\n")).unwrap();
    let debug = format!("{c:?}");
    assert!(!debug.contains("sk-live-secret") && !debug.contains("org-1"), "{debug}");
    assert!(!debug.contains("sk-client-secret"));
}

#[test]
fn rejects_invalid_sections() {
    let cases: &[(&str, &str, &str)] = &[
        ("[tools.mcp.x]\nargs = []", "tools.mcp.x", "exactly one of `command`"),
        ("[tools.mcp.x]\ncommand = \"a\"\nurl = \"http://h\"", "tools.mcp.x", "exactly one of `command`"),
        (
            "[tools.http.\"bad name\"]\ndescription = \"d\"\nurl = \"http://h\"",
            "tools.http.bad name",
            "not a valid tool name",
        ),
        (
            "[tools.http.w]\ndescription = \"d\"\nurl = \"http://h\"\nmethod = \"TRACE\"",
            "tools.http.w.method",
            "unsupported",
        ),
        (
            "[tools.http.w]\ndescription = \"d\"\nurl = \"http://h\"\nparameters = { type = \"string\" }",
            "tools.http.w.parameters",
            "type = \"object\"",
        ),
        (
            "[tools.http.current_time]\ndescription = \"d\"\nurl = \"http://h\"",
            "tools.builtin.current_time",
            "defined twice",
        ),
        ("[store]\nkind = \"redis\"", "store.url", "redis://"),
        ("[[keys]]\nkey = \"short\"\nuser = \"u\"", "keys[0].key", "at least 8"),
        ("[[keys]]\nkey = \"long-enough-1\"\nkey_sha256 = \"00\"\nuser = \"u\"", "keys[0]", "exactly one of"),
        (
            "[[keys]]\nkey = \"long-enough-1\"\nuser = \"u\"\naccess = \"root\"",
            "keys[0].access",
            "unknown access level",
        ),
        (
            "[[keys]]\nkey = \"long-enough-1\"\nuser = \"u\"\n[[keys]]\nkey = \"long-enough-1\"\nuser = \"v\"",
            "keys[1]",
            "configured twice",
        ),
        ("[confirm]\ntools = [\"{a\"]", "confirm.tools", "bad pattern"),
    ];
    for (extra, key, reason) in cases {
        let errs = errors(&format!("{BASE}\n{extra}\n"));
        assert!(errs.iter().any(|(k, r)| k == key && r.contains(reason)), "{extra}: {errs:?}");
    }
}

#[test]
fn chain_entries_are_checked_one_by_one() {
    let errs = errors(
        "[providers.p]\nbase_url = \"http://h\"\n[models.m]\nchain = [\"p\", 5, \"p/\", { target = \"p/x\", max_rounds = 0 }]\n",
    );
    let keys: Vec<&str> = errs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        ["models.m.chain[0].target", "models.m.chain[1]", "models.m.chain[2].target", "models.m.chain[3].max_rounds"]
    );
    assert!(errors("").iter().any(|(k, _)| k == "models"));
    assert!(
        errors("[providers.p]\nbase_url = \"http://h\"\n[models.m]\nchain = []")
            .iter()
            .any(|(k, _)| k == "models.m.chain")
    );
}

#[test]
fn summaries_are_off_by_default_and_take_a_chain_entry() {
    assert!(load(BASE).unwrap().compaction.summarize.is_none());
    let c = load(&format!("{BASE}\n[compaction]\nsummarize_with = \"webui/llama3:8b\"\n")).unwrap();
    let summarize = c.compaction.summarize.unwrap();
    assert_eq!(summarize.target.label(), "webui/llama3:8b");
    assert_eq!((summarize.max_tokens, summarize.timeout), (512, std::time::Duration::from_secs(30)));
    let table = "[compaction]\nsummarize_with = { target = \"openai/gpt-4o-mini\", context_window = 16384 }\nsummary_max_tokens = 300\nsummary_timeout_s = 5";
    let summarize = load(&format!("{BASE}\n{table}\n")).unwrap().compaction.summarize.unwrap();
    assert_eq!((summarize.target.context_window, summarize.max_tokens), (Some(16384), 300));
    let bad = "[compaction]\nsummarize_with = \"nowhere/x\"\nsummary_max_tokens = 0\nsummary_timeout_s = -1";
    let found = errors(&format!("{BASE}\n{bad}\n"));
    let keys: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
    let expected =
        ["compaction.summarize_with.target", "compaction.summary_max_tokens", "compaction.summary_timeout_s"];
    assert_eq!(keys, expected, "{found:?}");
    assert!(found[0].1.contains("unknown provider `nowhere`"));
    let bad = "[compaction]\nsummarize_with = \"openai/x\"\nsummary_max_tokens = 0\nsummary_timeout_s = -1";
    let found = errors(&format!("{BASE}\n{bad}\n"));
    let keys: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["compaction.summary_max_tokens", "compaction.summary_timeout_s"], "{found:?}");
}

#[test]
fn hardening_limits_have_defaults_and_are_configurable() {
    let c = load(BASE).unwrap();
    assert_eq!(c.server.connections, ConnectionLimits::default());
    assert_eq!(Some(c.server.threads), std::thread::available_parallelism().ok());
    assert_eq!(c.store_limits, StoreLimits::default());
    assert_eq!(c.providers["openai"].max_response_bytes, 32 * 1024 * 1024);
    let text = format!(
        "{BASE}\n[server]\nheader_read_timeout_s = 2.5\nbody_read_timeout_s = 5\nbody_min_rate_bytes_s = 1000\nidle_timeout_s = 30\n\
         max_connections = 100\nmax_header_bytes = 16384\nthreads = 3\n[upstream]\nmax_response_bytes = 2048\n\
         pool_idle_timeout_s = 5\npool_max_idle_per_host = 4\n[store]\nmax_entry_bytes = 4096\nmax_bytes = 8192\n"
    );
    let c = load(&text).unwrap();
    let l = c.server.connections;
    assert_eq!(l.header_read_timeout, Duration::from_millis(2500));
    assert_eq!((l.body_read_timeout, l.idle_timeout), (Duration::from_secs(5), Duration::from_secs(30)));
    assert_eq!((l.max_connections, l.max_header_bytes, l.body_min_rate), (100, 16384, 1000));
    assert_eq!(c.server.threads.get(), 3);
    let openai = &c.providers["openai"];
    assert_eq!(openai.max_response_bytes, 2048);
    assert_eq!((openai.pool_idle_timeout, openai.pool_max_idle_per_host), (Duration::from_secs(5), 4));
    assert_eq!(
        c.store_limits,
        StoreLimits { max_entry_bytes: 4096, max_bytes: 8192, max_bytes_per_key: 128 * 1024 * 1024 }
    );
    let bad = errors(&format!(
        "{BASE}\n[server]\nmax_connections = 0\nmax_header_bytes = 100\nheader_read_timeout_s = 0\nthreads = 5000\n\
         [store]\nmax_entry_bytes = 4096\nmax_bytes = 1024\n"
    ));
    for key in [
        "server.max_connections",
        "server.max_header_bytes",
        "server.header_read_timeout_s",
        "server.threads",
        "store.max_bytes",
    ] {
        assert!(bad.iter().any(|(k, _)| k == key), "no error for {key}: {bad:?}");
    }
}

#[test]
fn stdio_servers_get_a_minimal_environment_plus_what_is_passed() {
    let vars = |name: &str| match name {
        "PATH" => Some("/usr/bin".to_owned()),
        "HOME" => Some("/home/lariat".to_owned()),
        "OPENAI_API_KEY" => Some("sk-live-secret".to_owned()),
        "GITHUB_TOKEN" => Some("ghp-passed-through".to_owned()),
        _ => None,
    };
    let text = format!(
        "{BASE}\n[tools.mcp.gh]\ncommand = \"gh-mcp\"\nenv = {{ MODE = \"readonly\", HOME = \"/srv/gh\" }}\n\
         env_passthrough = [\"GITHUB_TOKEN\", \"NOT_SET\"]\n"
    );
    let c = Config::from_toml(Path::new("t.toml"), &text, &vars).unwrap();
    let McpTransport::Stdio { env, .. } = &c.tools.mcp[0].transport else { panic!("stdio expected") };
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.expose_secret())).collect();
    assert_eq!(
        env,
        [("GITHUB_TOKEN", "ghp-passed-through"), ("HOME", "/srv/gh"), ("MODE", "readonly"), ("PATH", "/usr/bin")],
        "the configured env wins over the base; lariat's keys are not inherited"
    );
    // Every secret is redacted, passed-through ones included; short values are not.
    let r = &c.redactor;
    assert_eq!(r.redact("sk-live-secret org-1 ghp-passed-through readonly"), "[redacted] org-1 [redacted] [redacted]");
    let bad =
        errors(&format!("{BASE}\n[tools.mcp.web]\nurl = \"http://127.0.0.1:1/mcp\"\nenv_passthrough = [\"X\"]\n"));
    assert!(bad.iter().any(|(k, r)| k == "tools.mcp.web.env_passthrough" && r.contains("stdio")), "{bad:?}");
}

#[test]
fn stored_responses_keep_a_week_unless_told_within_thirty_days() {
    assert_eq!(load(BASE).unwrap().responses.ttl, Duration::from_secs(7 * 86_400));
    let day = load(&format!("{BASE}\n[responses]\nttl_s = 86400\n")).unwrap();
    assert_eq!(day.responses.ttl, Duration::from_secs(86_400));
    for bad in ["0", "2592001"] {
        let errors = errors(&format!("{BASE}\n[responses]\nttl_s = {bad}\n"));
        assert!(errors.iter().any(|(k, r)| k == "responses.ttl_s" && r.contains("2592000")), "{errors:?}");
    }
}
