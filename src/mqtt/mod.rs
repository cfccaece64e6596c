//! MQTT: topics and payload schemas (the client task and embedded broker build on these).
//! The only module that will import rumqttc / rumqttd.

pub mod payload;
pub mod topics;

pub use topics::Topics;
