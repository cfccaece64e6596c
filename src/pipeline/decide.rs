//! Pure per-pipeline decisions: when a label becomes the stable state (debounce), and
//! whether a prediction is published (rate limit / on change). Driven by unit tests, no
//! clocks or sockets.

/// The stable state's label while nothing known happens: what a model's background class
/// (`Manifest::background`) becomes, an empty label (a class name is never empty).
pub const NOTHING: &str = "";

/// The label a prediction of `label` feeds to the [`Debouncer`]: [`NOTHING`] for the
/// model's background class, else the label itself.
pub fn state_label<'a>(label: &'a str, background: Option<&str>) -> &'a str {
    if background == Some(label) {
        NOTHING
    } else {
        label
    }
}

/// A label becomes stable after `count` consecutive predictions of it, each scoring at
/// least `min_score`.
#[derive(Debug, Clone)]
pub struct Debouncer {
    count: usize,
    min_score: f32,
    candidate: Option<(String, usize)>,
    stable: Option<String>,
}

impl Debouncer {
    pub fn new(count: usize, min_score: f32) -> Self {
        Self {
            count: count.max(1),
            min_score,
            candidate: None,
            stable: None,
        }
    }

    /// Feed one prediction; returns the new stable label when it changes.
    pub fn observe(&mut self, label: &str, score: f32) -> Option<String> {
        if score < self.min_score {
            self.candidate = None;
            return None;
        }
        let run = match &mut self.candidate {
            Some((l, n)) if l == label => {
                *n += 1;
                *n
            }
            _ => {
                self.candidate = Some((label.to_string(), 1));
                1
            }
        };
        if run >= self.count && self.stable.as_deref() != Some(label) {
            self.stable = Some(label.to_string());
            return self.stable.clone();
        }
        None
    }

    pub fn stable(&self) -> Option<&str> {
        self.stable.as_deref()
    }
}

/// Publish rule for predictions: at most one per `min_interval_ms`, and with
/// `on_change_only` only when the label differs from the last published one.
#[derive(Debug, Clone)]
pub struct PublishGate {
    min_interval_ms: u64,
    on_change_only: bool,
    last: Option<(u64, String)>,
}

impl PublishGate {
    pub fn new(min_interval_ms: u64, on_change_only: bool) -> Self {
        Self {
            min_interval_ms,
            on_change_only,
            last: None,
        }
    }

    /// Whether to publish a prediction of `label` at `now_ms`; records it if so.
    pub fn admit(&mut self, now_ms: u64, label: &str) -> bool {
        let ok = match &self.last {
            None => true,
            Some((t, l)) => {
                let changed = l != label;
                let spaced = now_ms.saturating_sub(*t) >= self.min_interval_ms;
                spaced && (changed || !self.on_change_only)
            }
        };
        if ok {
            self.last = Some((now_ms, label.to_string()));
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_becomes_stable_after_consecutive_confident_predictions() {
        let mut d = Debouncer::new(3, 0.5);
        assert_eq!(d.observe("door", 0.9), None);
        assert_eq!(d.observe("door", 0.9), None);
        assert_eq!(d.observe("door", 0.9).as_deref(), Some("door"));
        assert_eq!(d.observe("door", 0.9), None, "no repeat while unchanged");
        assert_eq!(d.stable(), Some("door"));
    }

    #[test]
    fn the_background_class_becomes_a_stable_nothing() {
        let mut d = Debouncer::new(2, 0.5);
        let bg = Some("background");
        let feed = |d: &mut Debouncer, l| d.observe(state_label(l, bg), 0.9);
        feed(&mut d, "speech");
        assert_eq!(feed(&mut d, "speech").as_deref(), Some("speech"));
        assert_eq!(feed(&mut d, "background"), None);
        assert_eq!(feed(&mut d, "background").as_deref(), Some(NOTHING));
        assert_eq!(d.stable(), Some(NOTHING));
        // A model without a background class reports the label as it is.
        assert_eq!(state_label("background", None), "background");
    }

    #[test]
    fn a_low_score_or_other_label_restarts_the_count() {
        let mut d = Debouncer::new(2, 0.5);
        d.observe("a", 0.9);
        assert_eq!(d.observe("a", 0.1), None);
        assert_eq!(d.observe("a", 0.9), None);
        assert_eq!(d.observe("b", 0.9), None);
        assert_eq!(d.observe("b", 0.9).as_deref(), Some("b"));
    }

    #[test]
    fn publish_gate_rate_limits_and_can_publish_on_change_only() {
        let mut g = PublishGate::new(1000, false);
        assert!(g.admit(0, "a"));
        assert!(!g.admit(500, "b"));
        assert!(g.admit(1000, "a"));
        let mut g = PublishGate::new(0, true);
        assert!(g.admit(0, "a"));
        assert!(!g.admit(1, "a"));
        assert!(g.admit(2, "b"));
    }
}
