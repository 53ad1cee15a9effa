//! The answer model: once the loop model is done gathering, a stronger model writes
//! the reply from the client's conversation and a brief of what was gathered. It
//! gets no tools; suspension and the confirmation gate happen before, in the loop.

use std::sync::Arc;

use super::brief;
use super::engine::{Engine, Step, UPSTREAM_STREAM_OPTIONS, Voice};
use super::events::{Delta, Event, Finished};
use super::fit::Fitting;
use super::prepare::TOOLS_LINE;
use crate::compact::{self, Compactor, Tokenizer};
use crate::config::{AnswerFallback, AnswerModel, AnswerWhen};
use crate::openai::{FinishReason, Reading};
use crate::upstream::{Params, Route};

impl Engine {
    /// The loop model answered in words: hand over to the answer model, or let the
    /// answer stand (no answer model, or `answer_when = "tools_used"` and none was).
    pub(super) async fn answered(&mut self, mut finished: Box<Finished>) -> Step {
        match &self.model.answer {
            Some(answer) if answer.when == AnswerWhen::Always || brief::tools_used(&self.messages) => {
                Step::HandOver(finished)
            }
            Some(_) => {
                // Its words were held back as notes: they are the reply after all.
                self.reveal(&finished).await;
                finished.usage = self.progress.usage.take();
                Step::Answer(finished)
            }
            None => {
                finished.usage = self.progress.usage.take();
                Step::Answer(finished)
            }
        }
    }

    /// Sends the loop model's held-back words to a streaming client.
    async fn reveal(&mut self, finished: &Finished) {
        let text = finished.message.content.text();
        if self.request.stream && !text.is_empty() {
            let delta = Delta { role: true, text: Some(text.into_owned()), ..Delta::default() };
            self.emit(Event::Delta(delta)).await;
            self.progress.text_shown = true;
        }
    }

    pub(super) async fn hand_over(&mut self, mut notes: Finished) -> Step {
        let model = self.model.clone();
        let Some(answer) = model.answer.as_ref() else { return Step::Answer(Box::new(notes)) };
        self.emit(Event::HandedOver { to: answer.name.clone() }).await;
        let mut messages = self.answer_conversation(answer, &notes.message.content.text());
        let stream = self.request.stream;
        let params = Params {
            tools: &[],
            client_tools: &[],
            tool_choice: None,
            stream_options: stream.then_some(&*UPSTREAM_STREAM_OPTIONS),
            reading: Reading::Typed,
            rest: &self.request.rest,
        };
        let agent = &*self.agent;
        let mut compactor = Compactor::new(agent.settings.compaction.policy.clone());
        let mut history = Fitting {
            messages: &mut messages,
            compactor: &mut compactor,
            tools: [&[], &[]],
            rest: &self.request.rest,
            settings: &agent.settings.compaction,
            summarizer: agent.summarizer.as_ref(),
            upstream: &*agent.upstream,
            metrics: &agent.metrics,
            model: &model.name,
            user: &self.caller.user,
            events: &self.events,
        };
        let called = agent.upstream.call(&answer.chain, &mut Route::default(), &mut history, &params, stream).await;
        let answered = match called {
            Ok(answered) => answered,
            Err(error) if answer.fallback == AnswerFallback::Loop => {
                agent.metrics.record_answer(&model.name, "loop_fallback");
                tracing::warn!(%error, answer = %answer.name, "the answer model failed; the loop model's notes are the reply");
                self.reveal(&notes).await;
                notes.usage = self.progress.usage.take();
                return Step::Answer(Box::new(notes));
            }
            Err(error) => {
                agent.metrics.record_answer(&model.name, "failed");
                return Step::Fail(error.into());
            }
        };
        agent.metrics.record_answer(&model.name, "written");
        let target: Arc<str> = answered.target.label.clone();
        tracing::info!(answer = %answer.name, target = %target, "the answer model wrote the reply");
        let (round, cut) = self.relay(answered.reply, &target, Voice::Answer).await;
        if let Some(error) = cut {
            return Step::Fail(error);
        }
        let mut message = round.message;
        message.tool_calls = None;
        Step::Answer(Box::new(Finished {
            message,
            finish_reason: round.finish_reason.unwrap_or(FinishReason::Stop),
            usage: self.progress.usage.take(),
            answered_by: Some(target),
            completion_rest: round.completion_rest,
            choice_rest: round.choice_rest,
            kept: None,
            ..notes
        }))
    }

    /// The client's conversation and the brief, sized to the first answer target's
    /// budget when its window is known.
    fn answer_conversation(&self, answer: &AnswerModel, notes: &str) -> Vec<crate::openai::Message> {
        let loop_lines = [TOOLS_LINE, answer.gather_prompt.as_str()];
        let settings = &self.agent.settings.compaction;
        let window = answer.chain.first().and_then(|t| t.context_window.or(settings.default_window));
        let mut conversation = brief::conversation(&self.messages, &loop_lines);
        let max_chars = match (window, answer.chain.first()) {
            (Some(window), Some(target)) if settings.enabled => {
                let budget = settings.policy.budget(window as usize, &self.request.rest).limit;
                let used = compact::count(&conversation, &[], Tokenizer::for_model(&target.model));
                brief::room(budget, used, answer.brief_chars)
            }
            _ => answer.brief_chars,
        };
        brief::attach(&mut conversation, &brief::write(&self.messages, notes, answer, max_chars));
        conversation
    }
}
