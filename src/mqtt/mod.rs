//! MQTT: topics, payload schemas, Home Assistant discovery, the connection task and the
//! embedded broker.
//! The only module that imports rumqttc / rumqttd.

pub mod client;
pub mod discovery;
#[cfg(feature = "embedded-broker")]
pub mod embedded;
pub mod payload;
pub mod session;
pub mod topics;

pub use topics::{TeachScope, Topic, Topics};
