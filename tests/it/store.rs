//! The store suite, run against every backend (memory, and a real Redis), plus what
//! only Redis has: shared values across instances, key prefixes, and outages.

use std::future::Future;
use std::time::{Duration, Instant};

use lariat::config;
use lariat::store::{Store, StoreError};
use secrecy::SecretString;

use crate::redis_server::RedisServer;

const LONG: Duration = Duration::from_secs(60);
/// Short enough to wait out, long enough that a loaded machine reads the value first.
const SHORT: Duration = Duration::from_secs(1);
/// Longer than any failure may take: a hang fails the test instead of stalling it.
const PATIENCE: Duration = Duration::from_secs(10);

fn memory() -> Store {
    Store::from_config(&config::Store::Memory { capacity: 1000 }).unwrap()
}

fn redis(url: &str, prefix: &str) -> Store {
    let config = config::Store::Redis { url: SecretString::from(url), prefix: prefix.to_owned() };
    Store::from_config(&config).unwrap()
}

/// What every backend owes its callers.
async fn suite(store: &Store) {
    // put / take / get; missing keys are None, not errors.
    assert_eq!(store.take("missing").await.unwrap(), None);
    assert_eq!(store.get("missing").await.unwrap(), None);
    store.put("a", b"one".to_vec(), LONG).await.unwrap();
    assert_eq!(store.take("a").await.unwrap(), Some(b"one".to_vec()));
    assert_eq!(store.take("a").await.unwrap(), None, "a value is handed out once");

    // get does not consume; take after get still does.
    store.put("b", b"two".to_vec(), LONG).await.unwrap();
    assert_eq!(store.get("b").await.unwrap(), Some(b"two".to_vec()));
    assert_eq!(store.get("b").await.unwrap(), Some(b"two".to_vec()));
    assert_eq!(store.take("b").await.unwrap(), Some(b"two".to_vec()));
    assert_eq!(store.get("b").await.unwrap(), None);

    // put replaces the value (and its TTL).
    store.put("c", b"old".to_vec(), SHORT).await.unwrap();
    store.put("c", b"new".to_vec(), LONG).await.unwrap();

    // Values are bytes: every byte value, and the empty value (distinct from none).
    let all_bytes: Vec<u8> = (0..=255).cycle().take(70_000).collect();
    store.put("bin", all_bytes.clone(), LONG).await.unwrap();
    store.put("empty", Vec::new(), LONG).await.unwrap();
    assert_eq!(store.get("bin").await.unwrap(), Some(all_bytes));
    assert_eq!(store.take("empty").await.unwrap(), Some(Vec::new()));

    // Keys are opaque strings too.
    store.put("ключ with spaces:{}*", b"k".to_vec(), LONG).await.unwrap();
    assert_eq!(store.take("ключ with spaces:{}*").await.unwrap(), Some(b"k".to_vec()));

    // TTL: gone (for get and take) once it has passed, on real time.
    store.put("short", b"s".to_vec(), SHORT).await.unwrap();
    store.put("short2", b"s".to_vec(), SHORT).await.unwrap();
    assert_eq!(store.get("short").await.unwrap(), Some(b"s".to_vec()));
    tokio::time::sleep(SHORT + Duration::from_millis(300)).await;
    assert_eq!(store.get("short").await.unwrap(), None);
    assert_eq!(store.take("short2").await.unwrap(), None);
    assert_eq!(store.get("c").await.unwrap(), Some(b"new".to_vec()), "the replacing put's TTL counts");
    assert_eq!(store.take("c").await.unwrap(), Some(b"new".to_vec()));

    // get_many: one answer per key, in order, missing ones None.
    assert_eq!(store.get_many(&[]).await.unwrap(), Vec::<Option<Vec<u8>>>::new());
    store.put("m1", b"x".to_vec(), LONG).await.unwrap();
    store.put("m3", b"z".to_vec(), LONG).await.unwrap();
    let keys: Vec<String> = ["m1", "m2", "m3"].map(String::from).to_vec();
    assert_eq!(store.get_many(&keys).await.unwrap(), [Some(b"x".to_vec()), None, Some(b"z".to_vec())]);

    take_races(store, store).await;
}

/// 20 concurrent takes of one key, spread over `a` and `b`, on worker threads:
/// exactly one gets the value.
async fn take_races(a: &Store, b: &Store) {
    for round in 0..5 {
        let key = format!("race{round}");
        a.put(&key, b"prize".to_vec(), LONG).await.unwrap();
        let takers: Vec<_> = (0..20)
            .map(|i| {
                let store = if i % 2 == 0 { a.clone() } else { b.clone() };
                let key = key.clone();
                tokio::spawn(async move { store.take(&key).await.unwrap() })
            })
            .collect();
        let mut winners = 0;
        for taker in takers {
            if let Some(value) = taker.await.unwrap() {
                assert_eq!(value, b"prize");
                winners += 1;
            }
        }
        assert_eq!(winners, 1, "round {round}: exactly one take gets the value");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_backend_passes_the_suite() {
    let store = memory();
    assert_eq!(store.kind(), "memory");
    store.ping().await.unwrap();
    suite(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_backend_passes_the_suite() {
    let Some(server) = RedisServer::start().await else { return };
    let store = redis(&server.url(), "lariat:");
    assert_eq!(store.kind(), "redis");
    store.ping().await.unwrap();
    suite(&store).await;
}

/// Two replicas configured alike see one set of values: a loop suspended on one
/// resumes on the other, and a value is still handed out once between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_instances_with_one_config_share_values() {
    let Some(server) = RedisServer::start().await else { return };
    let (a, b) = (redis(&server.url(), "lariat:"), redis(&server.url(), "lariat:"));
    a.put("k", b"from a".to_vec(), LONG).await.unwrap();
    assert_eq!(b.get("k").await.unwrap(), Some(b"from a".to_vec()));
    assert_eq!(b.take("k").await.unwrap(), Some(b"from a".to_vec()));
    assert_eq!(a.get("k").await.unwrap(), None);
    take_races(&a, &b).await;

    // Another prefix is another namespace on the same server.
    let other = redis(&server.url(), "elsewhere:");
    a.put("k", b"a".to_vec(), LONG).await.unwrap();
    assert_eq!(other.get("k").await.unwrap(), None);
}

/// Keys are `<prefix><key>` in Redis, with the TTL set on the key itself.
#[tokio::test]
async fn redis_keys_carry_the_prefix_and_the_ttl() {
    let Some(server) = RedisServer::start().await else { return };
    let store = redis(&server.url(), "lariat:");
    store.put("round:abc", b"v".to_vec(), LONG).await.unwrap();

    let client = redis::Client::open(server.url()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut raw).await.unwrap();
    assert_eq!(keys, ["lariat:round:abc"]);
    let ttl_ms: i64 = redis::cmd("PTTL").arg("lariat:round:abc").query_async(&mut raw).await.unwrap();
    assert!((50_000..=60_000).contains(&ttl_ms), "PTTL {ttl_ms}");
    let _: () = redis::cmd("SET").arg("lariat:written-raw").arg("x").query_async(&mut raw).await.unwrap();
    assert_eq!(store.take("written-raw").await.unwrap(), Some(b"x".to_vec()));
}

/// Runs `op` within PATIENCE and expects `Unavailable` naming the server, never the
/// password.
async fn expect_unavailable<T: std::fmt::Debug>(
    what: &str,
    server: &RedisServer,
    op: impl Future<Output = Result<T, StoreError>>,
) -> String {
    let started = Instant::now();
    let result = tokio::time::timeout(PATIENCE, op).await.unwrap_or_else(|_| panic!("{what} hung"));
    let Err(StoreError::Unavailable(message)) = result else { panic!("{what}: expected Unavailable, got {result:?}") };
    assert!(message.contains(&server.address()), "{what}: {message}");
    assert!(!message.contains("secret"), "{what} leaks the password: {message}");
    assert!(started.elapsed() < Duration::from_secs(5), "{what} took {:?}", started.elapsed());
    message
}

/// Redis stops: every operation fails fast and clearly; it comes back: the same
/// `Store` works again, without a restart of lariat.
#[tokio::test]
async fn a_redis_outage_is_unavailable_then_heals() {
    let Some(mut server) = RedisServer::start_with_password("secret").await else { return };
    let store = redis(&server.url(), "lariat:");
    store.put("k", b"v".to_vec(), LONG).await.unwrap();
    assert_eq!(store.get("k").await.unwrap(), Some(b"v".to_vec()));

    server.stop();
    for _ in 0..2 {
        let message = expect_unavailable("put", &server, store.put("k", b"w".to_vec(), LONG)).await;
        assert!(message.contains("unreachable: connection refused"), "{message}");
        expect_unavailable("take", &server, store.take("k")).await;
        expect_unavailable("get", &server, store.get("k")).await;
        expect_unavailable("ping", &server, store.ping()).await;
    }

    server.restart().await;
    // The first call after the restart already works (the server is empty again).
    assert_eq!(store.take("k").await.unwrap(), None);
    store.put("k", b"after".to_vec(), LONG).await.unwrap();
    assert_eq!(store.take("k").await.unwrap(), Some(b"after".to_vec()));
}

/// lariat starts while Redis is down; the store works as soon as Redis is up.
#[tokio::test]
async fn a_store_built_while_redis_is_down_works_once_it_is_up() {
    let Some(mut server) = RedisServer::start().await else { return };
    server.stop();
    let store = redis(&server.url(), "lariat:");
    expect_unavailable("put", &server, store.put("k", b"v".to_vec(), LONG)).await;
    expect_unavailable("take", &server, store.take("k")).await;

    server.restart().await;
    store.put("k", b"v".to_vec(), LONG).await.unwrap();
    assert_eq!(store.take("k").await.unwrap(), Some(b"v".to_vec()));
}

/// Wrong or missing credentials: a clear error without the password, and a store
/// that keeps trying (it does not cache the refusal): once the server accepts the
/// password, the same store works.
#[tokio::test]
async fn refused_credentials_are_reported_without_the_password() {
    let Some(server) = RedisServer::start_with_password("right-one").await else { return };
    let wrong = redis(&format!("redis://:secret@{}", server.address()), "lariat:");
    for _ in 0..2 {
        let message = expect_unavailable("wrong password", &server, wrong.get("k")).await;
        assert!(message.ends_with("refused the credentials in `store.url`"), "{message}");
    }
    let none = redis(&format!("redis://{}", server.address()), "lariat:");
    let message = expect_unavailable("no password", &server, none.get("k")).await;
    assert!(message.ends_with("requires a password, and `store.url` has none"), "{message}");

    let admin = redis::Client::open(server.url()).unwrap();
    let mut raw = admin.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CONFIG").arg("SET").arg("requirepass").arg("secret").query_async(&mut raw).await.unwrap();
    wrong.put("k", b"v".to_vec(), LONG).await.unwrap();
    assert_eq!(wrong.take("k").await.unwrap(), Some(b"v".to_vec()));
}

/// `rediss://` to a server that does not speak TLS fails like an outage (no panic,
/// no hang): TLS is wired in, and its failures are ordinary errors.
#[tokio::test]
async fn tls_to_a_plain_server_is_unavailable() {
    let Some(server) = RedisServer::start().await else { return };
    let store = redis(&format!("rediss://{}", server.address()), "lariat:");
    expect_unavailable("rediss ping", &server, store.ping()).await;
}

/// `lariat check` connects to a Redis store: ok when it answers, a clear failure
/// (non-zero exit, no password) when it does not.
#[tokio::test]
async fn check_pings_the_redis_store() {
    let Some(mut server) = RedisServer::start_with_password("secret").await else { return };
    let config = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    let text = format!(
        "[providers.p]\nbase_url = \"http://127.0.0.1:1\"\n[models.m]\nchain = [\"p/x\"]\ntools = []\n\
         [store]\nkind = \"redis\"\nurl = \"{}\"\n",
        server.url()
    );
    std::fs::write(config.path(), text).unwrap();
    let check = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_lariat"))
            .args(["check", "--config"])
            .arg(config.path())
            .env_remove("LARIAT_CONFIG")
            .output()
            .unwrap()
    };

    let out = check();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("store: redis at {}: ok", server.address())), "{stdout}");
    assert!(!stdout.contains("secret"), "{stdout}");

    server.stop();
    let out = check();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("`store`") && stderr.contains(&server.address()), "{stderr}");
    assert!(stderr.contains("connection refused"), "{stderr}");
    assert!(!stderr.contains("secret") && !String::from_utf8_lossy(&out.stdout).contains("secret"), "{stderr}");
}

/// `store.max_bytes_per_key` on a backend: one key's share fills and is refused
/// (every entry it holds stays), another key still stores, a taken entry's room is
/// free again; two replicas storing for one key at once never pass its share.
async fn per_key_share(a: &Store, b: &Store) {
    let entry = vec![b'x'; 4000];
    let mut stored = Vec::new();
    for i in 0..4 {
        match a.put_owned("alice", &format!("confirm:a{i}"), entry.clone(), LONG).await {
            Ok(()) => stored.push(format!("confirm:a{i}")),
            Err(StoreError::Full(message)) => {
                assert!(
                    message.contains("store.max_bytes_per_key") && message.contains("nothing was run"),
                    "{message}"
                );
            }
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(stored.len(), 2, "a 10,000-byte share holds two 4,000-byte entries");
    b.put_owned("bob", "confirm:b", entry.clone(), LONG).await.unwrap();
    for key in &stored {
        assert!(b.get(key).await.unwrap().is_some(), "{key} was evicted");
    }
    assert!(b.take(&stored[0]).await.unwrap().is_some());
    if let Store::Memory(m) = a {
        // moka releases a taken entry's bytes in its housekeeping; give it a moment.
        for _ in 0..50 {
            if m.bytes_of("alice") < 8000 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    a.put_owned("alice", "confirm:a-next", entry.clone(), LONG).await.unwrap();

    let racing = (0..8).map(|i| {
        let store = if i % 2 == 0 { a } else { b };
        let entry = entry.clone();
        async move { store.put_owned("carol", &format!("confirm:c{i}"), entry, LONG).await.is_ok() }
    });
    let won = futures::future::join_all(racing).await.into_iter().filter(|ok| *ok).count();
    assert_eq!(won, 2, "two concurrent writers went past carol's share");
}

fn limited(store: Store) -> Store {
    store.with_limits(config::StoreLimits { max_entry_bytes: 5000, max_bytes: 1 << 20, max_bytes_per_key: 10_000 })
}

#[tokio::test]
async fn memory_backend_bounds_each_keys_share() {
    let store = limited(memory());
    per_key_share(&store, &store.clone()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_backend_bounds_each_keys_share() {
    let Some(server) = RedisServer::start().await else { return };
    let (a, b) = (limited(redis(&server.url(), "lariat:")), limited(redis(&server.url(), "lariat:")));
    per_key_share(&a, &b).await;
}
