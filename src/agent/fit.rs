//! Fitting each upstream call into its target's context budget (SPEC §6): the loop's
//! `History` for `Upstream::call`, compacting the conversation in place before each
//! target is tried — a backup with a smaller window gets its own, deeper cut — and
//! tighter after a target refused it as too long.

use serde_json::{Map, Value};

use crate::compact::{Budget, Compactor, Tokenizer};
use crate::config::{ChainEntry, Compaction};
use crate::openai::{Message, ToolDef};
use crate::telemetry::Metrics;
use crate::upstream::History;

pub struct Fitting<'a> {
    pub messages: &'a mut Vec<Message>,
    /// Kept across the request's rounds: counts of unchanged messages are remembered.
    pub compactor: &'a mut Compactor,
    /// Everything the call sends as `tools` (server and client).
    pub tools: [&'a [ToolDef]; 2],
    /// The request's pass-through fields (`max_tokens` shrinks the budget).
    pub rest: &'a Map<String, Value>,
    pub settings: &'a Compaction,
    pub metrics: &'a Metrics,
    pub model: &'a str,
}

impl History for Fitting<'_> {
    fn messages(&self) -> &[Message] {
        self.messages
    }

    fn fit(&mut self, target: &ChainEntry, tighter: bool) -> Result<bool, String> {
        if !self.settings.enabled {
            return Ok(false);
        }
        let tokenizer = Tokenizer::for_model(&target.model);
        let tools = || self.tools.into_iter().flatten();
        let window = target.context_window.or(self.settings.default_window);
        let budget = match window {
            Some(window) => self.settings.policy.budget(window as usize, self.rest),
            // An unknown window is learnt only from a refusal: aim below what was refused.
            None if tighter => Budget { limit: self.compactor.count(self.messages, tools(), tokenizer) },
            None => return Ok(false),
        };
        let budget = if tighter { budget.tighter() } else { budget };
        let label = target.label();
        match self.compactor.compact(self.messages, tools(), budget, tokenizer) {
            Ok(report) if report.is_noop() => Ok(false),
            Ok(report) => {
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
                let window = window.map_or_else(|| "unknown".to_owned(), |w| w.to_string());
                Err(format!("{overflow} (context window {window})"))
            }
        }
    }
}
