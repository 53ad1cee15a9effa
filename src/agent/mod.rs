//! The tool loop: for one client request, round after round — call the upstream
//! through the chain, run the server tool calls, feed the results back — until the
//! model answers, the round limit is reached, or the round must wait: for the
//! client's own tools (suspension) or for a human "yes" (the confirmation gate).
//!
//! `Agent::run` prepares the loop and hands back its `Events`: the loop is an
//! engine (`engine`) that says what it does in protocol-neutral events (`events`),
//! and a face renders them. The stream owns the work: a client that goes away drops
//! it, and with it the upstream call and the tools in flight.

mod answer;
mod brief;
mod confirm;
mod engine;
mod events;
mod execute;
mod fit;
mod pause;
mod prepare;
mod queue;
mod round;
mod running;
mod summary;
mod suspend;
#[cfg(test)]
mod tests;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;

use crate::auth::Caller;
use crate::config::VirtualModel;
use crate::openai::ChatRequest;
use crate::store::{Store, StoreError};
use crate::telemetry::Metrics;
use crate::tools::Registry;
use crate::upstream::{self, Model};
pub use confirm::Gate;
pub use events::{CallDelta, Confirmation, Delta, Ending, Event, Finished, Remains, ToolOutcome};
pub use summary::Summarizer;

/// The events of one request's loop, in order; it ends after `Finished` or `Failed`.
pub type Events = Pin<Box<dyn Stream<Item = Event> + Send>>;

/// Handles the loop works with; built once at start-up.
#[derive(Debug)]
pub struct Agent {
    pub upstream: Arc<dyn Model>,
    pub tools: Registry,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    /// Summarises the turns compaction drops, when configured.
    pub summarizer: Option<Summarizer>,
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// Cap on one tool result handed to the model.
    pub max_output_bytes: usize,
    /// How long a round suspended on client tools waits for them.
    pub suspend_ttl: Duration,
    /// Which calls wait for a human "yes", and how the answer is read.
    pub gate: Gate,
    pub compaction: crate::config::Compaction,
}

impl Settings {
    pub fn from_config(config: &crate::config::Config) -> Self {
        let confirm = &config.confirm;
        Self {
            max_output_bytes: config.tools.max_output_bytes,
            suspend_ttl: confirm.ttl,
            gate: Gate::new(confirm.tools.clone(), confirm.ttl, &confirm.yes_words, &confirm.no_words),
            compaction: config.compaction.clone(),
        }
    }
}

/// One client request, authenticated and resolved.
pub struct Turn {
    pub caller: Arc<Caller>,
    pub model: Arc<VirtualModel>,
    pub request: ChatRequest,
    /// Keep message and tool contents out of logs.
    pub off_record: bool,
}

/// What the loop can fail with. Tool failures are not here: they are results the
/// model sees.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request cannot be run as it is (`param` names the field).
    #[error("{message}")]
    BadRequest { message: String, param: &'static str },
    #[error(transparent)]
    Upstream(#[from] upstream::Error),
    /// The store of paused loops failed: nothing was run.
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Internal(String),
}

impl Error {
    fn bad_request(message: impl Into<String>, param: &'static str) -> Self {
        Self::BadRequest { message: message.into(), param }
    }
}

impl Agent {
    /// Prepares the loop (tool set, overlay, where it starts) and returns its events.
    /// A request that cannot start fails here, before any event.
    #[tracing::instrument(skip_all, fields(model = %turn.model.name, user = %turn.caller.user))]
    pub async fn run(self: &Arc<Self>, turn: Turn) -> Result<Events, Error> {
        let (engine, first, received) = self.prepare(turn).await?;
        Ok(engine.run(first, received))
    }
}
