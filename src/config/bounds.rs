//! Validation of the bounds lariat keeps: the server's connection and body limits,
//! the upstream policy and its byte caps, and the store's size limits.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use super::raw;
use super::validate::Checker;
use super::*;
use crate::redact::Redactor;

const DEFAULT_STORE_CAPACITY: u64 = 100_000;
/// More serving threads than this is a typo, not a machine.
const MAX_THREADS: usize = 1024;

pub(super) fn server(c: &mut Checker, s: raw::RawServer, no_keys: bool) -> Server {
    let listen = s.listen.parse::<SocketAddr>().unwrap_or_else(|e| {
        c.err("server.listen", format!("`{}` is not an address like 127.0.0.1:8080: {e}", s.listen));
        SocketAddr::from(([127, 0, 0, 1], 8080))
    });
    if no_keys && !listen.ip().is_loopback() {
        c.err(
            "server.listen",
            format!(
                "{listen} is not a loopback address and no [[keys]] are configured; \
                 without keys lariat serves only on loopback (add [[keys]] or listen on 127.0.0.1)"
            ),
        );
    }
    if s.max_rounds == 0 {
        c.err("server.max_rounds", "must be at least 1");
    }
    if s.max_body_bytes < 1024 {
        c.err("server.max_body_bytes", "must be at least 1024");
    }
    if s.max_event_bytes < 1024 {
        c.err("server.max_event_bytes", "must be at least 1024");
    }
    let max_body_bytes = usize::try_from(s.max_body_bytes).unwrap_or(usize::MAX);
    let shutdown_timeout = c.duration("server.shutdown_timeout_s", Some(s.shutdown_timeout_s), 30.0);
    let connections = connection_limits(c, &s, max_body_bytes, shutdown_timeout);
    if s.threads > MAX_THREADS {
        c.err("server.threads", format!("at most {MAX_THREADS}"));
    }
    let threads = NonZeroUsize::new(s.threads.min(MAX_THREADS))
        .unwrap_or_else(|| std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN));
    Server {
        listen,
        max_body_bytes,
        max_rounds: s.max_rounds.max(1),
        shutdown_timeout,
        keepalive: c.duration("server.keepalive_s", Some(s.keepalive_s), 10.0),
        max_event_bytes: usize::try_from(s.max_event_bytes).unwrap_or(usize::MAX),
        hide_forbidden_models: s.hide_forbidden_models,
        connections,
        threads,
    }
}

fn connection_limits(
    c: &mut Checker,
    s: &raw::RawServer,
    max_body_bytes: usize,
    shutdown_timeout: Duration,
) -> ConnectionLimits {
    let defaults = ConnectionLimits::default();
    if s.body_min_rate_bytes_s == 0 {
        c.err("server.body_min_rate_bytes_s", "must be at least 1");
    }
    if s.max_connections == 0 {
        c.err("server.max_connections", "must be at least 1");
    }
    // hyper cannot read a request head into a buffer smaller than 8 KiB.
    if s.max_header_bytes < 8192 {
        c.err("server.max_header_bytes", "must be at least 8192");
    }
    ConnectionLimits {
        header_read_timeout: c.duration(
            "server.header_read_timeout_s",
            Some(s.header_read_timeout_s),
            defaults.header_read_timeout.as_secs_f64(),
        ),
        body_read_timeout: c.duration(
            "server.body_read_timeout_s",
            Some(s.body_read_timeout_s),
            defaults.body_read_timeout.as_secs_f64(),
        ),
        body_min_rate: s.body_min_rate_bytes_s.max(1),
        idle_timeout: c.duration("server.idle_timeout_s", Some(s.idle_timeout_s), defaults.idle_timeout.as_secs_f64()),
        max_connections: s.max_connections.max(1),
        max_header_bytes: s.max_header_bytes.max(8192),
        max_body_bytes,
        shutdown_timeout,
    }
}

pub(super) fn upstream_policy(c: &mut Checker, u: &raw::RawUpstream) -> UpstreamPolicy {
    if u.retries > 10 {
        c.err("upstream.retries", "at most 10");
    }
    if u.cooldown_after == 0 {
        c.err("upstream.cooldown_after", "must be at least 1");
    }
    let policy = UpstreamPolicy {
        backoff_base: c.duration("upstream.backoff_base_s", Some(u.backoff_base_s), 0.25),
        backoff_max: c.duration("upstream.backoff_max_s", Some(u.backoff_max_s), 8.0),
        retry_after_max: c.duration("upstream.retry_after_max_s", Some(u.retry_after_max_s), 30.0),
        cooldown_after: u.cooldown_after.max(1),
        cooldown: c.duration("upstream.cooldown_s", Some(u.cooldown_s), 30.0),
    };
    if policy.backoff_max < policy.backoff_base {
        c.err("upstream.backoff_max_s", "must not be smaller than backoff_base_s");
    }
    policy
}

/// What every provider gets from `[upstream]` and the config as a whole: its
/// default retries, the answer size cap, the pool, the redactor.
#[derive(Debug, Clone)]
pub(super) struct ProviderDefaults {
    pub retries: u32,
    pub max_response_bytes: usize,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    pub redactor: Arc<Redactor>,
}

pub(super) fn provider_defaults(c: &mut Checker, u: &raw::RawUpstream, redactor: Arc<Redactor>) -> ProviderDefaults {
    if u.max_response_bytes < 1024 {
        c.err("upstream.max_response_bytes", "must be at least 1024");
    }
    ProviderDefaults {
        retries: u.retries,
        redactor,
        max_response_bytes: usize::try_from(u.max_response_bytes).unwrap_or(usize::MAX),
        pool_idle_timeout: c.duration("upstream.pool_idle_timeout_s", Some(u.pool_idle_timeout_s), 30.0),
        pool_max_idle_per_host: u.pool_max_idle_per_host,
    }
}

pub(super) fn store(c: &mut Checker, s: raw::RawStore) -> (Store, StoreLimits) {
    let defaults = StoreLimits::default();
    let bytes =
        |value: Option<u64>, default: usize| value.map_or(default, |v| usize::try_from(v).unwrap_or(usize::MAX));
    let limits = StoreLimits {
        max_entry_bytes: bytes(s.max_entry_bytes, defaults.max_entry_bytes),
        max_bytes: bytes(s.max_bytes, defaults.max_bytes),
        max_bytes_per_key: bytes(s.max_bytes_per_key, defaults.max_bytes_per_key),
    };
    if limits.max_entry_bytes < 1024 {
        c.err("store.max_entry_bytes", "must be at least 1024");
    }
    if limits.max_bytes < limits.max_entry_bytes {
        c.err("store.max_bytes", "must not be smaller than max_entry_bytes");
    }
    if limits.max_bytes_per_key < limits.max_entry_bytes {
        c.err("store.max_bytes_per_key", "must not be smaller than max_entry_bytes");
    }
    if s.kind == raw::StoreKind::Redis && s.max_bytes.is_some() {
        c.err("store.max_bytes", "memory only; bound Redis with its own `maxmemory`");
    }
    let store = match s.kind {
        raw::StoreKind::Memory => {
            if s.url.is_some() {
                c.err("store.url", "only used with kind = \"redis\"");
            }
            Store::Memory { capacity: s.capacity.unwrap_or(DEFAULT_STORE_CAPACITY) }
        }
        raw::StoreKind::Redis => {
            let url = s.url.unwrap_or_default();
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                c.err("store.url", "kind = \"redis\" needs url = \"redis://host:port\"");
            }
            Store::Redis { url: SecretString::from(url), prefix: s.prefix.unwrap_or_else(|| "lariat:".into()) }
        }
    };
    (store, limits)
}

/// Stored responses may outlive a day (clients continue conversations the next
/// week), but not by more than the API's own 30 days.
pub(super) fn responses(c: &mut Checker, raw: &raw::RawResponses) -> Responses {
    const MAX: u64 = 30 * 86_400;
    if raw.ttl_s == 0 || raw.ttl_s > MAX {
        c.err("responses.ttl_s", format!("must be a number of seconds between 1 and {MAX}, got {}", raw.ttl_s));
    }
    Responses { ttl: Duration::from_secs(raw.ttl_s.clamp(1, MAX)) }
}
