//! An in-process MQTT broker (rumqttd) for the zero-setup demo. rumqttd blocks
//! and builds its own runtimes, so it gets its own OS thread; it has no shutdown API and
//! cannot report a port-0 address, so the port is given and we poll until it accepts.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Start the broker on `host:port`; returns once it accepts connections.
pub fn start(host: &str, port: u16) -> anyhow::Result<()> {
    let toml = format!(
        r#"id = 0
[router]
id = 0
max_connections = 256
max_outgoing_packet_count = 200
max_segment_size = 10485760
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "{host}:{port}"
next_connection_delay_ms = 1
  [v4.1.connections]
  connection_timeout_ms = 60000
  max_payload_size = 4194304
  max_inflight_count = 100
  dynamic_filters = true
"#
    );
    let config: rumqttd::Config = toml::from_str(&toml)?;
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })?;
    let addr = (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| anyhow::anyhow!("cannot resolve {host}:{port}"))?;
    let started = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if started.elapsed() > Duration::from_secs(10) {
            anyhow::bail!("embedded MQTT broker did not start listening on {host}:{port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    tracing::info!(%host, port, "embedded MQTT broker listening");
    Ok(())
}
