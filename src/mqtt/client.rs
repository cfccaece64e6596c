//! The MQTT connection task. One task owns the rumqttc `EventLoop`; the rest of the daemon talks to it through
//! a bounded outbox. While the broker is away the outbox keeps the newest
//! `outbox_capacity` messages (the oldest is dropped and counted). After every (re)connect
//! it publishes the retained `online` status, resubscribes and re-announces.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{
    AsyncClient, Event, LastWill, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, watch};

use super::Topics;
use crate::settings::MqttSettings;

/// A message for the broker.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

/// A message from the broker on a topic the daemon subscribed to.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub topic: String,
    pub payload: Vec<u8>,
    /// Delivered from the broker's retained store (sent before we subscribed).
    pub retain: bool,
}

/// Counters the status message reports.
#[derive(Debug, Default)]
pub struct MqttCounters {
    pub dropped_outbox: AtomicU64,
    pub reconnects: AtomicU64,
    pub published: AtomicU64,
}

fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// Connection options shared by the daemon and the helpers: keep-alive, packet size,
/// credentials and TLS.
pub fn base_options(s: &MqttSettings, client_id: &str) -> std::io::Result<MqttOptions> {
    let mut o = MqttOptions::new(client_id, &s.host, s.port);
    o.set_keep_alive(Duration::from_secs(s.keep_alive_secs.max(5)));
    o.set_max_packet_size(4 << 20, 4 << 20);
    if !s.username.is_empty() {
        o.set_credentials(&s.username, &s.password);
    }
    if s.tls.enabled {
        // rustls with the ring provider; a no-op if a provider is already installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let read = |path: &str| {
            std::fs::read(path).map_err(|e| std::io::Error::new(e.kind(), format!("{path}: {e}")))
        };
        let ca = if s.tls.ca_file.is_empty() {
            Vec::new()
        } else {
            read(&s.tls.ca_file)?
        };
        let client_auth = if s.tls.client_cert.is_empty() {
            None
        } else {
            Some((read(&s.tls.client_cert)?, read(&s.tls.client_key)?))
        };
        o.set_transport(Transport::Tls(TlsConfiguration::Simple {
            ca,
            alpn: None,
            client_auth,
        }));
    }
    Ok(o)
}

/// The daemon's options: client id from the device, clean session, Last Will `offline`
/// (retained) on the status topic.
pub fn options(s: &MqttSettings, device: &str, topics: &Topics) -> std::io::Result<MqttOptions> {
    let mut o = base_options(s, &format!("lsskd-edge-{device}"))?;
    o.set_clean_session(true);
    o.set_last_will(LastWill::new(topics.status(), "offline", qos(s.qos), true));
    Ok(o)
}

/// Everything the connection task needs.
pub struct Connection {
    pub settings: MqttSettings,
    pub device: String,
    pub topics: Topics,
    /// Filters subscribed (QoS 1) after every connect.
    pub subscriptions: Vec<String>,
    /// The current `online` status payload (published retained after every connect).
    pub online: watch::Receiver<Vec<u8>>,
    pub counters: Arc<MqttCounters>,
}

/// Messages held while the broker is away: the newest `capacity`, oldest dropped first.
/// Retained messages are also remembered by topic and re-published after every
/// reconnect (a restarted broker without persistence has forgotten them).
#[derive(Debug)]
struct Outbox {
    pending: VecDeque<Outbound>,
    capacity: usize,
    retained: BTreeMap<String, Vec<u8>>,
}

impl Outbox {
    fn new(capacity: usize) -> Self {
        Self {
            pending: VecDeque::new(),
            capacity: capacity.max(1),
            retained: BTreeMap::new(),
        }
    }

    /// Queue a message; returns true if the oldest had to be dropped.
    fn push(&mut self, m: Outbound) -> bool {
        if m.retain {
            self.retained.insert(m.topic.clone(), m.payload.clone());
        }
        let full = self.pending.len() >= self.capacity;
        if full {
            self.pending.pop_front();
        }
        self.pending.push_back(m);
        full
    }

    /// After a reconnect: every remembered retained message not already queued goes first.
    fn requeue_retained(&mut self) {
        for (topic, payload) in self.retained.iter().rev() {
            if !self.pending.iter().any(|m| &m.topic == topic) {
                self.pending.push_front(Outbound {
                    topic: topic.clone(),
                    payload: payload.clone(),
                    retain: true,
                });
            }
        }
    }

    /// Hand queued messages to the client until its request queue is full.
    fn flush(&mut self, client: &AsyncClient, q: QoS, counters: &MqttCounters) {
        while let Some(m) = self.pending.pop_front() {
            if client
                .try_publish(&m.topic, q, m.retain, m.payload.clone())
                .is_err()
            {
                self.pending.push_front(m);
                break;
            }
            counters.published.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Run the connection until `shutdown` turns true; then publish `offline` and disconnect.
pub async fn run(
    conn: Connection,
    mut outbox_rx: mpsc::Receiver<Outbound>,
    inbound: mpsc::Sender<Inbound>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let s = &conn.settings;
    let opts = options(s, &conn.device, &conn.topics)?;
    let (client, mut events) = AsyncClient::new(opts, 64);
    let q = qos(s.qos);
    let mut outbox = Outbox::new(s.outbox_capacity);
    let mut connected = false;
    let mut backoff = Duration::from_secs(1);
    let max_backoff = Duration::from_secs(s.reconnect_max_secs.max(1));
    let counters = conn.counters.clone();
    loop {
        tokio::select! {
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    if connected {
                        outbox.flush(&client, q, &counters);
                        let _ = client.try_publish(conn.topics.status(), q, true, "offline");
                        let _ = client.try_disconnect();
                        // Let the event loop flush the last packets.
                        let _ = tokio::time::timeout(Duration::from_secs(3), async {
                            while let Ok(ev) = events.poll().await {
                                if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                                    break;
                                }
                            }
                        })
                        .await;
                    }
                    return Ok(());
                }
            }
            msg = outbox_rx.recv() => {
                let Some(msg) = msg else { return Ok(()) };
                if outbox.push(msg) {
                    counters.dropped_outbox.fetch_add(1, Ordering::Relaxed);
                }
                if connected {
                    outbox.flush(&client, q, &counters);
                }
            }
            ev = events.poll() => match ev {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    if ack.code != rumqttc::ConnectReturnCode::Success {
                        tracing::error!(code = ?ack.code, "the MQTT broker refused the connection");
                        continue;
                    }
                    connected = true;
                    backoff = Duration::from_secs(1);
                    tracing::info!(host = %s.host, port = s.port, "connected to the MQTT broker");
                    let online = conn.online.borrow().clone();
                    let _ = client.try_publish(conn.topics.status(), q, true, online);
                    for t in &conn.subscriptions {
                        let _ = client.try_subscribe(t, QoS::AtLeastOnce);
                    }
                    outbox.requeue_retained();
                    outbox.flush(&client, q, &counters);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    // Full inbound queue: dropped (QoS 1 redelivery and ack-less retries cover it).
                    let _ = inbound.try_send(Inbound { topic: p.topic.clone(), payload: p.payload.to_vec(), retain: p.retain });
                }
                Ok(_) => {
                    if connected {
                        outbox.flush(&client, q, &counters);
                    }
                }
                Err(e) => {
                    if connected {
                        tracing::warn!(error = %e, "lost the MQTT broker; reconnecting");
                    } else {
                        tracing::debug!(error = %e, retry_in = ?backoff, "MQTT broker unreachable");
                    }
                    connected = false;
                    counters.reconnects.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(max_backoff);
                }
            }
        }
    }
}

/// A short client session for the command-line helpers (`watch`, `sample send`): connect,
/// subscribe to `filters`, then publish `publish`, and pass every message to `on_message`
/// until it returns `false` or `timeout` passes (`Ok(false)` then). Broker errors are
/// reported, not retried: a person is waiting.
pub async fn session(
    s: &MqttSettings,
    client_id: &str,
    filters: &[String],
    publish: Vec<Outbound>,
    timeout: Option<Duration>,
    mut on_message: impl FnMut(Inbound) -> bool,
) -> anyhow::Result<bool> {
    let o = base_options(s, client_id)?;
    let (client, mut events) = AsyncClient::new(o, 64);
    let q = qos(s.qos);
    let work = async {
        let mut pending_subacks = filters.len();
        let mut publish = Some(publish);
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    if ack.code != rumqttc::ConnectReturnCode::Success {
                        anyhow::bail!(
                            "{}:{} refused the connection: {:?}",
                            s.host,
                            s.port,
                            ack.code
                        );
                    }
                    for f in filters {
                        client.subscribe(f, QoS::AtLeastOnce).await?;
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    pending_subacks = pending_subacks.saturating_sub(1);
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let msg = Inbound {
                        topic: p.topic.clone(),
                        payload: p.payload.to_vec(),
                        retain: p.retain,
                    };
                    if !on_message(msg) {
                        let _ = client.try_disconnect();
                        return Ok(true);
                    }
                }
                Ok(_) => {}
                Err(e) => anyhow::bail!("MQTT broker {}:{}: {e}", s.host, s.port),
            }
            if pending_subacks == 0 {
                for m in publish.take().unwrap_or_default() {
                    client.publish(&m.topic, q, m.retain, m.payload).await?;
                }
            }
        }
    };
    match timeout {
        Some(t) => match tokio::time::timeout(t, work).await {
            Ok(r) => r,
            Err(_) => Ok(false),
        },
        None => work.await,
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

    #[test]
    fn outbox_drops_oldest_when_full() {
        let mut o = Outbox::new(2);
        assert!(!o.push(msg("a", false)));
        assert!(!o.push(msg("b", false)));
        assert!(o.push(msg("c", false)));
        let topics: Vec<_> = o.pending.iter().map(|m| m.topic.as_str()).collect();
        assert_eq!(topics, ["b", "c"]);
    }

    #[test]
    fn retained_messages_are_replayed_after_reconnect() {
        let mut o = Outbox::new(10);
        o.push(msg("state", true));
        o.push(msg("pred", false));
        o.pending.clear(); // sent before the broker went away
        o.push(msg("pred2", false));
        o.requeue_retained();
        let topics: Vec<_> = o.pending.iter().map(|m| m.topic.as_str()).collect();
        assert_eq!(topics, ["state", "pred2"]);
    }
}
