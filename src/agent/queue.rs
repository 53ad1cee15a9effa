//! The engine's events on their way to the stream that runs it: a bounded queue
//! whose two ends are polled by the same task (`Running` polls the engine, which
//! sends, and takes the events out around each poll). An event therefore costs a
//! lock nobody contends and a slot, not a channel's permits and wake-ups. A full
//! queue parks the sending future until the stream has taken an event.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use super::events::Event;

/// The receiving end is gone (the response was dropped, and the engine with it).
#[derive(Debug)]
pub(super) struct Closed;

struct Shared {
    events: VecDeque<Event>,
    capacity: usize,
    /// Sends waiting for room (several when concurrent tool calls report at once).
    blocked: Vec<Waker>,
    closed: bool,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A queue of at most `capacity` events.
pub(super) fn bounded(capacity: usize) -> (Sender, Receiver) {
    let shared = Arc::new(Mutex::new(Shared {
        events: VecDeque::with_capacity(capacity.min(8)),
        capacity: capacity.max(1),
        blocked: Vec::new(),
        closed: false,
    }));
    (Sender(shared.clone()), Receiver(shared))
}

#[derive(Clone)]
pub(super) struct Sender(Arc<Mutex<Shared>>);

impl Sender {
    /// Queues `event`, waiting while the queue is full.
    pub(super) fn send(&self, event: Event) -> Sending<'_> {
        Sending { queue: &self.0, event: Some(event) }
    }

    /// Queues `event` if there is room, else drops it; whether it was queued.
    pub(super) fn try_send(&self, event: Event) -> bool {
        let mut shared = lock(&self.0);
        let room = !shared.closed && shared.events.len() < shared.capacity;
        if room {
            shared.events.push_back(event);
        }
        room
    }
}

/// The future of [`Sender::send`].
pub(super) struct Sending<'a> {
    queue: &'a Mutex<Shared>,
    event: Option<Event>,
}

impl Future for Sending<'_> {
    type Output = Result<(), Closed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(event) = this.event.take() else { return Poll::Ready(Ok(())) };
        let mut shared = lock(this.queue);
        if shared.closed {
            return Poll::Ready(Err(Closed));
        }
        if shared.events.len() < shared.capacity {
            shared.events.push_back(event);
            return Poll::Ready(Ok(()));
        }
        if !shared.blocked.iter().any(|waker| waker.will_wake(cx.waker())) {
            shared.blocked.push(cx.waker().clone());
        }
        this.event = Some(event);
        Poll::Pending
    }
}

pub(super) struct Receiver(Arc<Mutex<Shared>>);

impl Receiver {
    /// The oldest event, if there is one; sends waiting for room are woken.
    pub(super) fn try_recv(&mut self) -> Option<Event> {
        let (event, blocked) = {
            let mut shared = lock(&self.0);
            let event = shared.events.pop_front()?;
            (event, std::mem::take(&mut shared.blocked))
        };
        blocked.into_iter().for_each(Waker::wake);
        Some(event)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let blocked = {
            let mut shared = lock(&self.0);
            shared.closed = true;
            shared.events.clear();
            std::mem::take(&mut shared.blocked)
        };
        blocked.into_iter().for_each(Waker::wake);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    fn event(round: u32) -> Event {
        Event::RoundStarted { round }
    }

    fn round(event: Option<Event>) -> Option<u32> {
        match event {
            Some(Event::RoundStarted { round }) => Some(round),
            _ => None,
        }
    }

    #[test]
    fn events_come_out_in_order_and_a_full_queue_waits_for_room() {
        let (sender, mut receiver) = bounded(2);
        assert!(matches!(sender.send(event(1)).now_or_never(), Some(Ok(()))));
        assert!(matches!(sender.send(event(2)).now_or_never(), Some(Ok(()))));
        assert!(!sender.try_send(event(9)), "a full queue drops what is tried");
        let waker = futures::task::noop_waker();
        let mut third = Box::pin(sender.send(event(3)));
        assert!(third.as_mut().poll(&mut Context::from_waker(&waker)).is_pending());
        assert_eq!(round(receiver.try_recv()), Some(1));
        assert!(matches!(third.as_mut().poll(&mut Context::from_waker(&waker)), Poll::Ready(Ok(()))));
        assert_eq!([receiver.try_recv(), receiver.try_recv()].map(round), [Some(2), Some(3)]);
        assert!(receiver.try_recv().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn taking_an_event_wakes_every_waiting_send() {
        let (sender, mut receiver) = bounded(1);
        sender.send(event(0)).await.unwrap_or_else(|_| panic!("closed"));
        let (first, second) = (sender.clone(), sender.clone());
        let waiting = tokio::spawn(async move {
            let (a, b) = tokio::join!(first.send(event(1)), second.send(event(2)));
            a.is_ok() && b.is_ok()
        });
        let mut seen = Vec::new();
        // Bounded, and on the paused clock: a send left unwoken fails the test
        // instead of hanging it.
        for _ in 0..1000 {
            match receiver.try_recv() {
                Some(event) => seen.push(round(Some(event))),
                None if seen.len() == 3 => break,
                None => tokio::task::yield_now().await,
            }
        }
        let sent = tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await;
        assert!(sent.is_ok_and(|sent| sent.unwrap_or(false)));
        seen.sort();
        assert_eq!(seen, [Some(0), Some(1), Some(2)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_send_fails_once_the_receiver_is_gone_and_a_waiting_one_is_woken() {
        let (sender, receiver) = bounded(1);
        sender.send(event(0)).await.unwrap_or_else(|_| panic!("closed"));
        let waiting = tokio::spawn({
            let sender = sender.clone();
            async move { sender.send(event(1)).await.is_err() }
        });
        tokio::task::yield_now().await;
        drop(receiver);
        let woken = tokio::time::timeout(std::time::Duration::from_secs(5), waiting).await;
        assert!(woken.is_ok_and(|failed| failed.unwrap_or(false)));
        assert!(sender.send(event(2)).await.is_err());
    }
}
