//! Drives one client request from the resolved virtual model to the answer.
//!
//! Today a request is one upstream round relayed to the client; the tool loop
//! (compact → upstream → tools, suspension) grows here as a state machine over the
//! same `Agent` handles and `Outcome`, so the server never changes shape.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};

use crate::auth::Caller;
use crate::config::VirtualModel;
use crate::error::ApiError;
use crate::openai::{ChatChunk, ChatCompletion, ChatRequest};
use crate::telemetry::Metrics;
use crate::upstream::{Answered, Attempt, Prompt, Reply, Route, Upstream};

/// The chunks a streaming client receives, in order; an `Err` item ends the stream.
pub type AgentStream = Pin<Box<dyn Stream<Item = Result<ChatChunk, ApiError>> + Send>>;

/// Handles the agent works with; built once at start-up.
#[derive(Debug)]
pub struct Agent {
    pub upstream: Upstream,
    pub metrics: Arc<Metrics>,
}

/// One client request, authenticated and resolved.
pub struct Turn {
    pub caller: Arc<Caller>,
    pub model: Arc<VirtualModel>,
    pub request: ChatRequest,
    /// The response id every chunk and the completion carry.
    pub response_id: String,
}

pub enum Answer {
    Complete(ChatCompletion),
    Stream(AgentStream),
}

pub struct Outcome {
    pub answer: Answer,
    /// `provider/model` of the target that answered.
    pub upstream: String,
    pub attempts: u32,
}

impl Agent {
    #[tracing::instrument(skip_all, fields(model = %turn.model.name, user = %turn.caller.user))]
    pub async fn run(&self, turn: Turn) -> Result<Outcome, ApiError> {
        let client_streams = turn.request.stream;
        let include_usage = turn.request.stream_options.as_ref().is_some_and(|o| o.include_usage);
        let mut route = Route::default();
        let prompt = Prompt::from_request(&turn.request);
        let answered = self.upstream.call(&turn.model.chain, &mut route, &prompt, client_streams).await;
        let Answered { target, reply, attempts } = answered?;
        let label = target.label();
        let rewrite = Rewrite { id: turn.response_id, model: turn.model.name.clone() };
        let answer = match (reply, client_streams) {
            (Reply::Complete(mut completion), false) => {
                self.count_tokens(&turn.caller.user, &rewrite.model, &label, completion.usage.as_ref());
                rewrite.completion(&mut completion);
                Answer::Complete(completion)
            }
            (Reply::Complete(completion), true) => {
                self.count_tokens(&turn.caller.user, &rewrite.model, &label, completion.usage.as_ref());
                let chunks = completion.into_chunks(include_usage);
                Answer::Stream(Box::pin(futures::stream::iter(chunks).map(move |mut c| {
                    rewrite.chunk(&mut c);
                    Ok(c)
                })))
            }
            (Reply::Stream(chunks), _) => {
                let metrics = self.metrics.clone();
                let user = turn.caller.user.clone();
                let target_label = label.clone();
                Answer::Stream(Box::pin(chunks.map(move |item| match item {
                    Ok(mut chunk) => {
                        if let Some(usage) = &chunk.usage {
                            metrics.record_tokens(
                                &user,
                                &rewrite.model,
                                &target_label,
                                usage.prompt_tokens,
                                usage.completion_tokens,
                            );
                        }
                        rewrite.chunk(&mut chunk);
                        Ok(chunk)
                    }
                    Err(failure) => {
                        Err(ApiError::UpstreamFailed(vec![Attempt { target: target_label.clone(), failure }]))
                    }
                })))
            }
        };
        Ok(Outcome { answer, upstream: label, attempts })
    }

    fn count_tokens(&self, user: &str, model: &str, target: &str, usage: Option<&crate::openai::Usage>) {
        if let Some(u) = usage {
            self.metrics.record_tokens(user, model, target, u.prompt_tokens, u.completion_tokens);
        }
    }
}

/// What lariat rewrites in every answer: one id, and the virtual model's name.
struct Rewrite {
    id: String,
    model: String,
}

impl Rewrite {
    fn completion(&self, c: &mut ChatCompletion) {
        c.id.clone_from(&self.id);
        c.model.clone_from(&self.model);
    }

    fn chunk(&self, c: &mut ChatChunk) {
        c.id.clone_from(&self.id);
        c.model.clone_from(&self.model);
    }
}
