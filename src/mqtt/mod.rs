//! MQTT: topics, payload schemas, the connection task and the embedded broker.
//! The only module that imports rumqttc / rumqttd.

pub mod client;
#[cfg(feature = "embedded-broker")]
pub mod embedded;
pub mod payload;
pub mod session;
pub mod topics;

pub use topics::{Topic, Topics};
