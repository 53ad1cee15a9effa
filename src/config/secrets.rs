//! Secrets and environments: every configured secret gathered for the one
//! `Redactor`, and the environment a stdio MCP server is given — a minimal set from
//! lariat's own (never its keys), the variables the config passes through by name,
//! and the configured `env`.

use std::collections::BTreeMap;

use secrecy::SecretString;

use super::raw::{RawConfig, RawTools};
use super::validate::Checker;
use crate::redact::Redactor;

/// What a stdio server inherits from lariat without asking: enough to find programs,
/// a home and a locale, as the official MCP SDK clients give their servers. Anything
/// else, keys above all, must be passed by name. The CA bundle paths are there too:
/// behind a TLS-intercepting proxy, `uvx` or `npx` cannot fetch anything without them.
const BASE_ENVIRONMENT: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "TERM",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// The minimal environment, read once at load.
pub(super) fn base_environment(env: &dyn Fn(&str) -> Option<String>) -> Vec<(String, String)> {
    BASE_ENVIRONMENT.iter().filter_map(|name| env(name).map(|value| ((*name).to_owned(), value))).collect()
}

/// The values of each stdio server's `env_passthrough`, read at load (after it,
/// nothing reads the environment). An unset variable is simply not passed.
pub(super) fn resolve_passthrough(
    c: &mut Checker,
    tools: &mut RawTools,
    env: &dyn Fn(&str) -> Option<String>,
) -> BTreeMap<String, Vec<(String, String)>> {
    let mut resolved = BTreeMap::new();
    for (server, mcp) in &mut tools.mcp {
        let names = std::mem::take(&mut mcp.env_passthrough);
        if names.is_empty() {
            continue;
        }
        if mcp.command.is_none() {
            c.err(format!("tools.mcp.{server}.env_passthrough"), "only stdio servers (`command`) have an environment");
        }
        let valid = |n: &str| !n.is_empty() && !n.contains('=') && !n.contains('\0');
        let mut values = Vec::new();
        for name in names {
            if !valid(&name) {
                c.err(format!("tools.mcp.{server}.env_passthrough"), format!("`{name}` is not a variable name"));
            } else if let Some(value) = env(&name) {
                values.push((name, value));
            }
        }
        resolved.insert(server.clone(), values);
    }
    resolved
}

/// A stdio server's whole environment: the base, then what is passed through, then
/// the configured `env` (later entries win).
pub(super) fn stdio_environment(
    base: &[(String, String)],
    passthrough: Vec<(String, String)>,
    configured: BTreeMap<String, String>,
) -> Vec<(String, SecretString)> {
    let mut merged: BTreeMap<String, String> = base.iter().cloned().collect();
    merged.extend(passthrough);
    merged.extend(configured);
    merged.into_iter().map(|(name, value)| (name, SecretString::from(value))).collect()
}

/// A redactor for every secret the config holds: provider keys and headers, MCP
/// `env` (configured and passed through) and headers, HTTP tool headers, and the
/// store URL's password. Client keys are not among them: only their hashes are kept.
pub(super) fn redactor(raw: &RawConfig, passthrough: &BTreeMap<String, Vec<(String, String)>>) -> Redactor {
    let mut secrets: Vec<String> = Vec::new();
    for provider in raw.providers.values() {
        secrets.extend(provider.api_key.iter().cloned());
        secrets.extend(provider.headers.values().cloned());
    }
    for mcp in raw.tools.mcp.values() {
        secrets.extend(mcp.env.values().cloned());
        secrets.extend(mcp.headers.values().cloned());
    }
    for tool in raw.tools.http.values() {
        secrets.extend(tool.headers.values().cloned());
    }
    secrets.extend(passthrough.values().flatten().map(|(_, value)| value.clone()));
    let store_url = raw.store.url.as_deref().and_then(|u| url::Url::parse(u).ok());
    secrets.extend(store_url.as_ref().and_then(url::Url::password).map(str::to_owned));
    // `Bearer <key>` headers: the key alone is what an error would echo.
    let bare: Vec<String> = secrets.iter().filter_map(|s| s.strip_prefix("Bearer ").map(str::to_owned)).collect();
    secrets.extend(bare);
    Redactor::new(secrets.iter().map(String::as_str))
}
