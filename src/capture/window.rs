//! Sliding analysis windows over a PCM stream (`window_ms`, `hop_ms`).

use std::collections::VecDeque;

/// Turns a stream of mono samples into overlapping windows of `window` samples every `hop`.
#[derive(Debug, Clone)]
pub struct Windower {
    window: usize,
    hop: usize,
    buf: VecDeque<f32>,
    /// Samples to discard before the next window starts (when hop > window is ever allowed).
    skip: usize,
}

impl Windower {
    /// `window` and `hop` in samples; `hop` is clamped to `1..=window`.
    pub fn new(window: usize, hop: usize) -> Self {
        let window = window.max(1);
        Self {
            window,
            hop: hop.clamp(1, window),
            buf: VecDeque::with_capacity(window * 2),
            skip: 0,
        }
    }

    /// Windows of `sample_rate_hz` audio for the given durations.
    pub fn from_ms(sample_rate_hz: u32, window_ms: u64, hop_ms: u64) -> Self {
        let per_ms = sample_rate_hz as f64 / 1000.0;
        Self::new(
            (window_ms as f64 * per_ms).round() as usize,
            (hop_ms as f64 * per_ms).round() as usize,
        )
    }

    pub fn window(&self) -> usize {
        self.window
    }

    /// Feed samples; every complete window is passed to `emit`.
    pub fn push(&mut self, samples: &[f32], mut emit: impl FnMut(Vec<f32>)) {
        for &s in samples {
            if self.skip > 0 {
                self.skip -= 1;
                continue;
            }
            self.buf.push_back(s);
            if self.buf.len() == self.window {
                emit(self.buf.iter().copied().collect());
                self.buf.drain(..self.hop);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emits_overlapping_windows_at_the_hop() {
        let mut w = Windower::new(4, 2);
        let mut out = Vec::new();
        w.push(&[0.0, 1.0, 2.0], |v| out.push(v));
        assert!(out.is_empty());
        w.push(&[3.0, 4.0, 5.0, 6.0, 7.0], |v| out.push(v));
        assert_eq!(
            out,
            vec![
                vec![0.0, 1.0, 2.0, 3.0],
                vec![2.0, 3.0, 4.0, 5.0],
                vec![4.0, 5.0, 6.0, 7.0]
            ]
        );
    }

    #[test]
    fn window_and_hop_follow_milliseconds() {
        let w = Windower::from_ms(16_000, 1000, 250);
        assert_eq!(w.window(), 16_000);
        let mut n = 0;
        let mut w = w;
        w.push(&vec![0.0; 16_000 + 4 * 4_000], |_| n += 1);
        assert_eq!(n, 5);
    }
}
