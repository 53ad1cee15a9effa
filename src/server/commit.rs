//! What every face does before it writes a byte: wait for the loop to start (or fail,
//! which is then an HTTP error status), and for a non-streamed answer, its end.

use futures::StreamExt;

use crate::agent::{Event, Events, Finished};
use crate::error::ApiError;

/// The loop has started: the first upstream answered.
pub struct Started {
    pub target: Option<std::sync::Arc<str>>,
    pub attempts: u32,
    /// Progress that came before the start, to be shown first.
    pub early: Vec<Event>,
}

/// Waits for `Started`; a failure before it is the request's error.
pub async fn started(events: &mut Events) -> Result<Started, ApiError> {
    let mut early = Vec::new();
    loop {
        match events.next().await {
            Some(Event::Started { target, attempts }) => return Ok(Started { target, attempts, early }),
            Some(Event::Failed(error)) => return Err(error.into()),
            Some(other) => early.push(other),
            None => return Err(ApiError::Internal("the loop ended before it started".into())),
        }
    }
}

/// Waits for the end of a non-streamed loop.
pub async fn finished(mut events: Events) -> Result<Box<Finished>, ApiError> {
    while let Some(event) = events.next().await {
        match event {
            Event::Finished(finished) => return Ok(finished),
            Event::Failed(error) => return Err(error.into()),
            _ => {}
        }
    }
    Err(ApiError::Internal("the loop ended without an answer".into()))
}
