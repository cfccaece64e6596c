//! Label requests (active learning): when a prediction is uncertain (a small margin between
//! the two best classes, or a high entropy), the device asks people for the label on
//! `<p>/<dev>/label_request`, with a thumbnail, within an hourly budget. The capture is
//! kept (pinned, beyond the pipeline's capture ring) until it is answered with a normal
//! `samples/<model>/add {capture_id}` or the request expires.

use std::collections::{BTreeMap, VecDeque};
use std::io::Cursor;

use base64::Engine;

use crate::capture::Capture;
use crate::features::Raw;
use crate::inference::Scored;
use crate::mqtt::payload::{LabelRequest, LabelScore, SCHEMA_VERSION};

/// When a prediction is uncertain, and how many requests an hour.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestPolicy {
    /// Uncertain when the best class's probability exceeds the second's by less.
    pub margin: f32,
    /// Uncertain when the entropy of the probabilities, over its maximum (ln classes),
    /// is above this.
    pub entropy: f32,
    pub per_hour: usize,
    pub ttl_ms: u64,
}

/// Captures kept for open requests, at most.
pub const MAX_PINNED: usize = 32;
/// Thumbnails fit in this square, pixels.
pub const THUMBNAIL_PX: u32 = 160;

impl RequestPolicy {
    /// Whether the probabilities `probs` (summing to 1) call for a label request.
    pub fn uncertain(&self, probs: &[f32]) -> bool {
        if self.per_hour == 0 || probs.len() < 2 {
            return false;
        }
        let (mut a, mut b) = (0f32, 0f32);
        for &p in probs {
            if p > a {
                (a, b) = (p, a);
            } else if p > b {
                b = p;
            }
        }
        let h: f32 = probs
            .iter()
            .filter(|&&p| p > 0.0)
            .map(|&p| -p * p.ln())
            .sum();
        let h_norm = h / (probs.len() as f32).ln();
        a - b < self.margin || h_norm > self.entropy
    }
}

struct Pinned {
    capture: Capture,
    expires_ms: u64,
}

/// The open requests of a device: the hourly budget and the pinned captures.
pub struct LabelRequests {
    device: String,
    policy: RequestPolicy,
    sent_ms: VecDeque<u64>,
    /// (model, capture id) → the capture.
    pinned: BTreeMap<(String, u64), Pinned>,
    next: u64,
}

impl LabelRequests {
    pub fn new(device: &str, policy: RequestPolicy) -> Self {
        Self {
            device: device.into(),
            policy,
            sent_ms: VecDeque::new(),
            pinned: BTreeMap::new(),
            next: 0,
        }
    }

    fn expire(&mut self, now_ms: u64) {
        self.pinned.retain(|_, p| p.expires_ms > now_ms);
        while self
            .sent_ms
            .front()
            .is_some_and(|&t| now_ms.saturating_sub(t) >= 3_600_000)
        {
            self.sent_ms.pop_front();
        }
    }

    /// A request for `capture` of `pipeline` (model `model`), if the hourly budget allows
    /// one now; the capture is pinned until answered or expired.
    pub fn request(
        &mut self,
        pipeline: &str,
        model: &str,
        capture: &Capture,
        candidates: &[Scored],
        now_ms: u64,
    ) -> Option<LabelRequest> {
        self.expire(now_ms);
        if self.sent_ms.len() >= self.policy.per_hour {
            return None;
        }
        let (thumbnail, clip) = match &capture.raw {
            Raw::Image(img) => {
                let mut png = Cursor::new(Vec::new());
                img.thumbnail(THUMBNAIL_PX, THUMBNAIL_PX)
                    .write_to(&mut png, image::ImageFormat::Png)
                    .ok()?;
                (Some(b64(&png.into_inner())), None)
            }
            Raw::Audio(c) => (
                None,
                Some(b64(&crate::registry::replay::encode_wav(c).ok()?)),
            ),
        };
        self.sent_ms.push_back(now_ms);
        if self.pinned.len() >= MAX_PINNED
            && let Some(oldest) = self
                .pinned
                .iter()
                .min_by_key(|(_, p)| p.expires_ms)
                .map(|(k, _)| k.clone())
        {
            self.pinned.remove(&oldest);
        }
        let expires = now_ms + self.policy.ttl_ms;
        self.pinned.insert(
            (model.to_string(), capture.id),
            Pinned {
                capture: capture.clone(),
                expires_ms: expires,
            },
        );
        self.next += 1;
        Some(LabelRequest {
            v: SCHEMA_VERSION,
            ts: now_ms,
            request_id: format!("{}-{}-{}", self.device, now_ms, self.next),
            pipeline: pipeline.into(),
            model: model.into(),
            capture_id: capture.id,
            candidates: candidates
                .iter()
                .map(|s| LabelScore {
                    label: s.label.clone(),
                    score: s.score,
                })
                .collect(),
            expires,
            thumbnail,
            clip,
        })
    }

    /// The pinned capture a request asked about, if it is still open.
    pub fn get(&mut self, model: &str, capture_id: u64, now_ms: u64) -> Option<Raw> {
        self.expire(now_ms);
        self.pinned
            .get(&(model.to_string(), capture_id))
            .map(|p| p.capture.raw.clone())
    }

    /// The request about this capture was answered: its capture is let go.
    pub fn answered(&mut self, model: &str, capture_id: u64) {
        self.pinned.remove(&(model.to_string(), capture_id));
    }

    /// The newest request still open: its model and capture id.
    pub fn latest(&mut self, now_ms: u64) -> Option<(String, u64)> {
        self.expire(now_ms);
        self.pinned
            .iter()
            .max_by_key(|((_, id), p)| (p.expires_ms, *id))
            .map(|((model, id), _)| (model.clone(), *id))
    }

    pub fn open(&self) -> usize {
        self.pinned.len()
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(per_hour: usize) -> RequestPolicy {
        RequestPolicy {
            margin: 0.2,
            entropy: 0.9,
            per_hour,
            ttl_ms: 60_000,
        }
    }

    fn capture(id: u64) -> Capture {
        Capture {
            id,
            ts_ms: 0,
            raw: Raw::Image(image::DynamicImage::new_luma8(640, 480)),
        }
    }

    #[test]
    fn small_margins_and_high_entropy_are_uncertain_confident_ones_are_not() {
        let p = policy(5);
        assert!(!p.uncertain(&[0.9, 0.05, 0.05]));
        assert!(p.uncertain(&[0.5, 0.4, 0.1]), "margin 0.1");
        let flat = [0.12f32; 8];
        assert!(p.uncertain(&flat), "entropy near its maximum");
        assert!(
            !policy(0).uncertain(&[0.5, 0.5]),
            "a zero budget turns requests off"
        );
    }

    #[test]
    fn the_hourly_budget_holds_and_pinned_captures_live_until_answered_or_expired() {
        let mut r = LabelRequests::new("pi4", policy(2));
        let top = [Scored {
            label: "cat".into(),
            score: 0.5,
        }];
        let a = r
            .request("door", "vision", &capture(1), &top, 0)
            .expect("first");
        assert!(a.thumbnail.is_some() && a.clip.is_none());
        assert_eq!((a.capture_id, a.expires), (1, 60_000));
        assert!(r.request("door", "vision", &capture(2), &top, 10).is_some());
        assert!(
            r.request("door", "vision", &capture(3), &top, 20).is_none(),
            "budget"
        );
        assert!(r.get("vision", 1, 30_000).is_some());
        assert_eq!(r.latest(30_000), Some(("vision".into(), 2)));
        r.answered("vision", 1);
        assert!(r.get("vision", 1, 30_000).is_none(), "answered");
        assert!(r.get("vision", 2, 60_011).is_none(), "expired");
        assert_eq!(r.latest(60_011), None);
        // An hour later the budget is back.
        assert!(
            r.request("door", "vision", &capture(4), &top, 3_600_001)
                .is_some()
        );
        // The thumbnail is a small PNG.
        let png = base64::engine::general_purpose::STANDARD
            .decode(a.thumbnail.expect("thumbnail"))
            .expect("base64");
        let img = image::load_from_memory(&png).expect("png");
        assert!(img.width() <= THUMBNAIL_PX && img.height() <= THUMBNAIL_PX);
    }
}
