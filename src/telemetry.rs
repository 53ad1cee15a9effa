//! Logs (tracing, human or JSON) and Prometheus metrics.
//!
//! Metrics live in a per-instance `Metrics` value rather than a global recorder, so
//! several lariat instances (tests, or an embedding) never share counters.

use std::hash::Hash;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

/// How one server tool call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolOutcome {
    Ok,
    Error,
    Timeout,
    /// The model called a tool that does not exist.
    UnknownTool,
    /// The arguments were not a JSON object.
    BadArguments,
}

impl ToolOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Timeout => "timeout",
            Self::UnknownTool => "unknown_tool",
            Self::BadArguments => "bad_arguments",
        }
    }

    /// Whether the tool ran (its duration means something).
    pub fn ran(self) -> bool {
        matches!(self, Self::Ok | Self::Error | Self::Timeout)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// Levels when `RUST_LOG` is not set. rmcp logs whole protocol structs (and every
/// MCP progress notification) at info: only its warnings and errors show by default.
pub const DEFAULT_LOG_LEVELS: &str = "info,rmcp=warn";

/// Installs the global subscriber. `RUST_LOG` sets levels (default
/// [`DEFAULT_LOG_LEVELS`]); every line is redacted once `redact::redact_logs` ran.
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_LEVELS));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(crate::redact::LogWriter);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).with_span_list(true).init(),
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    model: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    target: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    target: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FallbackLabels {
    from: String,
    to: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLabels {
    tool: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolNameLabels {
    tool: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    user: String,
    model: String,
    target: String,
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AnswerTokenLabels {
    model: String,
    target: String,
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AnswerLabels {
    model: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConfirmationLabels {
    tool: String,
    event: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CompactionLabels {
    model: String,
    target: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SummaryLabels {
    model: String,
    summarizer: String,
    result: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// How many label sets of a family each serving thread keeps the handles of.
const RECENT: usize = 16;
/// Places for the serving threads' handles (threads beyond share one, under its lock).
const PLACES: usize = 64;

/// A family recorded into on every request, with the handles it made lately kept per
/// serving thread and found by comparing label values in place. A gateway's label
/// sets repeat (a few routes, models and targets), while the family's own lookup
/// builds owned labels, hashes them and takes the family's lock every time.
#[derive(Debug)]
struct Hot<L, M, C = fn() -> M> {
    family: Family<L, M, C>,
    recent: Box<[Mutex<Recent<L, M>>]>,
}

/// One thread's label sets and their handles, the most recently used last.
type Recent<L, M> = Vec<(L, M)>;

impl<L: Clone + Hash + Eq, M: Clone, C: MetricConstructor<M>> Hot<L, M, C> {
    fn new(family: Family<L, M, C>) -> Self {
        Self { family, recent: (0..PLACES).map(|_| Mutex::default()).collect() }
    }

    /// The metric of the label set that `is` recognises (`labels` builds it).
    fn get(&self, is: impl Fn(&L) -> bool, labels: impl FnOnce() -> L) -> M {
        let mut recent = self.recent[crate::worker::index() % PLACES].lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(at) = recent.iter().position(|(l, _)| is(l)) {
            // The least recently used goes first when the list is full.
            recent[at..].rotate_left(1);
            return recent[recent.len() - 1].1.clone();
        }
        let labels = labels();
        let metric = self.family.get_or_create(&labels).clone();
        if recent.len() == RECENT {
            recent.remove(0);
        }
        recent.push((labels, metric.clone()));
        metric
    }
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Hot<RequestLabels, Counter>,
    latency: Hot<RouteLabels, Histogram>,
    upstream_attempts: Hot<AttemptLabels, Counter>,
    fallbacks: Family<FallbackLabels, Counter>,
    cooldowns: Family<TargetLabels, Counter>,
    first_token: Hot<TargetLabels, Histogram>,
    tokens: Hot<TokenLabels, Counter>,
    answer_tokens: Family<AnswerTokenLabels, Counter>,
    answers: Family<AnswerLabels, Counter>,
    tool_calls: Family<ToolLabels, Counter>,
    tool_latency: HistogramFamily<ToolNameLabels>,
    rounds: Hot<ModelLabels, Histogram>,
    confirmations: Family<ConfirmationLabels, Counter>,
    compactions: Family<CompactionLabels, Counter>,
    summaries: Family<SummaryLabels, Counter>,
    active_streams: Gauge,
}

fn rounds_histogram() -> Histogram {
    Histogram::new([0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0])
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("lariat");
        let requests = Hot::new(Family::default());
        let latency = Hot::new(Family::new_with_constructor(latency_histogram as fn() -> Histogram));
        let upstream_attempts = Hot::new(Family::default());
        let fallbacks = Family::default();
        let cooldowns = Family::default();
        let first_token = Hot::new(Family::new_with_constructor(latency_histogram as fn() -> Histogram));
        let tokens = Hot::new(Family::default());
        let answer_tokens = Family::default();
        let answers = Family::default();
        let tool_calls = Family::default();
        let tool_latency: HistogramFamily<ToolNameLabels> = Family::new_with_constructor(latency_histogram);
        let rounds = Hot::new(Family::new_with_constructor(rounds_histogram as fn() -> Histogram));
        let confirmations = Family::default();
        let compactions = Family::default();
        let summaries = Family::default();
        let active_streams = Gauge::default();
        registry.register("requests", "HTTP requests by route, virtual model and status", requests.family.clone());
        registry.register("request_duration_seconds", "Time to response headers by route", latency.family.clone());
        registry.register(
            "upstream_attempts",
            "Upstream attempts by target and outcome",
            upstream_attempts.family.clone(),
        );
        registry.register("upstream_fallbacks", "Moves from a failed target to the next one", fallbacks.clone());
        registry.register("upstream_cooldowns", "Cool-downs started, by target", cooldowns.clone());
        registry.register(
            "upstream_first_token_seconds",
            "Time from sending to the first chunk (streams) or the whole answer, by target",
            first_token.family.clone(),
        );
        registry.register("tokens", "Prompt and completion tokens by user, model and target", tokens.family.clone());
        registry.register(
            "answer_tokens",
            "The answer model's share of `tokens`, by model, answer target and kind",
            answer_tokens.clone(),
        );
        registry.register(
            "answers",
            "Hand-overs to an answer model by model and outcome (written, failed, loop_fallback)",
            answers.clone(),
        );
        registry.register("tool_calls", "Tool calls by tool and outcome", tool_calls.clone());
        registry.register("tool_duration_seconds", "Tool call latency by tool", tool_latency.clone());
        registry.register("rounds", "Tool-loop rounds per request, by model", rounds.family.clone());
        registry.register(
            "confirmations",
            "Confirmations by tool and event (created, approved, denied, expired)",
            confirmations.clone(),
        );
        registry.register(
            "compactions",
            "Compactions before upstream calls by model, target and result (compacted, tighter, overflow)",
            compactions.clone(),
        );
        registry.register(
            "summaries",
            "Summaries of dropped turns by model, summariser and result (created, cached, failed, no_room)",
            summaries.clone(),
        );
        registry.register("active_streams", "SSE responses currently open", active_streams.clone());
        Self {
            registry,
            requests,
            latency,
            upstream_attempts,
            fallbacks,
            cooldowns,
            first_token,
            tokens,
            answer_tokens,
            answers,
            tool_calls,
            tool_latency,
            rounds,
            confirmations,
            compactions,
            summaries,
            active_streams,
        }
    }
}

impl Metrics {
    pub fn record_request(&self, route: &str, model: &str, status: u16, elapsed: Duration) {
        self.requests
            .get(
                |l| l.status == status && l.route == route && l.model == model,
                || RequestLabels { route: route.into(), model: model.into(), status },
            )
            .inc();
        self.latency.get(|l| l.route == route, || RouteLabels { route: route.into() }).observe(elapsed.as_secs_f64());
    }

    pub fn record_attempt(&self, target: &str, outcome: &str) {
        self.upstream_attempts
            .get(
                |l| l.outcome == outcome && l.target == target,
                || AttemptLabels { target: target.into(), outcome: outcome.into() },
            )
            .inc();
    }

    pub fn record_fallback(&self, from: &str, to: &str) {
        self.fallbacks.get_or_create(&FallbackLabels { from: from.into(), to: to.into() }).inc();
    }

    pub fn record_cooldown(&self, target: &str) {
        self.cooldowns.get_or_create(&TargetLabels { target: target.into() }).inc();
    }

    pub fn record_first_token(&self, target: &str, elapsed: Duration) {
        self.first_token
            .get(|l| l.target == target, || TargetLabels { target: target.into() })
            .observe(elapsed.as_secs_f64());
    }

    pub fn record_tokens(&self, user: &str, model: &str, target: &str, prompt: u64, completion: u64) {
        for (kind, n) in [("prompt", prompt), ("completion", completion)] {
            self.tokens
                .get(
                    |l| l.kind == kind && l.target == target && l.model == model && l.user == user,
                    || TokenLabels { user: user.into(), model: model.into(), target: target.into(), kind },
                )
                .inc_by(n);
        }
    }

    /// Tokens of an answer model (they are in `record_tokens` too).
    pub fn record_answer_tokens(&self, model: &str, target: &str, prompt: u64, completion: u64) {
        for (kind, n) in [("prompt", prompt), ("completion", completion)] {
            let labels = AnswerTokenLabels { model: model.into(), target: target.into(), kind };
            self.answer_tokens.get_or_create(&labels).inc_by(n);
        }
    }

    pub fn record_answer(&self, model: &str, outcome: &'static str) {
        self.answers.get_or_create(&AnswerLabels { model: model.into(), outcome }).inc();
    }

    /// `tool` must be a configured name (or a fixed word such as `unknown`), never
    /// one a model made up: label values stay bounded.
    pub fn record_tool_call(&self, tool: &str, outcome: ToolOutcome, elapsed: Duration) {
        self.tool_calls.get_or_create(&ToolLabels { tool: tool.into(), outcome: outcome.as_str() }).inc();
        if outcome.ran() {
            self.tool_latency.get_or_create(&ToolNameLabels { tool: tool.into() }).observe(elapsed.as_secs_f64());
        }
    }

    pub fn record_rounds(&self, model: &str, rounds: u32) {
        self.rounds.get(|l| l.model == model, || ModelLabels { model: model.into() }).observe(f64::from(rounds));
    }

    pub fn record_confirmation(&self, tool: &str, event: &'static str) {
        self.confirmations.get_or_create(&ConfirmationLabels { tool: tool.into(), event }).inc();
    }

    pub fn record_summary(&self, model: &str, summarizer: &str, result: &'static str) {
        self.summaries
            .get_or_create(&SummaryLabels { model: model.into(), summarizer: summarizer.into(), result })
            .inc();
    }

    pub fn record_compaction(&self, model: &str, target: &str, result: &'static str) {
        self.compactions.get_or_create(&CompactionLabels { model: model.into(), target: target.into(), result }).inc();
    }

    /// Counts an open stream until the returned guard is dropped.
    pub fn stream_opened(&self) -> StreamGuard {
        self.active_streams.inc();
        StreamGuard(self.active_streams.clone())
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Decrements the active-streams gauge when the response stream is dropped.
#[derive(Debug)]
pub struct StreamGuard(Gauge);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(metrics: &Metrics, series: &str) -> Option<String> {
        let text = metrics.encode();
        text.lines().find_map(|line| line.strip_prefix(series).map(|v| v.trim().to_owned()))
    }

    /// Handles kept per thread count into the family's own series, however many label
    /// sets pass through (more than are kept) and on whichever thread.
    #[test]
    fn every_record_lands_in_its_own_series() {
        let metrics = Metrics::default();
        for round in 0..3 {
            for user in 0..RECENT + 4 {
                metrics.record_tokens(&format!("u{user}"), "m", "p/x", 1, 10);
            }
            crate::worker::enter(round + 1);
            metrics.record_tokens("u0", "m", "p/y", 2, 20);
        }
        crate::worker::enter(0);
        let series = |user: &str, target: &str, kind: &str| {
            sample(
                &metrics,
                &format!(r#"lariat_tokens_total{{user="{user}",model="m",target="{target}",kind="{kind}"}}"#),
            )
        };
        for user in [0, 7, RECENT + 3] {
            assert_eq!(series(&format!("u{user}"), "p/x", "prompt").as_deref(), Some("3"));
            assert_eq!(series(&format!("u{user}"), "p/x", "completion").as_deref(), Some("30"));
        }
        assert_eq!(series("u0", "p/y", "completion").as_deref(), Some("60"));
        metrics.record_request("/v1/chat/completions", "m", 200, Duration::from_millis(1));
        metrics.record_request("/v1/chat/completions", "m", 404, Duration::from_millis(1));
        metrics.record_request("/v1/chat/completions", "m", 200, Duration::from_millis(1));
        let requests = |status: u16| {
            let labels = format!(r#"route="/v1/chat/completions",model="m",status="{status}""#);
            sample(&metrics, &format!("lariat_requests_total{{{labels}}}"))
        };
        assert_eq!((requests(200).as_deref(), requests(404).as_deref()), (Some("2"), Some("1")));
    }
}
