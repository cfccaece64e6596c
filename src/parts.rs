//! The daemon's OS threads under supervision: each is named, its end is noticed (with the
//! panic message when it panicked), and stopping waits for it only until a deadline: a
//! thread stuck in a driver call (a camera's `frame()`) is left behind and reported, never
//! joined forever.

use std::thread::JoinHandle;
use std::time::Duration;

/// One supervised thread.
#[derive(Debug)]
pub struct Part {
    name: String,
    handle: Option<JoinHandle<()>>,
}

/// How often [`stop_within`] looks whether a thread has ended.
const POLL: Duration = Duration::from_millis(20);

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

impl Part {
    pub fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<Self> {
        let handle = std::thread::Builder::new().name(name.into()).spawn(f)?;
        Ok(Self {
            name: name.into(),
            handle: Some(handle),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `None` while it runs; once it has ended, how: `"ended"` or `"panicked: …"` (the
    /// first call after the end joins it; later calls say `"ended"`).
    pub fn ended(&mut self) -> Option<String> {
        if !self.handle.as_ref()?.is_finished() {
            return None;
        }
        let handle = self.handle.take()?;
        Some(match handle.join() {
            Ok(()) => "ended".into(),
            Err(p) => format!("panicked: {}", panic_text(p.as_ref())),
        })
    }

    fn is_running(&self) -> bool {
        self.handle.as_ref().is_some_and(|h| !h.is_finished())
    }
}

/// Wait until every part has ended or `deadline` passes, without blocking a runtime
/// thread; the names of the parts still running then (left behind: they end with the
/// process). Panics of the ones that ended are logged.
pub async fn stop_within(parts: Vec<Part>, deadline: tokio::time::Instant) -> Vec<String> {
    let mut parts = parts;
    loop {
        for p in &mut parts {
            if let Some(how) = p.ended()
                && how != "ended"
            {
                tracing::error!(thread = %p.name, "{how}");
            }
        }
        parts.retain(Part::is_running);
        if parts.is_empty() || tokio::time::Instant::now() >= deadline {
            return parts.iter().map(|p| p.name.clone()).collect();
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicked_thread_is_reported_with_its_message() {
        let mut p = Part::spawn("boom", || panic!("trainer bug")).expect("spawn");
        let how = loop {
            if let Some(h) = p.ended() {
                break h;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!(how, "panicked: trainer bug");
        assert_eq!(p.ended().as_deref(), None, "joined once");
        let mut q = Part::spawn("fine", || {}).expect("spawn");
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(q.ended().as_deref(), Some("ended"));
    }

    /// A thread that does not stop (a camera stuck in a read) is left behind at the
    /// deadline instead of blocking shutdown (issue 11: joined inside `spawn_blocking`,
    /// it kept the runtime's drop waiting forever).
    #[tokio::test]
    async fn stopping_gives_up_on_a_stuck_thread_at_the_deadline() {
        let stuck = Part::spawn("src-stuck", || std::thread::sleep(Duration::from_secs(30)))
            .expect("spawn");
        let quick = Part::spawn("src-quick", || {}).expect("spawn");
        let t0 = std::time::Instant::now();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
        let left = stop_within(vec![stuck, quick], deadline).await;
        assert_eq!(left, ["src-stuck"]);
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    }
}
