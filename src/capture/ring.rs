//! The last N captures of a pipeline, so a user can label "that frame" by `capture_id`.

use std::collections::VecDeque;

use super::Capture;

/// Bounded history of captures; the oldest leaves when full.
#[derive(Debug)]
pub struct CaptureRing {
    items: VecDeque<Capture>,
    capacity: usize,
}

impl CaptureRing {
    pub fn new(capacity: usize) -> Self {
        Self {
            items: VecDeque::with_capacity(capacity.max(1)),
            capacity: capacity.max(1),
        }
    }

    pub fn push(&mut self, capture: Capture) {
        if self.items.len() == self.capacity {
            self.items.pop_front();
        }
        self.items.push_back(capture);
    }

    /// A capture still held, by id.
    pub fn get(&self, id: u64) -> Option<&Capture> {
        // Ids increase, so a binary search over the deque's order works.
        let idx = self.items.binary_search_by_key(&id, |c| c.id).ok()?;
        self.items.get(idx)
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{Clip, Raw};

    fn cap(id: u64) -> Capture {
        Capture {
            id,
            ts_ms: id,
            raw: Raw::Audio(Clip {
                samples: vec![id as f32],
                sample_rate_hz: 16_000,
            }),
        }
    }

    #[test]
    fn keeps_the_last_n_captures_by_id() {
        let mut ring = CaptureRing::new(3);
        for id in 1..=5 {
            ring.push(cap(id));
        }
        assert_eq!(ring.len(), 3);
        assert!(ring.get(2).is_none(), "evicted");
        assert_eq!(ring.get(4).map(|c| c.id), Some(4));
        assert!(ring.get(9).is_none());
    }
}
