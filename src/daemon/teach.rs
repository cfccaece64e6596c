//! Teaching from Home Assistant: what the inbound thread (`daemon::inbox`) remembers
//! between messages, and its rules, without I/O: the label picked for each scope (the
//! device's label request, or one pipeline) and the "teach now" bursts under way, which
//! take a pipeline's newer captures, spaced out, until they have enough or the source has
//! been silent too long.

use std::collections::BTreeMap;

use crate::mqtt::TeachScope;

/// The labels picked for each scope and the "teach now" bursts under way.
#[derive(Debug, Default)]
pub struct TeachDesk {
    /// Scope key ([`key`]) → the label its actions store.
    labels: BTreeMap<String, String>,
    bursts: Vec<Burst>,
}

/// The key of a scope in [`TeachDesk`] (a pipeline may be named `request`).
fn key(scope: TeachScope<'_>) -> String {
    match scope {
        TeachScope::Request => "request".into(),
        TeachScope::Pipeline(p) => format!("pipeline/{p}"),
    }
}

/// What a scope is called in messages and in `TeachStatus::scope`.
pub fn scope_name(scope: TeachScope<'_>) -> String {
    match scope {
        TeachScope::Request => "request".into(),
        TeachScope::Pipeline(p) => p.into(),
    }
}

/// "Teach now" on one pipeline: the captures after `after_id` are taken, one at most every
/// `spacing_ms`, until `left` is 0 or the deadline passes (a source that makes no
/// captures).
#[derive(Debug, Clone, PartialEq)]
pub struct Burst {
    pub pipeline: String,
    pub label: String,
    pub left: usize,
    pub stored: usize,
    after_id: Option<u64>,
    next_ms: u64,
    spacing_ms: u64,
    deadline_ms: u64,
}

/// Seconds a burst waits beyond its schedule for captures before it gives up.
const BURST_GRACE_MS: u64 = 30_000;

impl Burst {
    pub fn new(
        pipeline: &str,
        label: &str,
        count: usize,
        spacing_ms: u64,
        after_id: Option<u64>,
        now: u64,
    ) -> Self {
        Self {
            pipeline: pipeline.into(),
            label: label.into(),
            left: count,
            stored: 0,
            after_id,
            next_ms: now,
            spacing_ms,
            deadline_ms: now + spacing_ms * count as u64 + BURST_GRACE_MS,
        }
    }

    /// The capture to take at `now`, given the pipeline's newest capture: a newer one than
    /// the last taken, once the spacing has passed.
    pub fn due(&self, now: u64, newest: Option<u64>) -> Option<u64> {
        let id = newest?;
        (self.left > 0 && now >= self.next_ms && self.after_id.is_none_or(|a| id > a)).then_some(id)
    }

    /// Capture `id` was taken (`stored`: it is a new sample).
    pub fn took(&mut self, id: u64, stored: bool, now: u64) {
        self.after_id = Some(id);
        self.left -= 1;
        self.stored += usize::from(stored);
        self.next_ms = now + self.spacing_ms;
    }

    pub fn done(&self) -> bool {
        self.left == 0
    }

    pub fn timed_out(&self, now: u64) -> bool {
        now > self.deadline_ms
    }
}

impl TeachDesk {
    pub fn label(&self, scope: TeachScope<'_>) -> Option<&str> {
        self.labels.get(&key(scope)).map(String::as_str)
    }

    pub fn set_label(&mut self, scope: TeachScope<'_>, label: String) {
        self.labels.insert(key(scope), label);
    }

    /// The burst under way on `pipeline`.
    pub fn burst_on(&self, pipeline: &str) -> Option<&Burst> {
        self.bursts.iter().find(|b| b.pipeline == pipeline)
    }

    pub fn start(&mut self, burst: Burst) {
        self.bursts.push(burst);
    }

    /// The bursts under way, taken out to be advanced (and put back with
    /// [`TeachDesk::put_back`]).
    pub fn take_bursts(&mut self) -> Vec<Burst> {
        std::mem::take(&mut self.bursts)
    }

    pub fn put_back(&mut self, bursts: Vec<Burst>) {
        self.bursts = bursts;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_takes_only_new_captures_spaced_out_and_ends() {
        let mut b = Burst::new("door", "parcel", 3, 1000, Some(10), 0);
        assert_eq!(b.due(0, Some(10)), None, "nothing newer than the press");
        assert_eq!(b.due(0, None), None);
        assert_eq!(b.due(0, Some(12)), Some(12));
        b.took(12, true, 0);
        assert_eq!(b.due(500, Some(14)), None, "spacing");
        assert_eq!(b.due(1000, Some(12)), None, "the same capture again");
        assert_eq!(b.due(1000, Some(15)), Some(15));
        b.took(15, false, 1000);
        b.took(16, true, 2000);
        assert!(b.done());
        assert_eq!(b.stored, 2, "a duplicate is not counted");
        assert_eq!(b.due(5000, Some(20)), None, "done");
    }

    #[test]
    fn a_burst_whose_source_is_silent_gives_up() {
        let b = Burst::new("door", "parcel", 5, 1000, None, 0);
        assert_eq!(b.due(0, Some(1)), Some(1), "no capture before the press");
        assert!(!b.timed_out(5000 + BURST_GRACE_MS));
        assert!(b.timed_out(5001 + BURST_GRACE_MS));
    }

    #[test]
    fn scopes_keep_their_own_labels() {
        let mut d = TeachDesk::default();
        d.labels.insert(key(TeachScope::Request), "a".into());
        d.labels
            .insert(key(TeachScope::Pipeline("request")), "b".into());
        assert_eq!(d.label(TeachScope::Request), Some("a"));
        assert_eq!(d.label(TeachScope::Pipeline("request")), Some("b"));
        assert_eq!(d.label(TeachScope::Pipeline("door")), None);
    }
}
