//! The queue from a socket's reader to its writer: frames for this socket
//! only (errors, a duplicate's original event) and close requests.
//!
//! Why not a tokio mpsc: its first block of 32 slots is allocated when the
//! channel is made, about 1.4 KB for every socket, while most sockets never
//! send a reply. This queue allocates only when used, and holds at most
//! `capacity` entries (the reader waits beyond that).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, Semaphore};

#[derive(Debug)]
struct Shared<T> {
    queue: Mutex<VecDeque<T>>,
    /// One permit per free place in the queue.
    space: Semaphore,
    ready: Notify,
    /// The sender is gone: once the queue is empty, nothing more comes.
    closed: AtomicBool,
}

/// Creates a queue holding at most `capacity` entries.
pub(crate) fn queue<T>(capacity: usize) -> (ReplySender<T>, ReplyReceiver<T>) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(VecDeque::new()),
        space: Semaphore::new(capacity),
        ready: Notify::new(),
        closed: AtomicBool::new(false),
    });
    (
        ReplySender {
            shared: shared.clone(),
        },
        ReplyReceiver { shared },
    )
}

#[derive(Debug)]
pub(crate) struct ReplySender<T> {
    shared: Arc<Shared<T>>,
}

#[derive(Debug)]
pub(crate) struct ReplyReceiver<T> {
    shared: Arc<Shared<T>>,
}

/// The receiver is gone.
#[derive(Debug)]
pub(crate) struct Closed;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the queue half-changed.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<T> ReplySender<T> {
    /// Queues `value`, waiting for room if the queue is full.
    pub(crate) async fn send(&self, value: T) -> Result<(), Closed> {
        let permit = self.shared.space.acquire().await.map_err(|_| Closed)?;
        permit.forget(); // given back by the receiver when it takes the value
        lock(&self.shared.queue).push_back(value);
        self.shared.ready.notify_one();
        Ok(())
    }
}

impl<T> Drop for ReplySender<T> {
    fn drop(&mut self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.ready.notify_one();
    }
}

impl<T> ReplyReceiver<T> {
    /// The next value, or `None` once the sender is gone and all is taken.
    pub(crate) async fn recv(&mut self) -> Option<T> {
        loop {
            let notified = self.shared.ready.notified();
            if let Some(value) = lock(&self.shared.queue).pop_front() {
                self.shared.space.add_permits(1);
                return Some(value);
            }
            if self.shared.closed.load(Ordering::Acquire) {
                return None;
            }
            notified.await;
        }
    }
}

impl<T> Drop for ReplyReceiver<T> {
    fn drop(&mut self) {
        // Wake a sender waiting for room: it gets `Closed`.
        self.shared.space.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn values_arrive_in_order_and_the_end_is_seen() {
        let (tx, mut rx) = queue(2);
        let sending = tokio::spawn(async move {
            for i in 0..10 {
                tx.send(i).await.expect("receiver alive");
            }
        });
        let mut got = Vec::new();
        while let Some(v) = rx.recv().await {
            got.push(v);
        }
        assert_eq!(got, (0..10).collect::<Vec<_>>());
        sending.await.expect("sender task");
    }

    #[tokio::test]
    async fn a_full_queue_makes_the_sender_wait() {
        let (tx, mut rx) = queue(1);
        tx.send(1).await.expect("room for one");
        let second = tokio::time::timeout(Duration::from_millis(50), tx.send(2)).await;
        assert!(
            second.is_err(),
            "the second send waits while the queue is full"
        );
        assert_eq!(rx.recv().await, Some(1));
        tx.send(2).await.expect("room again");
        assert_eq!(rx.recv().await, Some(2));
    }

    #[tokio::test]
    async fn a_sender_learns_the_receiver_is_gone() {
        let (tx, rx) = queue::<u8>(1);
        tx.send(1).await.expect("room for one");
        drop(rx);
        assert!(tx.send(2).await.is_err());
    }
}
