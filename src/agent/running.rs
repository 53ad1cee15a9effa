//! The engine's events as a stream: the engine runs inside it, so the response owns
//! the work and dropping the stream stops the loop.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;

use super::events::Event;
use super::queue;

/// The engine and its events, polled together by the face. Events are taken with
/// `try_recv` around each poll of the engine rather than with a registered waker: an
/// event then costs no wake-up and no trip through the scheduler, only a queue slot.
/// The engine's own waits (upstream, tools, a full queue) wake the task as usual.
pub(super) struct Running {
    driver: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    received: queue::Receiver,
}

impl Running {
    pub(super) fn new(driver: Pin<Box<dyn Future<Output = ()> + Send>>, received: queue::Receiver) -> Self {
        Self { driver: Some(driver), received }
    }
}

impl Stream for Running {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        if let Some(event) = self.received.try_recv() {
            return Poll::Ready(Some(event));
        }
        let Some(driver) = self.driver.as_mut() else { return Poll::Ready(None) };
        let done = driver.as_mut().poll(cx).is_ready();
        if done {
            self.driver = None;
        }
        match self.received.try_recv() {
            Some(event) => Poll::Ready(Some(event)),
            // Finished and drained.
            None if done => Poll::Ready(None),
            // The engine waits on something that will wake this task.
            None => Poll::Pending,
        }
    }
}
