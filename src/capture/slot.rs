//! Hand-over between a capture driver and its inference thread, with the full-buffer rule
//! stated in the type: [`Latest`] keeps only the newest item (camera frames: a stale frame
//! is worthless), [`Bounded`] drops the new item when full (audio windows: the callback
//! must never block). Both count what they drop.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

struct Inner<T> {
    queue: Mutex<(VecDeque<T>, bool)>,
    ready: Condvar,
    capacity: usize,
    keep_newest: bool,
    dropped: AtomicU64,
}

/// Sending half; cloneable.
pub struct Sender<T>(Arc<Inner<T>>);
/// Receiving half.
pub struct Receiver<T>(Arc<Inner<T>>);

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

fn channel<T>(capacity: usize, keep_newest: bool) -> (Sender<T>, Receiver<T>) {
    let inner = Arc::new(Inner {
        queue: Mutex::new((VecDeque::with_capacity(capacity), false)),
        ready: Condvar::new(),
        capacity: capacity.max(1),
        keep_newest,
        dropped: AtomicU64::new(0),
    });
    (Sender(inner.clone()), Receiver(inner))
}

/// One slot; a new item replaces an unread one (which is counted as dropped).
pub fn latest<T>() -> (Sender<T>, Receiver<T>) {
    channel(1, true)
}

/// `capacity` items; a new item is dropped (and counted) when full. Never blocks the sender.
pub fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    channel(capacity, false)
}

/// The receiver is gone or the channel was closed.
#[derive(Debug, PartialEq, Eq)]
pub struct Closed;

impl<T> Sender<T> {
    /// Hand over an item without blocking; returns `false` if an item was dropped.
    pub fn send(&self, item: T) -> Result<bool, Closed> {
        let mut q = self.0.queue.lock().map_err(|_| Closed)?;
        if q.1 {
            return Err(Closed);
        }
        let mut kept_all = true;
        if q.0.len() >= self.0.capacity {
            kept_all = false;
            self.0.dropped.fetch_add(1, Ordering::Relaxed);
            if self.0.keep_newest {
                q.0.pop_front();
            } else {
                return Ok(false);
            }
        }
        q.0.push_back(item);
        drop(q);
        self.0.ready.notify_one();
        Ok(kept_all)
    }

    /// Close: the receiver drains what is left, then sees `None`.
    pub fn close(&self) {
        if let Ok(mut q) = self.0.queue.lock() {
            q.1 = true;
        }
        self.0.ready.notify_all();
    }

    pub fn dropped(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }
}

impl<T> Receiver<T> {
    /// Wait up to `timeout` for an item; `Ok(None)` on timeout, `Err(Closed)` once closed and empty.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<T>, Closed> {
        let q = self.0.queue.lock().map_err(|_| Closed)?;
        let (mut q, _) = self
            .0
            .ready
            .wait_timeout_while(q, timeout, |q| q.0.is_empty() && !q.1)
            .map_err(|_| Closed)?;
        match q.0.pop_front() {
            Some(item) => Ok(Some(item)),
            None if q.1 => Err(Closed),
            None => Ok(None),
        }
    }

    pub fn dropped(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_keeps_newest_frame_and_counts_drops() {
        let (tx, rx) = latest();
        assert_eq!(tx.send(1), Ok(true));
        assert_eq!(tx.send(2), Ok(false));
        assert_eq!(tx.send(3), Ok(false));
        assert_eq!(rx.recv_timeout(Duration::from_millis(1)), Ok(Some(3)));
        assert_eq!(rx.dropped(), 2);
        assert_eq!(rx.recv_timeout(Duration::from_millis(1)), Ok(None));
    }

    #[test]
    fn bounded_drops_new_items_when_full_without_blocking() {
        let (tx, rx) = bounded(2);
        assert_eq!(tx.send(1), Ok(true));
        assert_eq!(tx.send(2), Ok(true));
        assert_eq!(tx.send(3), Ok(false));
        assert_eq!(tx.dropped(), 1);
        assert_eq!(rx.recv_timeout(Duration::from_millis(1)), Ok(Some(1)));
        assert_eq!(rx.recv_timeout(Duration::from_millis(1)), Ok(Some(2)));
    }

    #[test]
    fn close_drains_then_reports_closed() {
        let (tx, rx) = bounded(4);
        tx.send(7).expect("open");
        tx.close();
        assert_eq!(tx.send(8), Err(Closed));
        assert_eq!(rx.recv_timeout(Duration::from_millis(1)), Ok(Some(7)));
        assert_eq!(rx.recv_timeout(Duration::from_millis(1)), Err(Closed));
    }

    #[test]
    fn receiver_wakes_when_an_item_arrives() {
        let (tx, rx) = bounded(1);
        let t = std::thread::spawn(move || rx.recv_timeout(Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(20));
        tx.send(42).expect("open");
        assert_eq!(t.join().expect("thread"), Ok(Some(42)));
    }
}
