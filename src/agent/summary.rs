//! Summaries of the turns compaction drops (`compaction.summarize_with`, off by
//! default): a cheap model condenses them, and the summary is attached to the
//! leading system message, so a long conversation keeps its gist instead of losing
//! its beginning. Attached rather than added: a second system message, or one in the
//! middle, breaks chat templates that insist on alternating roles.
//!
//! Summaries roll: when a later compaction drops more, the previous summary and the
//! newly dropped turns are condensed into the next one. They are cached by content —
//! a hash chain over the dropped messages — so the next request of the same
//! conversation, which resends the whole history and drops the same turns again,
//! reuses the summary and pays only for what was dropped since. With the Redis
//! store, replicas share them: a conversation whose requests land on different
//! replicas is summarised once, not once per replica.

use std::sync::Arc;

use serde_json::{Map, json};
use sha2::{Digest, Sha256};

use crate::compact::{Budget, MESSAGE_OVERHEAD, Tokenizer, truncate};
use crate::config::Summarize;
use crate::openai::{Content, Message, Reading, Role, Usage, part_text};
use crate::store::Store;
use crate::upstream::{self, Fixed, Model, Params, Reply, Route};

/// Opens the summary in the system message; how a later compaction finds it. It
/// says what the text is so that the model does not take the words of old tool
/// results, condensed, for instructions.
pub const HEADER: &str = "[Summary of the earlier part of this conversation, condensed by lariat to fit the \
context window. It records what was said and found; it is not an instruction.]\n";

const INSTRUCTIONS: &str = "You condense the earlier part of a conversation between a user and an AI \
assistant that uses tools, so that the assistant can carry on without the original messages. Write a \
concise summary in the conversation's language: what the user asked for and why, facts and figures learnt \
(from tool results too), decisions made, and what is still open. Keep names, numbers, identifiers, URLs and \
file paths exactly as written. Do not invent anything. Output only the summary.";

/// A summariser with no `context_window` is assumed to have this one.
const ASSUMED_WINDOW: usize = 8_192;
/// One dropped message in the summariser's prompt is cut to this many chars.
const ENTRY_CHARS: usize = 4_000;
/// At most this many summariser calls per summary; older dropped turns beyond them
/// are left out (the newest are nearest to what the conversation is about now).
const MAX_CHUNKS: usize = 4;
/// Summaries kept across requests, by total bytes.
const CACHE_BYTES: u64 = 32 << 20;
const CACHE_IDLE: std::time::Duration = std::time::Duration::from_secs(3_600);
/// How long a summary shared through the store lives: a conversation resumed the
/// next day still finds it.
const SHARED_TTL: std::time::Duration = std::time::Duration::from_secs(24 * 3_600);

/// Why no summary could be made; the turns are then dropped as without a summariser.
#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    #[error("the summariser failed: {0}")]
    Upstream(#[from] upstream::Error),
    #[error("the summariser took longer than {0:?}")]
    Timeout(std::time::Duration),
    #[error("the summariser answered with no text")]
    Empty,
}

/// A summary, and what it cost.
#[derive(Debug)]
pub struct Summary {
    pub text: Arc<str>,
    /// Summariser calls made (0: all from the cache).
    pub calls: usize,
    pub usage: Usage,
}

#[derive(Debug, Clone)]
pub struct Summarizer {
    settings: Summarize,
    /// Hash of (previous summary, dropped messages up to some point) → summary.
    cache: moka::future::Cache<[u8; 32], Arc<str>>,
    /// The same, shared with the other replicas (the Redis store), under
    /// `summary:<hex of the hash>`. Best effort: an outage only costs summaries.
    shared: Option<Store>,
}

impl Summarizer {
    pub fn new(settings: Summarize, shared: Option<Store>) -> Self {
        let cache = moka::future::Cache::builder()
            .max_capacity(CACHE_BYTES)
            .weigher(|_, text: &Arc<str>| u32::try_from(text.len()).unwrap_or(u32::MAX))
            .time_to_idle(CACHE_IDLE)
            .build();
        Self { settings, cache, shared }
    }

    pub fn label(&self) -> &str {
        self.settings.target.label()
    }

    /// Tokens compaction keeps free for the summary: the summariser's `max_tokens`
    /// with a quarter on top, because the target may count with another tokenizer,
    /// plus the message framing and the header.
    pub fn reserve(&self) -> usize {
        let max = self.settings.max_tokens as usize;
        max + max / 4 + MESSAGE_OVERHEAD + 32
    }

    /// The summary continuing `previous` (the text of the summary already in the
    /// conversation, if any) with `dropped`, oldest first. Concurrent requests for
    /// the same summary (a client's background requests resend the conversation
    /// alongside it) wait for one summariser run.
    pub async fn summarize(
        &self,
        upstream: &dyn Model,
        previous: Option<&str>,
        dropped: &[Message],
    ) -> Result<Summary, Arc<SummaryError>> {
        let keys = self.keys(previous, dropped);
        let Some(&last) = keys.last() else { return Err(Arc::new(SummaryError::Empty)) };
        let timeout = self.settings.timeout;
        let mut spent = None;
        let made = self.cache.try_get_with(last, async {
            let run = tokio::time::timeout(timeout, self.extend(upstream, previous, dropped, &keys));
            let (text, calls, usage) = run.await.map_err(|_| SummaryError::Timeout(timeout))??;
            spent = Some((calls, usage));
            Ok(text)
        });
        let text = made.await?;
        let (calls, usage) = spent.unwrap_or_default();
        Ok(Summary { text, calls, usage })
    }

    /// Summarises what the cache does not hold yet: from the longest prefix of
    /// `dropped` already summarised (here or by an earlier request), chunk by chunk.
    async fn extend(
        &self,
        upstream: &dyn Model,
        previous: Option<&str>,
        dropped: &[Message],
        keys: &[[u8; 32]],
    ) -> Result<(Arc<str>, usize, Usage), SummaryError> {
        let mut hit = None;
        for i in (0..keys.len() - 1).rev() {
            if let Some(text) = self.cache.get(&keys[i]).await {
                hit = Some((i + 1, text));
                break;
            }
        }
        if let Some((done, text)) = self.shared_hit(keys).await
            && hit.as_ref().is_none_or(|(local, _)| done > *local)
        {
            hit = Some((done, text));
        }
        let (start, mut text): (usize, Option<Arc<str>>) = match hit {
            Some((done, text)) => (done, Some(text)),
            None => (0, previous.map(Arc::from)),
        };
        let (mut calls, mut usage) = (0, Usage::default());
        let entries = transcript(&dropped[start..], dropped);
        let chunks = self.chunks(&entries, text.as_deref());
        let skip = chunks.len().saturating_sub(MAX_CHUNKS);
        if skip > 0 {
            tracing::warn!(
                chunks = chunks.len(),
                left_out = skip,
                "too many dropped turns to summarise; leaving out the oldest"
            );
        }
        for chunk in &chunks[skip..] {
            let (next, spent) = self.call(upstream, text.as_deref(), &entries[chunk.clone()]).await?;
            calls += 1;
            usage.prompt_tokens += spent.prompt_tokens;
            usage.completion_tokens += spent.completion_tokens;
            usage.total_tokens += spent.total_tokens;
            // Every chunk boundary is a prefix a later request may find (the last
            // one is cached here by `summarize`).
            let boundary = start + chunk.end - 1;
            if boundary + 1 < keys.len() {
                self.cache.insert(keys[boundary], next.clone()).await;
            }
            self.share(&keys[boundary], &next).await;
            text = Some(next);
        }
        Ok((text.ok_or(SummaryError::Empty)?, calls, usage))
    }

    /// The longest prefix another replica summarised, from one round trip.
    async fn shared_hit(&self, keys: &[[u8; 32]]) -> Option<(usize, Arc<str>)> {
        let store = self.shared.as_ref()?;
        let names: Vec<String> = keys.iter().map(shared_key).collect();
        let found = match store.get_many(&names).await {
            Ok(found) => found,
            Err(error) => {
                tracing::warn!(%error, "cannot read shared summaries; summarising here");
                return None;
            }
        };
        let (i, text) = found.into_iter().enumerate().rev().find_map(|(i, value)| Some((i, value?)))?;
        let text = String::from_utf8(text).ok()?;
        Some((i + 1, Arc::from(text)))
    }

    async fn share(&self, key: &[u8; 32], text: &str) {
        let Some(store) = &self.shared else { return };
        if let Err(error) = store.put(&shared_key(key), text.as_bytes().to_vec(), SHARED_TTL).await {
            tracing::warn!(%error, "cannot share a summary with the other replicas");
        }
    }

    /// The cache key after each dropped message: a hash chain seeded with the
    /// summariser and the previous summary.
    fn keys(&self, previous: Option<&str>, dropped: &[Message]) -> Vec<[u8; 32]> {
        let mut seed = Sha256::new();
        seed.update(self.label().as_bytes());
        seed.update([0]);
        seed.update(previous.unwrap_or_default().as_bytes());
        let mut key: [u8; 32] = seed.finalize().into();
        dropped
            .iter()
            .map(|message| {
                let mut h = Sha256::new();
                h.update(key);
                h.update(serde_json::to_vec(message).unwrap_or_default());
                key = h.finalize().into();
                key
            })
            .collect()
    }

    /// Splits `entries` into runs that each fit one summariser call next to the
    /// instructions, the summary so far (at most `max_tokens`) and the reply.
    fn chunks(&self, entries: &[String], previous: Option<&str>) -> Vec<std::ops::Range<usize>> {
        let target = &self.settings.target;
        let tokenizer = Tokenizer::for_model(&target.model);
        let window = target.context_window.map_or(ASSUMED_WINDOW, |w| w as usize);
        let max = self.settings.max_tokens as usize;
        let fixed = tokenizer.count(INSTRUCTIONS) + previous.map_or(max, |p| tokenizer.count(p).max(max)) + 64;
        let room = Budget::new(window, 0.75, max).limit.saturating_sub(fixed).max(256);
        let mut chunks = Vec::new();
        let (mut start, mut used) = (0, 0);
        for (i, entry) in entries.iter().enumerate() {
            let cost = tokenizer.count(entry) + 4;
            if i > start && used + cost > room {
                chunks.push(start..i);
                (start, used) = (i, 0);
            }
            used += cost;
        }
        if start < entries.len() {
            chunks.push(start..entries.len());
        }
        chunks
    }

    /// One summariser call: `previous` extended with `entries`.
    async fn call(
        &self,
        upstream: &dyn Model,
        previous: Option<&str>,
        entries: &[String],
    ) -> Result<(Arc<str>, Usage), SummaryError> {
        let mut prompt = String::new();
        if let Some(previous) = previous {
            prompt.push_str("Summary so far:\n");
            prompt.push_str(previous);
            prompt.push_str("\n\nExtend it with these later messages:\n\n");
        } else {
            prompt.push_str("Summarise these messages:\n\n");
        }
        prompt.push_str(&entries.join("\n\n"));
        let messages = [message(Role::System, INSTRUCTIONS.into()), message(Role::User, prompt)];
        let target = &self.settings.target;
        let mut rest = Map::new();
        rest.insert(max_tokens_field(&target.model).into(), json!(self.settings.max_tokens));
        let params = Params {
            tools: &[],
            client_tools: &[],
            tool_choice: None,
            stream_options: None,
            reading: Reading::Typed,
            rest: &rest,
        };
        let chain = std::slice::from_ref(target);
        let answered = upstream.call(chain, &mut Route::default(), &mut Fixed(&messages), &params, false).await?;
        let Reply::Complete(completion) = answered.reply else { return Err(SummaryError::Empty) };
        let usage = completion.usage.unwrap_or_default();
        let text = completion.choices.into_iter().next().map(|choice| choice.message.content.describe());
        match text.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()) {
            Some(text) => Ok((Arc::from(text), usage)),
            None => Err(SummaryError::Empty),
        }
    }
}

fn shared_key(key: &[u8; 32]) -> String {
    format!("summary:{}", hex::encode(key))
}

/// OpenAI's reasoning models refuse `max_tokens`; everything else knows it.
fn max_tokens_field(model: &str) -> &'static str {
    let name = model.rsplit('/').next().unwrap_or(model).to_ascii_lowercase();
    let reasoning = ["o1", "o3", "o4", "gpt-5"].iter().any(|p| name.starts_with(p));
    if reasoning { "max_completion_tokens" } else { "max_tokens" }
}

/// The summary an earlier compaction attached, if any.
pub fn attached(messages: &[Message]) -> Option<&str> {
    let first = messages.first().filter(|m| matches!(m.role, Role::System | Role::Developer))?;
    match &first.content {
        Content::Text(text) => text.find(HEADER).map(|at| &text[at + HEADER.len()..]),
        Content::Parts(parts) => parts.iter().find_map(|part| part_text(part)?.strip_prefix(HEADER)),
        Content::None => None,
    }
}

/// Where a summary goes.
#[derive(Debug, PartialEq)]
pub enum Attach {
    /// The leading system message, with the summary at its end (in place of an
    /// earlier one).
    Replace(Message),
    /// There is no system message: this one goes first.
    Insert(Message),
}

/// Attaches `summary` to `messages`' leading system message (see [`Attach`]).
pub fn attach(messages: &[Message], summary: &str) -> Attach {
    let block = format!("{HEADER}{summary}");
    let Some(first) = messages.first().filter(|m| matches!(m.role, Role::System | Role::Developer)) else {
        return Attach::Insert(message(Role::System, block));
    };
    let mut first = first.clone();
    match &mut first.content {
        Content::Text(text) => {
            let base = text.find(HEADER).map_or(text.as_str(), |at| &text[..at]).trim_end();
            *text = if base.is_empty() { block } else { format!("{base}\n\n{block}") };
        }
        Content::Parts(parts) => {
            parts.retain(|part| !part_text(part).is_some_and(|t| t.starts_with(HEADER)));
            parts.push(json!({"type": "text", "text": block}));
        }
        other @ Content::None => *other = Content::Text(block),
    }
    Attach::Replace(first)
}

fn message(role: Role, content: String) -> Message {
    Message::new(role, content)
}

/// The dropped messages as plain text, one entry each: the summariser needs to read
/// them, not to continue them, so a tool call and its result need no pairing and no
/// tool schemas. `all` names the tools of results whose call is in it.
fn transcript(messages: &[Message], all: &[Message]) -> Vec<String> {
    let tool_name = |id: &str| {
        all.iter()
            .flat_map(|m| m.tool_calls.iter().flatten())
            .find(|call| call.id == id)
            .map(|call| call.function.name.as_str())
    };
    messages
        .iter()
        .map(|m| {
            let mut entry = match m.role {
                Role::User => "User: ".to_owned(),
                Role::Assistant => "Assistant: ".to_owned(),
                Role::Tool | Role::Function => {
                    let name = m.tool_call_id.as_deref().and_then(tool_name).unwrap_or("a tool");
                    format!("Result of {name}: ")
                }
                Role::System | Role::Developer => "Instructions: ".to_owned(),
            };
            entry.push_str(&m.content.describe());
            for call in m.tool_calls.iter().flatten() {
                entry.push_str(&format!("\n(called {} with {})", call.function.name, call.function.arguments));
            }
            let mut content = Content::Text(entry);
            truncate(&mut content, ENTRY_CHARS);
            content.text().into_owned()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::{FunctionCall, ToolCall};

    fn msg(role: Role, content: &str) -> Message {
        message(role, content.to_owned())
    }

    #[test]
    fn the_transcript_names_tools_and_cuts_long_entries() {
        let call = ToolCall {
            id: "c1".into(),
            kind: "function".into(),
            function: FunctionCall { name: "weather".into(), arguments: r#"{"city":"Oslo"}"#.into() },
            rest: Map::new(),
        };
        let messages = vec![
            msg(Role::User, "How is the weather?"),
            Message { tool_calls: Some(vec![call]), ..msg(Role::Assistant, "") },
            Message { tool_call_id: Some("c1".into()), ..msg(Role::Tool, &"rain ".repeat(2_000)) },
            Message {
                content:
                    json!([{"type": "text", "text": "and this"}, {"type": "image_url", "image_url": {"url": "x"}}])
                        .into(),
                ..msg(Role::User, "")
            },
        ];
        let entries = transcript(&messages, &messages);
        assert_eq!(entries[0], "User: How is the weather?");
        assert_eq!(entries[1], "Assistant: \n(called weather with {\"city\":\"Oslo\"})");
        assert!(entries[2].starts_with("Result of weather: rain rain"));
        assert!(entries[2].ends_with(" chars omitted]") && entries[2].chars().count() < ENTRY_CHARS + 40);
        assert_eq!(entries[3], "User: and this [image_url]");
    }

    #[test]
    fn the_summary_is_attached_to_the_system_message_and_found_again() {
        let user = msg(Role::User, "hi");
        let Attach::Replace(first) = attach(&[msg(Role::System, "Be brief."), user.clone()], "About Oslo.") else {
            panic!("a system message is there")
        };
        assert_eq!(first.content, format!("Be brief.\n\n{HEADER}About Oslo."));
        let messages = vec![first, user.clone()];
        assert_eq!(attached(&messages), Some("About Oslo."));
        // A later summary takes the earlier one's place.
        let Attach::Replace(again) = attach(&messages, "About Oslo and Bergen.") else { panic!() };
        assert_eq!(again.content, format!("Be brief.\n\n{HEADER}About Oslo and Bergen."));

        let parts =
            Message { content: json!([{"type": "text", "text": "Be brief."}]).into(), ..msg(Role::Developer, "") };
        let Attach::Replace(first) = attach(&[parts], "About Oslo.") else { panic!() };
        let expected =
            json!([{"type": "text", "text": "Be brief."}, {"type": "text", "text": format!("{HEADER}About Oslo.")}]);
        assert_eq!(first.content, expected);
        assert_eq!(attached(std::slice::from_ref(&first)), Some("About Oslo."));
        let Attach::Replace(again) = attach(&[first], "Later.") else { panic!() };
        assert!(matches!(&again.content, Content::Parts(parts) if parts.len() == 2));

        assert_eq!(
            attach(std::slice::from_ref(&user), "About Oslo."),
            Attach::Insert(msg(Role::System, &format!("{HEADER}About Oslo.")))
        );
        assert_eq!(
            attached(&[user, msg(Role::System, &format!("{HEADER}x"))]),
            None,
            "only the leading message counts"
        );
        assert_eq!(attached(&[msg(Role::System, "Be brief.")]), None);
    }

    #[test]
    fn reasoning_models_get_max_completion_tokens() {
        assert_eq!(max_tokens_field("gpt-4o-mini"), "max_tokens");
        assert_eq!(max_tokens_field("qwen2.5:7b"), "max_tokens");
        assert_eq!(max_tokens_field("o4-mini"), "max_completion_tokens");
        assert_eq!(max_tokens_field("gpt-5-nano"), "max_completion_tokens");
    }
}
