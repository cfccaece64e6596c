//! The MQTT session's state, without I/O (rumqttc's `MqttState` is the model): what is
//! queued for the broker, whether we are connected, the reconnect backoff, the retained
//! messages to re-publish. Each event the connection task sees is a method that updates
//! the state and returns what to send; the task (`mqtt::client::run`) does the I/O.
//!
//! **The one full-buffer rule:** [`Session::queue`] keeps the newest `capacity` messages
//! and drops the oldest, counted in [`MqttCounters::dropped_outbox`]. A message handed to
//! the client that it cannot take (its request queue is full) goes back to the front, it is
//! not dropped.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A message for the broker.
#[derive(Debug, Clone, PartialEq)]
pub struct Outbound {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

/// Counters the status message reports (shared with the daemon).
#[derive(Debug, Default)]
pub struct MqttCounters {
    /// Handed to the client.
    pub published: AtomicU64,
    /// Dropped from the outbox when full (oldest first).
    pub dropped_outbox: AtomicU64,
    /// Messages from the broker the daemon had no room for (answered when they can be,
    /// e.g. a sample is refused on its ack topic).
    pub dropped_inbound: AtomicU64,
    /// Connection attempts that failed or connections lost.
    pub reconnects: AtomicU64,
}

/// What the connection task is to send.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Publish(Outbound),
    Subscribe(String),
    Disconnect,
}

/// First reconnect delay; doubled per failure up to the configured maximum.
pub const MIN_BACKOFF: Duration = Duration::from_secs(1);

/// See the module docs.
#[derive(Debug)]
pub struct Session {
    connected: bool,
    backoff: Duration,
    max_backoff: Duration,
    pending: VecDeque<Outbound>,
    capacity: usize,
    /// Every retained message by topic, re-published after each connect (a broker
    /// restarted without persistence has forgotten them).
    retained: BTreeMap<String, Vec<u8>>,
    subscriptions: Vec<String>,
    /// Subscriptions the client could not take after a connect, tried again on the next
    /// flush.
    resubscribe: Vec<String>,
    status_topic: String,
    counters: Arc<MqttCounters>,
}

impl Session {
    pub fn new(
        capacity: usize,
        max_backoff: Duration,
        status_topic: String,
        subscriptions: Vec<String>,
        counters: Arc<MqttCounters>,
    ) -> Self {
        Self {
            connected: false,
            backoff: MIN_BACKOFF,
            max_backoff: max_backoff.max(MIN_BACKOFF),
            pending: VecDeque::new(),
            capacity: capacity.max(1),
            retained: BTreeMap::new(),
            subscriptions,
            resubscribe: Vec::new(),
            status_topic,
            counters,
        }
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Messages waiting for the broker.
    pub fn queued(&self) -> usize {
        self.pending.len()
    }

    /// Queue a message for the broker (the full-buffer rule of the module docs).
    pub fn queue(&mut self, m: Outbound) {
        if m.retain {
            self.retained.insert(m.topic.clone(), m.payload.clone());
        }
        if self.pending.len() >= self.capacity {
            self.pending.pop_front();
            self.counters.dropped_outbox.fetch_add(1, Ordering::Relaxed);
        }
        self.pending.push_back(m);
    }

    /// The broker answered our CONNECT. Accepted: the retained `online` status, the
    /// subscriptions, and every remembered retained message not already queued (ahead of
    /// the queue). Refused: nothing (the error that follows schedules the retry).
    pub fn on_connack(&mut self, accepted: bool, online: Vec<u8>) -> Vec<Action> {
        if !accepted {
            return Vec::new();
        }
        self.connected = true;
        self.backoff = MIN_BACKOFF;
        self.resubscribe.clear();
        for (topic, payload) in self.retained.iter().rev() {
            if topic != &self.status_topic && !self.pending.iter().any(|m| &m.topic == topic) {
                self.pending.push_front(Outbound {
                    topic: topic.clone(),
                    payload: payload.clone(),
                    retain: true,
                });
            }
        }
        let mut out = vec![Action::Publish(Outbound {
            topic: self.status_topic.clone(),
            payload: online,
            retain: true,
        })];
        out.extend(self.subscriptions.iter().cloned().map(Action::Subscribe));
        out
    }

    /// The next queued message to hand to the client; none while disconnected.
    pub fn next_to_send(&mut self) -> Option<Outbound> {
        if !self.connected {
            return None;
        }
        self.pending.pop_front()
    }

    /// The client took the message [`Session::next_to_send`] gave.
    pub fn sent(&mut self) {
        self.counters.published.fetch_add(1, Ordering::Relaxed);
    }

    /// The client could not take `m` (its queue is full): first in line again.
    pub fn unsent(&mut self, m: Outbound) {
        self.pending.push_front(m);
    }

    /// The client could not take `a` (its request queue is full): a message is first in
    /// line again, a subscription is asked for again by [`Session::next_subscription`];
    /// at shutdown (disconnected by then) a message is dropped and counted.
    pub fn not_taken(&mut self, a: Action) {
        match a {
            Action::Publish(m) if self.connected => self.unsent(m),
            Action::Publish(_) => {
                self.counters.dropped_outbox.fetch_add(1, Ordering::Relaxed);
            }
            Action::Subscribe(t) if self.connected => {
                if !self.resubscribe.contains(&t) {
                    self.resubscribe.push(t);
                }
            }
            Action::Subscribe(_) | Action::Disconnect => {}
        }
    }

    /// A subscription still to send after a connect (see [`Session::not_taken`]); none
    /// while disconnected.
    pub fn next_subscription(&mut self) -> Option<String> {
        if !self.connected {
            return None;
        }
        self.resubscribe.pop()
    }

    /// The connection failed or was lost: how long to wait before the next attempt.
    pub fn on_error(&mut self) -> Duration {
        self.connected = false;
        self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(self.max_backoff);
        wait
    }

    /// A message from the broker found the daemon's inbound queue full.
    pub fn on_inbound_overflow(&mut self) {
        self.counters
            .dropped_inbound
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Shutdown: everything queued, then `offline` (retained), then DISCONNECT; nothing
    /// when disconnected (the broker publishes the Last Will).
    pub fn on_shutdown(&mut self) -> Vec<Action> {
        if !self.connected {
            return Vec::new();
        }
        let mut out: Vec<Action> = self.pending.drain(..).map(Action::Publish).collect();
        out.push(Action::Publish(Outbound {
            topic: self.status_topic.clone(),
            payload: b"offline".to_vec(),
            retain: true,
        }));
        out.push(Action::Disconnect);
        self.connected = false;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(topic: &str, retain: bool) -> Outbound {
        Outbound {
            topic: topic.into(),
            payload: topic.as_bytes().to_vec(),
            retain,
        }
    }

    fn session(capacity: usize) -> Session {
        Session::new(
            capacity,
            Duration::from_secs(8),
            "p/d/status".into(),
            vec!["p/d/samples/+/add".into()],
            Arc::default(),
        )
    }

    fn drain(s: &mut Session) -> Vec<String> {
        std::iter::from_fn(|| s.next_to_send())
            .map(|m| m.topic)
            .collect()
    }

    #[test]
    fn the_outbox_keeps_the_newest_and_counts_what_it_drops() {
        let mut s = session(2);
        for t in ["a", "b", "c"] {
            s.queue(msg(t, false));
        }
        assert_eq!(s.counters.dropped_outbox.load(Ordering::Relaxed), 1);
        assert_eq!(
            drain(&mut s),
            Vec::<String>::new(),
            "nothing while disconnected"
        );
        s.on_connack(true, b"online".to_vec());
        assert_eq!(drain(&mut s), ["b", "c"]);
    }

    #[test]
    fn connack_announces_subscribes_and_replays_retained_first() {
        let mut s = session(10);
        s.queue(msg("p/d/door/state", true));
        s.queue(msg("p/d/door/prediction", false));
        let first = s.on_connack(true, b"online".to_vec());
        assert_eq!(
            first,
            [
                Action::Publish(Outbound {
                    topic: "p/d/status".into(),
                    payload: b"online".to_vec(),
                    retain: true
                }),
                Action::Subscribe("p/d/samples/+/add".into()),
            ]
        );
        assert_eq!(drain(&mut s), ["p/d/door/state", "p/d/door/prediction"]);
        // The broker goes away and comes back: the retained state is sent again, ahead of
        // what was queued meanwhile.
        assert_eq!(s.on_error(), MIN_BACKOFF);
        assert!(!s.is_connected());
        s.queue(msg("p/d/door/prediction", false));
        s.on_connack(true, b"online".to_vec());
        assert_eq!(drain(&mut s), ["p/d/door/state", "p/d/door/prediction"]);
    }

    #[test]
    fn a_message_the_client_cannot_take_is_kept_in_order() {
        let mut s = session(10);
        s.on_connack(true, Vec::new());
        s.queue(msg("a", false));
        s.queue(msg("b", false));
        let m = s.next_to_send().expect("a");
        s.unsent(m);
        assert_eq!(drain(&mut s), ["a", "b"]);
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_resets_on_connect() {
        let mut s = session(1);
        let waits: Vec<u64> = (0..6).map(|_| s.on_error().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 8, 8]);
        assert_eq!(s.counters.reconnects.load(Ordering::Relaxed), 6);
        // A refused CONNECT does not count as connected.
        assert!(s.on_connack(false, Vec::new()).is_empty());
        assert!(!s.is_connected());
        s.on_connack(true, Vec::new());
        assert_eq!(s.on_error(), MIN_BACKOFF);
    }

    #[test]
    fn shutdown_sends_what_is_queued_then_offline_then_disconnects() {
        let mut s = session(10);
        assert!(
            s.on_shutdown().is_empty(),
            "disconnected: the Last Will speaks"
        );
        s.on_connack(true, Vec::new());
        s.queue(msg("a", false));
        let acts = s.on_shutdown();
        assert_eq!(acts.len(), 3);
        assert_eq!(acts[0], Action::Publish(msg("a", false)));
        assert_eq!(
            acts[1],
            Action::Publish(Outbound {
                topic: "p/d/status".into(),
                payload: b"offline".to_vec(),
                retain: true
            })
        );
        assert_eq!(acts[2], Action::Disconnect);
    }

    #[test]
    fn inbound_overflow_is_counted() {
        let mut s = session(1);
        s.on_inbound_overflow();
        s.on_inbound_overflow();
        assert_eq!(s.counters.dropped_inbound.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn what_the_client_cannot_take_after_a_connect_is_retried_and_at_shutdown_counted() {
        let mut s = session(10);
        s.queue(msg("a", false));
        let acts = s.on_connack(true, b"online".to_vec());
        // The client's request queue is full: the `online` status and the subscription
        // are not lost, they come again on the next flush, the status first.
        for a in acts {
            s.not_taken(a);
        }
        assert_eq!(
            s.next_subscription().as_deref(),
            Some("p/d/samples/+/add"),
            "subscription asked for again"
        );
        s.not_taken(Action::Subscribe("p/d/samples/+/add".into()));
        assert_eq!(s.next_subscription().as_deref(), Some("p/d/samples/+/add"));
        assert_eq!(s.next_subscription(), None);
        assert_eq!(drain(&mut s), ["p/d/status", "a"]);
        // At shutdown the session is closed: what the client cannot take is counted.
        s.queue(msg("b", false));
        let acts = s.on_shutdown();
        assert_eq!(acts.len(), 3);
        for a in acts {
            s.not_taken(a);
        }
        assert_eq!(s.counters.dropped_outbox.load(Ordering::Relaxed), 2);
        // A reconnect asks for every subscription again, not twice.
        s.on_connack(true, b"online".to_vec());
        assert_eq!(s.next_subscription(), None);
    }
}
