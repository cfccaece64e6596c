//! The MQTT connection: a task that owns the rumqttc `EventLoop` and does the I/O, in front
//! of a pure [`Session`] state that decides (queueing, backoff, what to send after a
//! connect or before a disconnect). The rest of the daemon holds a [`Link`]: a
//! [`Publisher`] that queues into the session without blocking, and the inbound queue.
//!
//! Inbound messages go to a bounded queue. rumqttc acknowledges a QoS 1 PUBLISH as soon as
//! it is read, so a message that finds the queue full would be lost silently: instead it
//! is counted ([`MqttCounters::dropped_inbound`]) and answered with the reply the daemon
//! gave ([`Connection::overflow_reply`]; for a sample, a refusal on its ack topic).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rumqttc::{
    AsyncClient, Event, LastWill, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use tokio::sync::{Notify, watch};

use super::Topics;
pub use super::session::{Action, MqttCounters, Outbound, Session};
use crate::settings::{MqttSettings, Qos};

/// A message from the broker on a topic the daemon subscribed to.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub topic: String,
    pub payload: Vec<u8>,
    /// Delivered from the broker's retained store (sent before we subscribed).
    pub retain: bool,
}

/// What the daemon answers, when it can, to an inbound message it had no room for.
pub type OverflowReply = Box<dyn Fn(&Inbound) -> Option<Outbound> + Send>;

/// The session shared by the publishers and the connection task.
#[derive(Clone)]
struct Shared {
    session: Arc<Mutex<Session>>,
    wake: Arc<Notify>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Session> {
        // Session methods do not panic halfway through an update.
        self.session.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Queues messages for the broker without ever blocking (the session's full-buffer rule).
#[derive(Clone)]
pub struct Publisher {
    shared: Shared,
    counters: Arc<MqttCounters>,
}

impl Publisher {
    pub fn send(&self, topic: String, payload: Vec<u8>, retain: bool) {
        self.shared.lock().queue(Outbound {
            topic,
            payload,
            retain,
        });
        self.shared.wake.notify_one();
    }

    pub fn counters(&self) -> &Arc<MqttCounters> {
        &self.counters
    }
}

/// The daemon's side of the connection.
pub struct Link {
    pub publisher: Publisher,
    /// Read by a thread of the daemon (ingestion blocks on decoding and fsync).
    pub inbound: Receiver<Inbound>,
}

/// The connection task's side (given to [`run`]).
pub struct Connection {
    settings: MqttSettings,
    device: String,
    topics: Topics,
    /// The current `online` status payload (published retained after every connect).
    online: watch::Receiver<Vec<u8>>,
    shared: Shared,
    inbound: SyncSender<Inbound>,
    overflow_reply: OverflowReply,
}

/// What [`link`] needs.
pub struct LinkConfig {
    pub settings: MqttSettings,
    pub device: String,
    pub topics: Topics,
    /// Filters subscribed (QoS 1) after every connect.
    pub subscriptions: Vec<String>,
    pub online: watch::Receiver<Vec<u8>>,
    /// Inbound messages waiting for the daemon.
    pub inbound_capacity: usize,
    pub overflow_reply: OverflowReply,
}

/// A session and the two ends around it: the daemon's [`Link`] and the task's
/// [`Connection`].
pub fn link(c: LinkConfig) -> (Link, Connection) {
    let counters = Arc::new(MqttCounters::default());
    let session = Session::new(
        c.settings.outbox_capacity,
        Duration::from_secs(c.settings.reconnect_max_secs.max(1)),
        c.topics.status(),
        c.subscriptions,
        counters.clone(),
    );
    let shared = Shared {
        session: Arc::new(Mutex::new(session)),
        wake: Arc::new(Notify::new()),
    };
    let (in_tx, in_rx) = std::sync::mpsc::sync_channel(c.inbound_capacity.max(1));
    (
        Link {
            publisher: Publisher {
                shared: shared.clone(),
                counters,
            },
            inbound: in_rx,
        },
        Connection {
            settings: c.settings,
            device: c.device,
            topics: c.topics,
            online: c.online,
            shared,
            inbound: in_tx,
            overflow_reply: c.overflow_reply,
        },
    )
}

fn qos(level: Qos) -> QoS {
    match level {
        Qos::AtMostOnce => QoS::AtMostOnce,
        Qos::AtLeastOnce => QoS::AtLeastOnce,
        Qos::ExactlyOnce => QoS::ExactlyOnce,
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
        let read = |path: &std::path::Path| {
            std::fs::read(path)
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
        };
        let ca = match &s.tls.ca_file {
            Some(path) => read(path)?,
            None => Vec::new(),
        };
        let client_auth = match (&s.tls.client_cert, &s.tls.client_key) {
            (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
            _ => None,
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

/// Hand `a` to the client; false if its request queue is full.
fn perform(client: &AsyncClient, q: QoS, a: &Action) -> bool {
    match a {
        Action::Publish(m) => client
            .try_publish(&m.topic, q, m.retain, m.payload.clone())
            .is_ok(),
        Action::Subscribe(t) => client.try_subscribe(t, QoS::AtLeastOnce).is_ok(),
        Action::Disconnect => client.try_disconnect().is_ok(),
    }
}

/// Subscriptions still owed, then queued messages, to the client until its request queue
/// is full.
fn flush(client: &AsyncClient, q: QoS, shared: &Shared) {
    let mut s = shared.lock();
    while let Some(t) = s.next_subscription() {
        let a = Action::Subscribe(t);
        if !perform(client, q, &a) {
            s.not_taken(a);
            return;
        }
    }
    while let Some(m) = s.next_to_send() {
        if client
            .try_publish(&m.topic, q, m.retain, m.payload.clone())
            .is_err()
        {
            s.unsent(m);
            break;
        }
        s.sent();
    }
}

/// Run the connection until `shutdown` turns true; then send what is queued, `offline`, and
/// disconnect (at most 3 s). A reconnect wait is cut short by shutdown.
pub async fn run(conn: Connection, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let s = &conn.settings;
    let opts = options(s, &conn.device, &conn.topics)?;
    let (client, mut events) = AsyncClient::new(opts, 64);
    let q = qos(s.qos);
    let shared = &conn.shared;
    // While set, the connection waits before its next attempt (events are not polled).
    let mut retry_at: Option<tokio::time::Instant> = None;
    loop {
        if retry_at.is_none() {
            flush(&client, q, shared);
        }
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
            _ = shared.wake.notified() => {}
            _ = async { tokio::time::sleep_until(retry_at.expect("guarded")).await }, if retry_at.is_some() => {
                retry_at = None;
            }
            ev = events.poll(), if retry_at.is_none() => match ev {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    let accepted = ack.code == rumqttc::ConnectReturnCode::Success;
                    if accepted {
                        tracing::info!(host = %s.host, port = s.port, "connected to the MQTT broker");
                    } else {
                        tracing::error!(code = ?ack.code, "the MQTT broker refused the connection");
                    }
                    let online = conn.online.borrow().clone();
                    let actions = shared.lock().on_connack(accepted, online);
                    for a in actions {
                        if !perform(&client, q, &a) {
                            shared.lock().not_taken(a);
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let msg = Inbound { topic: p.topic.clone(), payload: p.payload.to_vec(), retain: p.retain };
                    // Full, or the daemon's reader is gone (stopping): refused, not lost.
                    if let Err(TrySendError::Full(msg) | TrySendError::Disconnected(msg)) = conn.inbound.try_send(msg) {
                        let reply = (conn.overflow_reply)(&msg);
                        let mut session = shared.lock();
                        session.on_inbound_overflow();
                        tracing::debug!(topic = %msg.topic, "inbound queue full; message refused");
                        if let Some(r) = reply {
                            session.queue(r);
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let (was, wait) = {
                        let mut session = shared.lock();
                        (session.is_connected(), session.on_error())
                    };
                    if was {
                        tracing::warn!(error = %e, "lost the MQTT broker; reconnecting");
                    } else {
                        tracing::debug!(error = %e, retry_in = ?wait, "MQTT broker unreachable");
                    }
                    retry_at = Some(tokio::time::Instant::now() + wait);
                }
            }
        }
    }
    let actions = shared.lock().on_shutdown();
    if !actions.is_empty() {
        for a in actions {
            if !perform(&client, q, &a) {
                shared.lock().not_taken(a);
            }
        }
        // Let the event loop send the last packets.
        let _ = tokio::time::timeout(Duration::from_secs(3), async {
            while let Ok(ev) = events.poll().await {
                if matches!(ev, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                    break;
                }
            }
        })
        .await;
    }
    Ok(())
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
