//! Talking to upstream providers. `Upstream::call` is the one entry point the agent
//! uses for every upstream round: it walks the virtual model's chain —
//! retries with backoff and `Retry-After`, fallback to the next target, cool-downs
//! shared across requests, stickiness within a request — and either hands back the
//! first target's answer or one error naming every target and what happened to it.

mod exchange;
mod failure;
mod health;
mod lines;
pub mod probe;
mod sse;
mod transport;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::time::Instant;

pub use failure::{Attempt, Error, Failure, Unfit, describe_attempts};
pub use sse::ChunkStream;

use crate::config::{ChainEntry, Config, UpstreamPolicy};
use serde_json::{Map, Value};

use crate::openai::{ChatCompletion, ChatRequest, Message, Reading, RelayedCompletion, StreamOptions, ToolDef};
use crate::telemetry::Metrics;
use health::Health;
use transport::Endpoint;

/// What an upstream answered.
pub enum Reply {
    Complete(ChatCompletion),
    /// A whole answer a relay sends on as it came (asked for with `Reading::Relayed`).
    Relayed(Box<RelayedCompletion>),
    /// A stream whose first chunk already arrived (so the target is committed).
    Stream(ChunkStream),
}

/// What the tool loop needs of an upstream: one round on a chain. `Upstream` is the
/// real one; tests drive the loop with a scripted implementation.
pub trait Model: Send + Sync + std::fmt::Debug {
    /// One upstream round of `history` and `params` on `chain`; `stream` asks the
    /// upstream to stream.
    fn call<'a>(
        &'a self,
        chain: &'a [ChainEntry],
        route: &'a mut Route,
        history: &'a mut dyn History,
        params: &'a Params<'a>,
        stream: bool,
    ) -> BoxFuture<'a, Result<Answered, Error>>;
}

/// The HTTP client of a provider could not be built (start-up only).
#[derive(Debug, thiserror::Error)]
#[error("building the HTTP client for `{provider}`: {reason}")]
pub struct BuildError {
    provider: String,
    reason: String,
}

/// A reply and the target that produced it.
pub struct Answered {
    pub target: ChainEntry,
    pub reply: Reply,
    /// Upstream attempts this call made, the successful one included.
    pub attempts: u32,
}

/// What one upstream call sends besides the conversation, borrowed from the loop.
#[derive(Debug, Clone, Copy)]
pub struct Params<'a> {
    /// Server tools; sent together with `client_tools` (both empty: no `tools` field).
    pub tools: &'a [ToolDef],
    pub client_tools: &'a [ToolDef],
    pub tool_choice: Option<&'a Value>,
    pub stream_options: Option<&'a StreamOptions>,
    /// How the answer is read: a stream's chunks, or a whole answer (`Relayed` is
    /// kept for a non-streaming request only: a streaming client gets chunks).
    pub reading: Reading,
    /// Every other field of the client's request, passed through unchanged.
    pub rest: &'a Map<String, Value>,
}

impl<'a> Params<'a> {
    /// The client's request as is.
    pub fn from_request(request: &'a ChatRequest) -> Self {
        Self {
            tools: &[],
            client_tools: request.tools.as_deref().unwrap_or_default(),
            tool_choice: request.tool_choice.as_ref(),
            stream_options: request.stream_options.as_ref(),
            reading: Reading::Typed,
            rest: &request.rest,
        }
    }
}

/// One upstream request: the conversation as fitted to the target, and the rest.
#[derive(Debug, Clone, Copy)]
pub struct Prompt<'a> {
    pub messages: &'a [Message],
    pub params: &'a Params<'a>,
}

/// The conversation of one upstream call. Before each target is tried it is made to
/// fit that target (a backup with a smaller window gets its own compaction), and
/// once more, tighter, when a target refuses it as too long.
/// How hard to fit a conversation to a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// Within the target's budget.
    Budget,
    /// Below it: the target refused the last attempt as too long.
    Tighter,
}

pub trait History: Send {
    fn messages(&self) -> &[Message];

    /// Makes the conversation fit `target`. `Ok(changed)`; `Err` says why it cannot
    /// fit: the target is skipped. Asynchronous because fitting may itself call an
    /// upstream (a summariser).
    fn fit<'a>(&'a mut self, target: &'a ChainEntry, how: Fit) -> BoxFuture<'a, Result<bool, Unfit>>;

    /// The walk moves on from `from` to `to` (for progress; nothing by default).
    fn fell_back(&mut self, _from: &ChainEntry, _to: &ChainEntry) {}
}

/// A conversation sent as it is, whatever the target.
pub struct Fixed<'a>(pub &'a [Message]);

impl History for Fixed<'_> {
    fn messages(&self) -> &[Message] {
        self.0
    }

    fn fit<'a>(&'a mut self, _target: &'a ChainEntry, _how: Fit) -> BoxFuture<'a, Result<bool, Unfit>> {
        Box::pin(std::future::ready(Ok(false)))
    }
}

/// Per-request routing memory: once a target answered, the request's later upstream
/// calls try it first.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Route {
    sticky: Option<usize>,
}

impl Route {
    /// The chain index of the target that answered last, if any.
    pub fn sticky(&self) -> Option<usize> {
        self.sticky
    }

    /// Remembers that the target at `index` answered.
    pub fn stick_to(&mut self, index: usize) {
        self.sticky = Some(index);
    }
}

#[derive(Debug)]
pub struct Upstream {
    /// Per provider, one endpoint per connect timeout (a client's connector has one).
    endpoints: HashMap<String, Vec<(Duration, Endpoint)>>,
    health: Arc<Health>,
    policy: UpstreamPolicy,
    max_event_bytes: usize,
    metrics: Arc<Metrics>,
}

/// How walking one target ended.
enum TargetOutcome {
    Answered(Reply),
    /// The request itself is wrong: stop the walk.
    ClientFault,
    /// The prompt does not fit: only a target with a larger window can help.
    ContextLength,
    Failed,
}

impl Upstream {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Self, BuildError> {
        let summarizer = config.compaction.summarize.as_ref().map(|s| &s.target);
        let entries: Vec<&ChainEntry> = config
            .models
            .values()
            .flat_map(|m| m.chain.iter().chain(m.answer.iter().flat_map(|a| &a.chain)))
            .chain(summarizer)
            .collect();
        let https = entries.iter().find(|e| e.provider.chat_url.starts_with("https:")).map(|e| &e.provider.name);
        let tls = transport::tls_config(https.is_some())
            .map_err(|reason| BuildError { provider: https.cloned().unwrap_or_default(), reason })?;
        let proxies = transport::Proxies::from_env();
        let mut endpoints: HashMap<String, Vec<(Duration, Endpoint)>> = HashMap::new();
        for entry in entries {
            let built = endpoints.entry(entry.provider.name.clone()).or_default();
            if built.iter().any(|(connect, _)| *connect == entry.timeouts.connect) {
                continue;
            }
            let endpoint =
                Endpoint::new(&entry.provider, entry.timeouts.connect, &tls, &proxies, config.server.threads.get())
                    .map_err(|reason| BuildError { provider: entry.provider.name.clone(), reason })?;
            built.push((entry.timeouts.connect, endpoint));
        }
        let policy = config.upstream.clone();
        Ok(Self {
            endpoints,
            health: Arc::new(Health::new(policy.cooldown_after, policy.cooldown)),
            policy,
            max_event_bytes: config.server.max_event_bytes,
            metrics,
        })
    }

    /// One upstream round of `history` and `params` on `chain`; `stream` asks the
    /// upstream to stream.
    #[tracing::instrument(skip_all, fields(stream))]
    pub async fn call(
        &self,
        chain: &[ChainEntry],
        route: &mut Route,
        history: &mut dyn History,
        params: &Params<'_>,
        stream: bool,
    ) -> Result<Answered, Error> {
        let labels: Vec<&str> = chain.iter().map(ChainEntry::label).collect();
        let mut attempts = Vec::new();
        // After a context-length error, only targets with a larger window can help.
        let mut needs_window: Option<u32> = None;
        let mut previous: Option<&ChainEntry> = None;
        for index in self.health.order(&labels, route.sticky) {
            let (entry, label) = (&chain[index], labels[index]);
            if needs_window.is_some_and(|w| entry.context_window.is_some_and(|own| own <= w)) {
                continue;
            }
            if let Some(from) = previous {
                self.metrics.record_fallback(from.label(), label);
                tracing::info!(from = from.label(), to = label, "falling back to the next target");
                history.fell_back(from, entry);
            }
            if self.health.is_cooling(label) {
                tracing::info!(target = label, "every healthier target failed; trying one that is cooling down");
            }
            if let Err(why) = history.fit(entry, Fit::Budget).await {
                // Not the target's fault: no cool-down, only a larger window can help.
                attempts.push(Attempt { target: label.to_owned(), failure: Failure::TooLong(why) });
                needs_window = Some(entry.context_window.unwrap_or(0));
                previous = Some(entry);
                continue;
            }
            match self.walk_target(entry, label, history, params, stream, &mut attempts).await {
                TargetOutcome::Answered(reply) => {
                    self.health.succeeded(label);
                    route.sticky = Some(index);
                    let reply = self.watch(reply, label);
                    let attempts = u32::try_from(attempts.len() + 1).unwrap_or(u32::MAX);
                    return Ok(Answered { target: entry.clone(), reply, attempts });
                }
                TargetOutcome::ClientFault => return Err(Error::from_attempts(attempts)),
                TargetOutcome::ContextLength => needs_window = Some(entry.context_window.unwrap_or(0)),
                TargetOutcome::Failed => {
                    if self.health.failed(label) {
                        self.metrics.record_cooldown(label);
                        tracing::warn!(
                            target = label,
                            cooldown_s = self.policy.cooldown.as_secs_f64(),
                            "target cooling down"
                        );
                    }
                }
            }
            previous = Some(entry);
        }
        Err(Error::from_attempts(attempts))
    }

    /// Tries one target, retrying what is worth retrying. A prompt the target finds
    /// too long is compacted tighter and sent once more before the walk moves on.
    async fn walk_target(
        &self,
        entry: &ChainEntry,
        label: &str,
        history: &mut dyn History,
        params: &Params<'_>,
        stream: bool,
        attempts: &mut Vec<Attempt>,
    ) -> TargetOutcome {
        let endpoint = self.endpoints.get(&entry.provider.name).and_then(|built| {
            built.iter().find(|(connect, _)| *connect == entry.timeouts.connect).map(|(_, endpoint)| endpoint)
        });
        let Some(endpoint) = endpoint else {
            attempts.push(Attempt { target: label.to_owned(), failure: Failure::Connect("no HTTP client".into()) });
            return TargetOutcome::Failed;
        };
        let (mut retry, mut tightened) = (0, false);
        loop {
            let started = Instant::now();
            let prompt = Prompt { messages: history.messages(), params };
            let result = exchange::exchange(endpoint, entry, &prompt, stream, self.max_event_bytes).await;
            let failure = match result {
                Ok(reply) => {
                    self.metrics.record_attempt(label, "ok");
                    self.metrics.record_first_token(label, started.elapsed());
                    return TargetOutcome::Answered(reply);
                }
                Err(failure) => failure,
            };
            self.metrics.record_attempt(label, failure.reason());
            tracing::warn!(target = label, retry, reason = failure.reason(), error = %failure, "upstream attempt failed");
            if failure.is_context_length() {
                attempts.push(Attempt { target: label.to_owned(), failure });
                if tightened {
                    return TargetOutcome::ContextLength;
                }
                tightened = true;
                match history.fit(entry, Fit::Tighter).await {
                    Ok(true) => {}
                    // Sending the same prompt again would get the same answer.
                    Ok(false) => return TargetOutcome::ContextLength,
                    Err(why) => {
                        attempts.push(Attempt { target: label.to_owned(), failure: Failure::TooLong(why) });
                        return TargetOutcome::ContextLength;
                    }
                }
                tracing::info!(
                    target = label,
                    "the target found the prompt too long; compacted tighter, trying once more"
                );
                continue;
            }
            let delay = self.retry_delay(&failure, retry);
            let outcome = if failure.is_client_fault() {
                Some(TargetOutcome::ClientFault)
            } else if retry == entry.retries || delay.is_none() {
                Some(TargetOutcome::Failed)
            } else {
                None
            };
            attempts.push(Attempt { target: label.to_owned(), failure });
            match (outcome, delay) {
                (Some(outcome), _) => return outcome,
                (None, Some(delay)) => tokio::time::sleep(delay).await,
                (None, None) => return TargetOutcome::Failed,
            }
            retry += 1;
        }
    }

    /// How long to wait before retrying the same target, or `None` to move on: the
    /// failure is not retryable, or the upstream asked for a longer pause than we
    /// are willing to make the client wait.
    fn retry_delay(&self, failure: &Failure, retry: u32) -> Option<Duration> {
        if !failure.is_retryable() {
            return None;
        }
        match failure.retry_after() {
            Some(asked) if asked > self.policy.retry_after_max => None,
            Some(asked) => Some(asked),
            None => Some(backoff(&self.policy, retry)),
        }
    }

    /// Counts, logs and charges to the target's health a stream that fails after its
    /// first chunk (the target was committed, so the failure reaches the client).
    fn watch(&self, reply: Reply, label: &str) -> Reply {
        let Reply::Stream(chunks) = reply else { return reply };
        let (metrics, health, label) = (self.metrics.clone(), self.health.clone(), label.to_owned());
        Reply::Stream(Box::pin(chunks.inspect(move |item| {
            if let Err(failure) = item {
                metrics.record_attempt(&label, failure.reason());
                if health.failed(&label) {
                    metrics.record_cooldown(&label);
                }
                tracing::warn!(target = %label, reason = failure.reason(), error = %failure, "upstream stream failed after its first chunk");
            }
        })))
    }
}

impl Model for Upstream {
    fn call<'a>(
        &'a self,
        chain: &'a [ChainEntry],
        route: &'a mut Route,
        history: &'a mut dyn History,
        params: &'a Params<'a>,
        stream: bool,
    ) -> BoxFuture<'a, Result<Answered, Error>> {
        Box::pin(Upstream::call(self, chain, route, history, params, stream))
    }
}

/// Exponential backoff with jitter: a random delay between half and all of
/// `base × 2^retry`, capped at `max`.
fn backoff(policy: &UpstreamPolicy, retry: u32) -> Duration {
    let exp = policy.backoff_base.saturating_mul(1u32 << retry.min(16)).min(policy.backoff_max);
    exp.mul_f64(rand::random_range(0.5..=1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_with_jitter_and_a_cap() {
        let policy = UpstreamPolicy {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            retry_after_max: Duration::from_secs(30),
            cooldown_after: 3,
            cooldown: Duration::from_secs(30),
        };
        for (retry, full) in [(0, 100), (1, 200), (2, 400), (3, 800), (4, 1000), (30, 1000)] {
            for _ in 0..20 {
                let d = backoff(&policy, retry).as_millis();
                assert!((full / 2..=full).contains(&d), "retry {retry}: {d} ms not within [{}, {full}]", full / 2);
            }
        }
    }
}
