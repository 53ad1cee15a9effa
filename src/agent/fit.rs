//! Fitting each upstream call into its target's context budget: the loop's
//! `History` for `Upstream::call`, compacting the conversation in place before each
//! target is tried — a backup with a smaller window gets its own, deeper cut — and
//! tighter after a target refused it as too long. With a summariser configured, the
//! turns compaction drops are summarised into the leading system message.

use futures::future::BoxFuture;
use serde_json::{Map, Value};

use super::events::Event;
use super::queue;
use super::summary::{self, Attach, Summarizer};
use crate::compact::{self, Budget, Compactor, Dropped, Tokenizer};
use crate::config::{ChainEntry, Compaction};
use crate::openai::{Message, ToolDef};
use crate::telemetry::Metrics;
use crate::upstream::{Fit, History, Model, Unfit};

pub struct Fitting<'a> {
    pub messages: &'a mut Vec<Message>,
    /// Kept across the request's rounds: counts of unchanged messages are remembered.
    pub compactor: &'a mut Compactor,
    /// Everything the call sends as `tools` (server and client).
    pub tools: [&'a [ToolDef]; 2],
    /// The request's pass-through fields (`max_tokens` shrinks the budget).
    pub rest: &'a Map<String, Value>,
    pub settings: &'a Compaction,
    pub summarizer: Option<&'a Summarizer>,
    /// For the summariser's calls.
    pub upstream: &'a dyn Model,
    pub metrics: &'a Metrics,
    pub model: &'a str,
    pub user: &'a str,
    /// Where compactions and fallbacks are announced.
    pub events: &'a queue::Sender,
}

impl History for Fitting<'_> {
    fn messages(&self) -> &[Message] {
        self.messages
    }

    fn fit<'a>(&'a mut self, target: &'a ChainEntry, how: Fit) -> BoxFuture<'a, Result<bool, Unfit>> {
        Box::pin(self.fit_to(target, how == Fit::Tighter))
    }

    fn fell_back(&mut self, from: &ChainEntry, to: &ChainEntry) {
        // Progress only: with the face behind, losing the note costs nothing.
        self.events.try_send(Event::Fallback { from: from.label.clone(), to: to.label.clone() });
    }
}

impl<'a> Fitting<'a> {
    async fn fit_to(&mut self, target: &ChainEntry, tighter: bool) -> Result<bool, Unfit> {
        if !self.settings.enabled {
            return Ok(false);
        }
        let tokenizer = Tokenizer::for_model(&target.model);
        let window = target.context_window.or(self.settings.default_window);
        let budget = match window {
            Some(window) => self.settings.policy.budget(window as usize, self.rest),
            // An unknown window is learnt only from a refusal: aim below what was refused.
            None if tighter => Budget { limit: self.compactor.count(self.messages, self.tools(), tokenizer) },
            None => return Ok(false),
        };
        let budget = if tighter { budget.tighter() } else { budget };
        let label = target.label();
        let reserve = self.summarizer.map_or(0, Summarizer::reserve);
        let tools = self.tools();
        match self.compactor.compact_keeping(self.messages, tools, budget, tokenizer, reserve) {
            Ok((report, _)) if report.is_noop() => Ok(false),
            Ok((report, dropped)) => {
                self.metrics.record_compaction(self.model, label, if tighter { "tighter" } else { "compacted" });
                tracing::info!(
                    target = label,
                    tokenizer = tokenizer.name(),
                    limit = budget.limit,
                    tokens_before = report.tokens_before,
                    tokens_after = report.tokens_after,
                    truncated = report.truncated,
                    capped = report.capped,
                    dropped_messages = report.dropped_messages,
                    tighter,
                    "compacted the conversation to fit the target"
                );
                let dropped_messages = dropped.messages.len();
                if let Some(summarizer) = self.summarizer.filter(|_| !dropped.is_empty()) {
                    self.stand_in(summarizer, dropped, budget, tokenizer).await;
                }
                let _ = self
                    .events
                    .send(Event::Compacted {
                        target: target.label.clone(),
                        tokens_before: report.tokens_before,
                        tokens_after: report.tokens_after,
                        dropped_messages,
                    })
                    .await;
                Ok(true)
            }
            Err(overflow) => {
                self.metrics.record_compaction(self.model, label, "overflow");
                tracing::warn!(
                    target = label,
                    needed = overflow.needed,
                    limit = overflow.limit,
                    "the conversation does not fit the target"
                );
                let tool_tokens = self.compactor.count(&[], self.tools(), tokenizer);
                let tools = self.tools().count();
                Err(Unfit { needed: overflow.needed, limit: overflow.limit, window, tools, tool_tokens })
            }
        }
    }

    /// The tool schemas sent; borrowed for `'a`, not from `self`, so that the
    /// messages can be changed while they are iterated.
    fn tools(&self) -> impl Iterator<Item = &'a ToolDef> + Clone + use<'a> {
        let [server, client] = self.tools;
        server.iter().chain(client)
    }

    /// Attaches a summary of `dropped` to the leading system message (folding in the
    /// summary an earlier compaction left there), when the summariser answers in time
    /// and the summary fits. Otherwise the turns stay dropped: a summary is a bonus,
    /// never a failure.
    async fn stand_in(&mut self, summarizer: &Summarizer, dropped: Dropped, budget: Budget, tokenizer: Tokenizer) {
        let previous = summary::attached(self.messages);
        let summary = match summarizer.summarize(self.upstream, previous, &dropped.messages).await {
            Ok(summary) => summary,
            Err(error) => {
                self.metrics.record_summary(self.model, summarizer.label(), "failed");
                tracing::warn!(
                    summarizer = summarizer.label(),
                    %error,
                    dropped_messages = dropped.messages.len(),
                    "no summary; the oldest turns stay dropped"
                );
                return;
            }
        };
        let usage = &summary.usage;
        if usage.total_tokens > 0 {
            let label = summarizer.label();
            self.metrics.record_tokens(self.user, self.model, label, usage.prompt_tokens, usage.completion_tokens);
        }
        let tokens = |message: &Message| compact::count(std::slice::from_ref(message), &[], tokenizer);
        let attach = summary::attach(self.messages, &summary.text);
        let (new, old) = match &attach {
            Attach::Replace(first) => (tokens(first), tokens(&self.messages[0])),
            Attach::Insert(first) => (tokens(first), compact::REPLY_PRIMING),
        };
        let now = self.compactor.count(self.messages, self.tools(), tokenizer);
        if now - old + new > budget.limit {
            self.metrics.record_summary(self.model, summarizer.label(), "no_room");
            tracing::warn!(
                summarizer = summarizer.label(),
                tokens_with_summary = now - old + new,
                limit = budget.limit,
                "the summary does not fit; the oldest turns stay dropped"
            );
            return;
        }
        match attach {
            Attach::Replace(first) => self.messages[0] = first,
            Attach::Insert(first) => self.compactor.insert(self.messages, 0, first),
        }
        let result = if summary.calls == 0 { "cached" } else { "created" };
        self.metrics.record_summary(self.model, summarizer.label(), result);
        tracing::info!(
            summarizer = summarizer.label(),
            summarized_messages = dropped.messages.len(),
            calls = summary.calls,
            summary_tokens = tokenizer.count(&summary.text),
            "summarised the dropped turns"
        );
    }
}
