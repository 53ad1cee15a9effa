//! Raw config → domain types. Collects every problem instead of stopping at the first.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use super::raw::{self, ProviderKind, RawConfig};
use super::{bounds, secrets, *};
use crate::config::{Access, key_digest};
use crate::globs::Globs;
use crate::redact::Redactor;

const DEFAULT_TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(10),
    first_byte: Duration::from_secs(120),
    stall: Duration::from_secs(60),
    total: Duration::from_secs(600),
};
const DEFAULT_TOOL_TIMEOUT_S: f64 = 30.0;
const DEFAULT_TOOL_OUTPUT_BYTES: u64 = 64 * 1024;
const DEFAULT_FETCH_BYTES: u64 = 512 * 1024;
const DEFAULT_YES: &[&str] =
    &["yes", "y", "ok", "okay", "confirm", "confirmed", "approve", "approved", "go ahead", "do it", "sure", "proceed"];
const DEFAULT_NO: &[&str] = &["no", "n", "cancel", "deny", "denied", "stop", "abort", "don't", "do not"];

/// Accumulates errors while validating; each check reports and carries on.
pub(super) struct Checker {
    pub(super) errors: Vec<ConfigError>,
}

impl Checker {
    pub(super) fn err(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(ConfigError::new(key, reason));
    }

    pub(super) fn duration(&mut self, key: &str, seconds: Option<f64>, default: f64) -> Duration {
        let s = seconds.unwrap_or(default);
        if s.is_finite() && s > 0.0 && s <= 86_400.0 {
            Duration::from_secs_f64(s)
        } else {
            self.err(key, format!("must be a number of seconds between 0 and 86400, got {s}"));
            Duration::from_secs_f64(default)
        }
    }

    pub(super) fn access(&mut self, key: &str, value: Option<&str>, default: Access) -> Access {
        match value.map(str::parse::<Access>) {
            None => default,
            Some(Ok(a)) => a,
            Some(Err(e)) => {
                self.err(key, e);
                default
            }
        }
    }

    pub(super) fn globs(&mut self, key: &str, patterns: &[String]) -> Globs {
        Globs::new(patterns).unwrap_or_else(|e| {
            self.err(key, e);
            Globs::empty()
        })
    }

    /// Timeouts from `raw`, each falling back to the one in `defaults`.
    fn timeouts(&mut self, key: &str, raw: raw::RawTimeouts, defaults: Timeouts) -> Timeouts {
        let mut one = |name: &str, value: Option<f64>, default: Duration| match value {
            None => default,
            Some(s) => self.duration(&format!("{key}.{name}"), Some(s), default.as_secs_f64()),
        };
        Timeouts {
            connect: one("connect_timeout_s", raw.connect_timeout_s, defaults.connect),
            first_byte: one("first_byte_timeout_s", raw.first_byte_timeout_s, defaults.first_byte),
            stall: one("stall_timeout_s", raw.stall_timeout_s, defaults.stall),
            total: one("timeout_s", raw.timeout_s, defaults.total),
        }
    }

    fn url(&mut self, key: &str, url: &str) -> bool {
        let ok = (url.starts_with("http://") || url.starts_with("https://"))
            && url.parse::<http::Uri>().is_ok_and(|u| u.host().is_some_and(|h| !h.is_empty()));
        if !ok {
            self.err(key, format!("`{url}` is not an http(s) URL"));
        }
        ok
    }

    fn headers(&mut self, key: &str, headers: BTreeMap<String, String>) -> Vec<(String, SecretString)> {
        headers
            .into_iter()
            .filter_map(|(name, value)| {
                let valid = http::HeaderName::from_bytes(name.as_bytes()).is_ok()
                    && http::HeaderValue::from_str(&value).is_ok();
                if valid {
                    Some((name, SecretString::from(value)))
                } else {
                    self.err(format!("{key}.{name}"), "not a valid HTTP header name and value");
                    None
                }
            })
            .collect()
    }
}

pub fn validate(
    path: &Path,
    mut raw: RawConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Vec<ConfigError>> {
    let mut c = Checker { errors: Vec::new() };
    // Every secret is known before anything is built from the config, so each part
    // gets the same redactor.
    let passthrough = secrets::resolve_passthrough(&mut c, &mut raw.tools, env);
    let redactor = Arc::new(secrets::redactor(&raw, &passthrough));
    let server = bounds::server(&mut c, raw.server, raw.keys.is_empty());
    let upstream = bounds::upstream_policy(&mut c, &raw.upstream);
    let defaults = bounds::provider_defaults(&mut c, &raw.upstream, redactor.clone());
    let providers: BTreeMap<_, _> = raw
        .providers
        .into_iter()
        .map(|(name, p)| (name.clone(), Arc::new(provider(&mut c, name, p, &defaults))))
        .collect();
    let compaction = compaction(&mut c, &providers, raw.compaction);
    let base_env = secrets::base_environment(env);
    let tools = tools(&mut c, raw.tools, &base_env, passthrough, redactor.clone());
    let mut answers = Vec::new();
    let mut models: BTreeMap<_, _> = raw
        .models
        .into_iter()
        .map(|(name, mut m)| {
            answers.push((name.clone(), super::answer::Raw::take(&mut m)));
            (name.clone(), model(&mut c, &providers, &server, name, m))
        })
        .collect();
    super::answer::resolve(&mut c, &providers, answers, &mut models);
    let models: BTreeMap<_, _> = models.into_iter().map(|(name, m)| (name, Arc::new(m))).collect();
    let keys = keys(&mut c, raw.keys, &models);
    let users = super::identity::users(&mut c, raw.users);
    let confirm = Confirm {
        tools: c.globs("confirm.tools", &raw.confirm.tools),
        ttl: c.duration("confirm.ttl_s", Some(raw.confirm.ttl_s as f64), 900.0),
        yes_words: words(raw.confirm.yes_words, DEFAULT_YES),
        no_words: words(raw.confirm.no_words, DEFAULT_NO),
    };
    let (store, store_limits) = bounds::store(&mut c, raw.store);
    let responses = bounds::responses(&mut c, &raw.responses);
    if models.is_empty() {
        c.err("models", "no virtual models are defined; add a [models.<name>] section with a chain");
    }
    if c.errors.is_empty() {
        Ok(Config {
            path: path.to_owned(),
            server,
            providers,
            models,
            tools,
            confirm,
            store,
            store_limits,
            keys,
            upstream,
            compaction,
            users,
            responses,
            redactor,
            warnings: Vec::new(),
        })
    } else {
        Err(c.errors)
    }
}

fn compaction(c: &mut Checker, providers: &BTreeMap<String, Arc<Provider>>, raw: raw::RawCompaction) -> Compaction {
    if !(raw.ratio > 0.0 && raw.ratio <= 1.0) {
        c.err("compaction.ratio", "must be above 0 and at most 1");
    }
    if raw.recent_cap_chars < raw.head_chars {
        c.err("compaction.recent_cap_chars", "must not be smaller than head_chars");
    }
    Compaction {
        enabled: raw.enabled,
        policy: crate::compact::Policy {
            keep_recent: raw.keep_recent,
            head_chars: raw.head_chars,
            recent_cap_chars: raw.recent_cap_chars,
            ratio: raw.ratio.clamp(f64::MIN_POSITIVE, 1.0),
            reply_reserve: raw.reply_reserve,
        },
        default_window: (raw.default_context_window > 0).then_some(raw.default_context_window),
        summarize: summarize(c, providers, raw.summarize_with, raw.summary_max_tokens, raw.summary_timeout_s),
    }
}

fn summarize(
    c: &mut Checker,
    providers: &BTreeMap<String, Arc<Provider>>,
    target: Option<toml::Value>,
    max_tokens: u32,
    timeout_s: f64,
) -> Option<Summarize> {
    let target = chain_entry(c, providers, "compaction.summarize_with", target?);
    if max_tokens == 0 {
        c.err("compaction.summary_max_tokens", "must be at least 1");
    }
    let timeout = c.duration("compaction.summary_timeout_s", Some(timeout_s), 30.0);
    Some(Summarize { target: target?, max_tokens, timeout })
}

fn provider(c: &mut Checker, name: String, p: raw::RawProvider, defaults: &bounds::ProviderDefaults) -> Provider {
    let key = format!("providers.{name}");
    if name.contains('/') || name.is_empty() {
        c.err(&key, "provider names may not be empty or contain `/`");
    }
    c.url(&format!("{key}.base_url"), &p.base_url);
    let mut base = p.base_url.trim_end_matches('/').to_owned();
    if p.kind == ProviderKind::Openwebui {
        base.push_str("/api");
    }
    let timeouts = c.timeouts(&key, p.timeouts(), DEFAULT_TIMEOUTS);
    let api_key = p.api_key.filter(|k| !k.is_empty()).map(SecretString::from);
    Provider {
        kind: p.kind,
        chat_url: format!("{base}/chat/completions"),
        api_key,
        timeouts,
        retries: p.retries.unwrap_or(defaults.retries),
        headers: c.headers(&format!("{key}.headers"), p.headers),
        max_response_bytes: defaults.max_response_bytes,
        pool_idle_timeout: defaults.pool_idle_timeout,
        pool_max_idle_per_host: defaults.pool_max_idle_per_host,
        redactor: defaults.redactor.clone(),
        name,
    }
}

fn model(
    c: &mut Checker,
    providers: &BTreeMap<String, Arc<Provider>>,
    server: &Server,
    name: String,
    m: raw::RawModel,
) -> VirtualModel {
    let key = format!("models.{name}");
    if m.chain.is_empty() {
        c.err(format!("{key}.chain"), "must name at least one target");
    }
    let chain = m
        .chain
        .into_iter()
        .enumerate()
        .filter_map(|(i, entry)| chain_entry(c, providers, &format!("{key}.chain[{i}]"), entry))
        .collect();
    let tools = m.tools.map(|t| c.globs(&format!("{key}.tools"), &t));
    if m.max_rounds == Some(0) {
        c.err(format!("{key}.max_rounds"), "must be at least 1");
    }
    VirtualModel {
        description: m.description,
        chain,
        system_prompt: m.system_prompt,
        tools,
        max_rounds: m.max_rounds.unwrap_or(server.max_rounds).clamp(1, server.max_rounds),
        inject_datetime: m.inject_datetime,
        answer: None,
        progress: m.progress.unwrap_or_default(),
        name,
    }
}

pub(super) fn chain_entry(
    c: &mut Checker,
    providers: &BTreeMap<String, Arc<Provider>>,
    key: &str,
    entry: toml::Value,
) -> Option<ChainEntry> {
    let table = match entry {
        toml::Value::String(target) => raw::RawChainTable {
            target,
            context_window: None,
            max_rounds: None,
            retries: None,
            connect_timeout_s: None,
            first_byte_timeout_s: None,
            stall_timeout_s: None,
            timeout_s: None,
        },
        value @ toml::Value::Table(_) => match serde_path_to_error::deserialize::<_, raw::RawChainTable>(value) {
            Ok(t) => t,
            Err(e) => {
                let path = e.path().to_string();
                let sub = if path == "." { key.to_owned() } else { format!("{key}.{path}") };
                c.err(sub, e.inner().message().to_owned());
                return None;
            }
        },
        other => {
            c.err(key, format!("expected \"provider/model\" or a table, got {}", other.type_str()));
            return None;
        }
    };
    let Some((provider, model)) = table.target.split_once('/').filter(|(p, m)| !p.is_empty() && !m.is_empty()) else {
        c.err(format!("{key}.target"), format!("`{}` is not of the form provider/model", table.target));
        return None;
    };
    let Some(provider) = providers.get(provider) else {
        let known: Vec<_> = providers.keys().map(String::as_str).collect();
        c.err(format!("{key}.target"), format!("unknown provider `{provider}` (known: {})", known.join(", ")));
        return None;
    };
    if table.context_window == Some(0) {
        c.err(format!("{key}.context_window"), "must be positive");
    }
    if table.max_rounds == Some(0) {
        c.err(format!("{key}.max_rounds"), "must be at least 1");
    }
    let timeouts = c.timeouts(key, table.timeouts(), provider.timeouts);
    Some(ChainEntry {
        label: format!("{}/{model}", provider.name).into(),
        provider: provider.clone(),
        model: model.to_owned(),
        context_window: table.context_window,
        max_rounds: table.max_rounds,
        timeouts,
        retries: table.retries.unwrap_or(provider.retries),
    })
}

fn tools(
    c: &mut Checker,
    t: raw::RawTools,
    base_env: &[(String, String)],
    mut passthrough: BTreeMap<String, Vec<(String, String)>>,
    redactor: Arc<Redactor>,
) -> Tools {
    let timeout = c.duration("tools.timeout_s", t.timeout_s, DEFAULT_TOOL_TIMEOUT_S);
    let mut names = HashSet::new();
    let mut check_name = |c: &mut Checker, key: &str, name: &str| {
        if !valid_tool_name(name) {
            c.err(key, format!("`{name}` is not a valid tool name (letters, digits, `_`, `-`; at most 64)"));
        }
        if !names.insert(name.to_owned()) {
            c.err(key, format!("tool name `{name}` is defined twice"));
        }
    };
    let mcp = t
        .mcp
        .into_iter()
        .filter_map(|(name, m)| {
            let key = format!("tools.mcp.{name}");
            check_name(c, &key, &name);
            let transport = match (m.command, m.url) {
                (Some(command), None) => {
                    let inherited = passthrough.remove(&name).unwrap_or_default();
                    let env = secrets::stdio_environment(base_env, inherited, m.env);
                    McpTransport::Stdio { command, args: m.args, env }
                }
                (None, Some(url)) => {
                    c.url(&format!("{key}.url"), &url);
                    McpTransport::Http { url, headers: c.headers(&format!("{key}.headers"), m.headers) }
                }
                _ => {
                    c.err(&key, "set exactly one of `command` (stdio) or `url` (streamable HTTP)");
                    return None;
                }
            };
            Some(McpServer {
                transport,
                prefix: m.prefix,
                min_access: c.access(&format!("{key}.min_access"), m.min_access.as_deref(), Access::Guest),
                timeout: c.duration(&format!("{key}.timeout_s"), m.timeout_s, timeout.as_secs_f64()),
                name,
            })
        })
        .collect();
    let http = t
        .http
        .into_iter()
        .map(|(name, h)| {
            let key = format!("tools.http.{name}");
            check_name(c, &key, &name);
            c.url(&format!("{key}.url"), &h.url);
            let method = h.method.to_ascii_uppercase();
            if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method.as_str()) {
                c.err(format!("{key}.method"), format!("unsupported method `{}`", h.method));
            }
            let parameters = match h.parameters.map(serde_json::to_value) {
                None => serde_json::json!({"type": "object", "properties": {}}),
                Some(Ok(v)) if v.get("type").and_then(|t| t.as_str()) == Some("object") => v,
                Some(_) => {
                    c.err(format!("{key}.parameters"), "must be a JSON schema with type = \"object\"");
                    serde_json::Value::Null
                }
            };
            HttpTool {
                description: h.description,
                url: h.url,
                method,
                headers: c.headers(&format!("{key}.headers"), h.headers),
                parameters,
                min_access: c.access(&format!("{key}.min_access"), h.min_access.as_deref(), Access::Guest),
                timeout: c.duration(&format!("{key}.timeout_s"), h.timeout_s, timeout.as_secs_f64()),
                name,
            }
        })
        .collect();
    let current_time = t.builtin.current_time.unwrap_or_default();
    let current_time = current_time.enabled.then(|| {
        check_name(c, "tools.builtin.current_time", "current_time");
        BuiltinCurrentTime {
            min_access: c.access(
                "tools.builtin.current_time.min_access",
                current_time.min_access.as_deref(),
                Access::Guest,
            ),
        }
    });
    let fetch = t.builtin.fetch_url.unwrap_or_default();
    let fetch_url = fetch.enabled.then(|| {
        check_name(c, "tools.builtin.fetch_url", "fetch_url");
        BuiltinFetchUrl {
            min_access: c.access("tools.builtin.fetch_url.min_access", fetch.min_access.as_deref(), Access::Guest),
            allow_private: fetch.allow_private,
            max_bytes: usize::try_from(fetch.max_bytes.unwrap_or(DEFAULT_FETCH_BYTES)).unwrap_or(usize::MAX),
            timeout: c.duration("tools.builtin.fetch_url.timeout_s", fetch.timeout_s, 15.0),
        }
    });
    Tools {
        mcp,
        http,
        current_time,
        fetch_url,
        timeout,
        max_output_bytes: usize::try_from(t.max_output_bytes.unwrap_or(DEFAULT_TOOL_OUTPUT_BYTES))
            .unwrap_or(usize::MAX),
        redactor,
    }
}

pub fn valid_tool_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn keys(c: &mut Checker, raw: Vec<raw::RawKey>, models: &BTreeMap<String, Arc<VirtualModel>>) -> Vec<Key> {
    let mut seen = HashSet::new();
    raw.into_iter()
        .enumerate()
        .filter_map(|(i, k)| {
            let key = format!("keys[{i}]");
            let sha = match (k.key, k.key_sha256) {
                (Some(plain), None) if plain.len() >= 8 => key_digest(plain.as_bytes()),
                (Some(_), None) => {
                    c.err(format!("{key}.key"), "keys must be at least 8 characters");
                    return None;
                }
                (None, Some(hex_digest)) => {
                    let mut out = [0u8; 32];
                    if hex::decode_to_slice(hex_digest.trim(), &mut out).is_err() {
                        c.err(format!("{key}.key_sha256"), "must be 64 hexadecimal characters");
                        return None;
                    }
                    out
                }
                _ => {
                    c.err(&key, "set exactly one of `key` or `key_sha256`");
                    return None;
                }
            };
            if !seen.insert(sha) {
                c.err(&key, "the same key is configured twice");
            }
            if k.user.trim().is_empty() {
                c.err(format!("{key}.user"), "must not be empty");
            }
            if let Some(names) = &k.models {
                for name in names.iter().filter(|n| !Globs::is_glob(n) && !models.contains_key(*n)) {
                    c.err(format!("{key}.models"), format!("unknown model `{name}`"));
                }
            }
            Some(Key {
                sha256: sha,
                access: c.access(&format!("{key}.access"), k.access.as_deref(), Access::User),
                models: k.models.map(|m| c.globs(&format!("{key}.models"), &m)),
                confirm_allow: c.globs(&format!("{key}.confirm_allow"), &k.confirm_allow),
                confirm_deny: c.globs(&format!("{key}.confirm_deny"), &k.confirm_deny),
                progress: k.progress,
                forwarded: super::identity::forwarded(c, &key, k.forwarded_identity, k.role_access),
                user: k.user,
            })
        })
        .collect()
}

fn words(configured: Option<Vec<String>>, default: &[&str]) -> Vec<String> {
    configured.unwrap_or_else(|| default.iter().map(|w| (*w).to_owned()).collect())
}
