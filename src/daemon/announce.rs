//! Home Assistant discovery kept current: the message (`mqtt::discovery`) is built from
//! the live models (their labels, the versions stored on disk), so it is sent again
//! whenever a model changes (a promotion, a rollback, a `forget`) and when Home Assistant
//! comes online.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::models::ModelSlot;
use crate::mqtt::Topics;
use crate::mqtt::client::Publisher;
use crate::mqtt::discovery::{self, ModelEntities, PipelineEntities};

pub struct Announcer {
    topics: Topics,
    device: String,
    /// (pipeline, its model).
    pipelines: Vec<(String, String)>,
    models: BTreeMap<String, Arc<ModelSlot>>,
    publisher: Publisher,
    /// The last message sent.
    sent: Mutex<Option<Vec<u8>>>,
}

impl Announcer {
    pub fn new(
        topics: &Topics,
        device: &str,
        pipelines: Vec<(String, String)>,
        models: &BTreeMap<String, Arc<ModelSlot>>,
        publisher: &Publisher,
    ) -> Self {
        Self {
            topics: topics.clone(),
            device: device.into(),
            pipelines,
            models: models.clone(),
            publisher: publisher.clone(),
            sent: Mutex::new(None),
        }
    }

    /// The discovery topic and message now, `None` when discovery is off.
    pub fn payload(&self) -> Option<(String, Vec<u8>)> {
        let labels = |model: &str| {
            self.models
                .get(model)
                .map(|s| s.live.load().classes.clone())
                .unwrap_or_default()
        };
        let pipelines: Vec<PipelineEntities> = self
            .pipelines
            .iter()
            .map(|(name, model)| PipelineEntities {
                name,
                labels: labels(model),
            })
            .collect();
        let models: Vec<ModelEntities> = self
            .models
            .iter()
            .map(|(name, slot)| ModelEntities {
                name,
                labels: labels(name),
                versions: std::iter::once(0)
                    .chain(slot.versions.on_disk().unwrap_or_default())
                    .collect(),
            })
            .collect();
        let (topic, body) = discovery::payload(&self.topics, &self.device, &pipelines, &models)?;
        Some((topic, serde_json::to_vec(&body).ok()?))
    }

    /// Send the message (retained) if it changed since the last one, or always with
    /// `again` (Home Assistant restarted and asks for it).
    pub fn announce(&self, again: bool) {
        let Some((topic, body)) = self.payload() else {
            return;
        };
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        if again || sent.as_ref() != Some(&body) {
            *sent = Some(body.clone());
            self.publisher.send(topic, body, true);
        }
    }
}
