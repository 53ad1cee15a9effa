//! The shared backend: Redis, so a loop suspended on one replica resumes on another.
//!
//! One `ConnectionManager` per store, made on first use (lariat starts while Redis is
//! down) and reconnecting by itself after a lost connection. Every failure becomes
//! `StoreError::Unavailable` naming only host:port: the URL may carry a password.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, Cmd, ErrorKind, FromRedisValue, RedisError};
use secrecy::{ExposeSecret as _, SecretString};

use super::StoreError;

/// How long one connection attempt, and one command, may take. Short on purpose: a
/// request that needs a stopped Redis should get a 503 at once, not hang.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Redis refuses an expiry that overflows its clock; no real TTL comes near this.
const MAX_TTL_MS: u64 = i64::MAX as u64 / 2;

/// KEYS: the owner's hash (entry key → size), the entry's key. ARGV: value, TTL in
/// ms, size, the owner's bound. Returns 0 when stored, else 1 + the bytes the
/// owner's live entries hold. Stored the same way a bare `SET … PX` would.
const PUT_OWNED: &str = r"
local used = 0
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  local k = entries[i]
  if k ~= KEYS[2] then
    if redis.call('EXISTS', k) == 1 then
      used = used + tonumber(entries[i + 1])
    else
      redis.call('HDEL', KEYS[1], k)
    end
  end
end
if used + tonumber(ARGV[3]) > tonumber(ARGV[4]) then
  return used + 1
end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
redis.call('HSET', KEYS[1], KEYS[2], ARGV[3])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// A Redis-backed store. Cheap to clone: clones share one connection.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
    /// The per-entry and per-key bounds apply: Redis bounds its total with `maxmemory`.
    limits: crate::config::StoreLimits,
}

struct Inner {
    client: Client,
    prefix: String,
    /// host:port, the only part of the URL that may appear in a message.
    address: String,
    /// The URL's password as written and as decoded, scrubbed from every message in
    /// case an error ever echoes it.
    secrets: Vec<SecretString>,
    /// `None` until first use, and again after a failure the manager cannot recover
    /// from by itself (refused credentials), so the next call starts afresh.
    manager: Mutex<Option<Arc<ConnectionManager>>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not derived: `Client`'s Debug would print the password.
        f.debug_struct("RedisStore")
            .field("address", &self.inner.address)
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Parses the URL; does not connect (that happens on first use).
    pub fn new(url: &SecretString, prefix: &str) -> Result<Self, StoreError> {
        let mut secrets: Vec<SecretString> = url::Url::parse(url.expose_secret())
            .ok()
            .and_then(|u| u.password().map(SecretString::from))
            .into_iter()
            .collect();
        let client = Client::open(url.expose_secret())
            .map_err(|e| StoreError::Config(redact(format!("`store.url` is not a usable Redis URL: {e}"), &secrets)))?;
        let info = client.get_connection_info();
        secrets.extend(info.redis_settings().password().map(SecretString::from));
        let address = info.addr().to_string();
        let inner = Inner { client, prefix: prefix.to_owned(), address, secrets, manager: Mutex::new(None) };
        Ok(Self { inner: Arc::new(inner), limits: crate::config::StoreLimits::default() })
    }

    pub fn with_limits(mut self, limits: crate::config::StoreLimits) -> Self {
        self.limits = limits;
        self
    }

    /// host:port of the server, for diagnostics.
    pub fn address(&self) -> &str {
        &self.inner.address
    }

    pub(super) async fn put(&self, key: &str, value: Vec<u8>, ttl: Duration) -> Result<(), StoreError> {
        super::check_entry(value.len(), self.limits)?;
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(MAX_TTL_MS).clamp(1, MAX_TTL_MS);
        let mut cmd = ::redis::cmd("SET");
        cmd.arg(self.key(key)).arg(value).arg("PX").arg(ttl_ms);
        self.run(&cmd).await
    }

    /// `put`, charged to `owner`, in one script so that two replicas storing for one
    /// key at once cannot both slip under its bound. A hash per owner lists its
    /// entries and their sizes; one taken or expired is no longer counted (and is
    /// dropped from the hash) when the next is stored.
    pub(super) async fn put_owned(
        &self,
        owner: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let size = value.len();
        super::check_entry(size, self.limits)?;
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(MAX_TTL_MS).clamp(1, MAX_TTL_MS);
        let mut cmd = ::redis::cmd("EVAL");
        cmd.arg(PUT_OWNED).arg(2).arg(self.key(&format!("owner:{owner}"))).arg(self.key(key));
        cmd.arg(value).arg(ttl_ms).arg(size).arg(self.limits.max_bytes_per_key);
        match self.run::<u64>(&cmd).await? {
            0 => Ok(()),
            refused => Err(super::key_full(usize::try_from(refused - 1).unwrap_or(usize::MAX), self.limits)),
        }
    }

    pub(super) async fn take(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        // GETDEL is one command, so Redis runs it atomically: one caller gets the value.
        let mut cmd = ::redis::cmd("GETDEL");
        cmd.arg(self.key(key));
        self.run(&cmd).await
    }

    pub(super) async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut cmd = ::redis::cmd("GET");
        cmd.arg(self.key(key));
        self.run(&cmd).await
    }

    pub(super) async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = ::redis::cmd("MGET");
        for key in keys {
            cmd.arg(self.key(key));
        }
        self.run(&cmd).await
    }

    pub(super) async fn ping(&self) -> Result<(), StoreError> {
        self.run(&::redis::cmd("PING")).await
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.inner.prefix)
    }

    /// Runs one command. A command that met a lost or refused connection is sent once
    /// more: the manager has begun reconnecting by then, so a Redis that is back is
    /// used at once instead of failing one more request. Sending twice is safe for the
    /// commands above: SET, GET and MGET are idempotent, and a GETDEL that already ran
    /// returns nothing the second time, so a value is still handed out at most once.
    async fn run<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, StoreError> {
        let mut retried = false;
        loop {
            let manager = self.manager()?;
            match cmd.query_async::<T>(&mut ConnectionManager::clone(&manager)).await {
                Ok(value) => return Ok(value),
                Err(e) if !retried && (e.is_connection_refusal() || e.is_connection_dropped()) => retried = true,
                Err(e) => {
                    if e.kind() == ErrorKind::AuthenticationFailed {
                        self.forget(&manager);
                    }
                    return Err(self.unavailable(&e));
                }
            }
        }
    }

    /// The shared connection manager, made on first use. Lazy: it connects when the
    /// first command needs it, and every concurrent caller waits on that one attempt.
    fn manager(&self) -> Result<Arc<ConnectionManager>, StoreError> {
        let mut slot = self.inner.manager.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(manager) = slot.as_ref() {
            return Ok(manager.clone());
        }
        // No retries inside the manager: a request fails fast and the next one tries
        // again, rather than each request sitting through a backoff.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(0);
        let manager = ConnectionManager::new_lazy_with_config(self.inner.client.clone(), config)
            .map(Arc::new)
            .map_err(|e| self.unavailable(&e))?;
        *slot = Some(manager.clone());
        Ok(manager)
    }

    /// Drops `stale` (unless another call already replaced it). The manager only
    /// reconnects by itself after I/O errors; refused credentials would stick.
    fn forget(&self, stale: &Arc<ConnectionManager>) {
        let mut slot = self.inner.manager.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.as_ref().is_some_and(|current| Arc::ptr_eq(current, stale)) {
            *slot = None;
        }
    }

    fn unavailable(&self, e: &RedisError) -> StoreError {
        StoreError::Unavailable(redact(describe(&self.inner.address, e), &self.inner.secrets))
    }
}

/// One sentence saying what went wrong, naming the server by host:port only.
fn describe(address: &str, e: &RedisError) -> String {
    if e.is_connection_refusal() {
        format!("the Redis store at {address} is unreachable: connection refused")
    } else if e.is_timeout() {
        format!("the Redis store at {address} did not answer within {} s", TIMEOUT.as_secs())
    } else if e.is_io_error() {
        format!("the Redis store at {address} is unreachable: {e}")
    } else if e.kind() == ErrorKind::AuthenticationFailed {
        format!("the Redis store at {address} refused the credentials in `store.url`")
    } else if e.code() == Some("NOAUTH") {
        format!("the Redis store at {address} requires a password, and `store.url` has none")
    } else {
        format!("the Redis store at {address} failed: {e}")
    }
}

/// Replaces every occurrence of a secret with `***`.
fn redact(mut message: String, secrets: &[SecretString]) -> String {
    for secret in secrets {
        let secret = secret.expose_secret();
        if !secret.is_empty() && message.contains(secret) {
            message = message.replace(secret, "***");
        }
    }
    message
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    #[test]
    fn messages_say_what_failed() {
        let cases = [
            (io::ErrorKind::ConnectionRefused, "the Redis store at 10.0.0.1:6379 is unreachable: connection refused"),
            (io::ErrorKind::TimedOut, "the Redis store at 10.0.0.1:6379 did not answer within 2 s"),
        ];
        for (kind, want) in cases {
            assert_eq!(describe("10.0.0.1:6379", &RedisError::from(io::Error::from(kind))), want);
        }
        let refused = RedisError::from((ErrorKind::AuthenticationFailed, "Password authentication failed"));
        assert_eq!(describe("h:1", &refused), "the Redis store at h:1 refused the credentials in `store.url`");
        let reset = describe("h:1", &RedisError::from(io::Error::from(io::ErrorKind::ConnectionReset)));
        assert!(reset.starts_with("the Redis store at h:1 is unreachable: "), "{reset}");
    }

    #[test]
    fn secrets_are_scrubbed() {
        let secrets = [SecretString::from("p@ss"), SecretString::from("p%40ss"), SecretString::from("")];
        assert_eq!(redact("a p@ss b p%40ss c".into(), &secrets), "a *** b *** c");
        assert_eq!(redact("nothing here".into(), &secrets), "nothing here");
    }

    #[test]
    fn the_url_shows_only_as_host_and_port() {
        let store = RedisStore::new(&SecretString::from("redis://:hunter2@127.0.0.1:6390/0"), "p:").unwrap();
        assert_eq!(store.address(), "127.0.0.1:6390");
        assert!(!format!("{store:?}").contains("hunter2"));
        assert_eq!(store.key("k"), "p:k");
    }

    #[test]
    fn a_bad_url_is_a_config_error_without_the_password() {
        let err = RedisStore::new(&SecretString::from("redis://:hunter2@/"), "p:").unwrap_err();
        assert!(matches!(err, StoreError::Config(_)), "{err:?}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
