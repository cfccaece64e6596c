//! The last N captures of a pipeline, so a user can label "that frame" by `capture_id`.

use std::collections::VecDeque;

use super::Capture;

/// Bounded history of captures: at most `capacity` of them and `max_bytes` of pixels or
/// samples (a camera's native frames are large: 64 frames of 1080p RGB would be 400 MB);
/// the oldest leave first, and the newest capture always stays.
#[derive(Debug)]
pub struct CaptureRing {
    items: VecDeque<Capture>,
    capacity: usize,
    max_bytes: usize,
    bytes: usize,
    /// The capture that made the pipeline's latest stable state, with its label: kept
    /// beyond the ring (one capture) so "that was wrong" can correct it however long the
    /// state has held.
    stable: Option<(String, Capture)>,
}

impl CaptureRing {
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        Self {
            items: VecDeque::new(),
            capacity: capacity.max(1),
            max_bytes,
            bytes: 0,
            stable: None,
        }
    }

    pub fn push(&mut self, capture: Capture) {
        self.bytes += capture.raw.bytes();
        self.items.push_back(capture);
        while self.items.len() > 1
            && (self.items.len() > self.capacity || self.bytes > self.max_bytes)
        {
            let old = self.items.pop_front().expect("more than one item");
            self.bytes -= old.raw.bytes();
        }
    }

    /// Bytes of pixels or samples held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// A capture still held (the stable state's included), by id.
    pub fn get(&self, id: u64) -> Option<&Capture> {
        // Ids increase, so a binary search over the deque's order works.
        match self.items.binary_search_by_key(&id, |c| c.id) {
            Ok(idx) => self.items.get(idx),
            Err(_) => self.stable.as_ref().map(|(_, c)| c).filter(|c| c.id == id),
        }
    }

    /// The newest capture.
    pub fn latest(&self) -> Option<&Capture> {
        self.items.back()
    }

    /// `capture` made the stable state `label`.
    pub fn set_stable(&mut self, label: String, capture: Capture) {
        self.stable = Some((label, capture));
    }

    /// The latest stable state's label and the capture that made it.
    pub fn stable(&self) -> Option<(&str, &Capture)> {
        self.stable.as_ref().map(|(l, c)| (l.as_str(), c))
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
        let mut ring = CaptureRing::new(3, usize::MAX);
        for id in 1..=5 {
            ring.push(cap(id));
        }
        assert_eq!(ring.len(), 3);
        assert!(ring.get(2).is_none(), "evicted");
        assert_eq!(ring.get(4).map(|c| c.id), Some(4));
        assert!(ring.get(9).is_none());
        assert_eq!(ring.latest().map(|c| c.id), Some(5));
    }

    #[test]
    fn the_stable_states_capture_outlives_the_ring() {
        let mut ring = CaptureRing::new(2, usize::MAX);
        ring.push(cap(1));
        ring.set_stable("door_open".into(), cap(1));
        for id in 2..=6 {
            ring.push(cap(id));
        }
        assert_eq!(ring.get(1).map(|c| c.id), Some(1), "kept as the stable one");
        assert!(ring.get(3).is_none());
        let (label, c) = ring.stable().expect("stable");
        assert_eq!((label, c.id), ("door_open", 1));
    }

    #[test]
    fn memory_bounds_the_ring_before_the_count_does() {
        // Each capture holds one f32: 4 bytes; 10 bytes fit two.
        let mut ring = CaptureRing::new(64, 10);
        for id in 1..=5 {
            ring.push(cap(id));
        }
        assert_eq!(ring.len(), 2);
        assert_eq!(ring.bytes(), 8);
        assert!(ring.get(3).is_none(), "evicted for memory");
        assert_eq!(ring.get(5).map(|c| c.id), Some(5));
        // A capture larger than the budget is still kept, alone.
        let mut ring = CaptureRing::new(64, 2);
        ring.push(cap(1));
        ring.push(cap(2));
        assert_eq!(ring.len(), 1);
        assert_eq!(ring.get(2).map(|c| c.id), Some(2));
    }
}
