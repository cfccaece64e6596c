//! Every running part of the daemon in one owner, supervised while it runs and stopped in
//! the documented order within a deadline (as vector's `RunningTopology::stop`):
//! sources → inference threads → the inbound thread → the trainer → the MQTT task.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::parts::{Part, stop_within};

/// The flags (and the MQTT task's watch) each part stops on.
#[derive(Clone)]
pub struct Stops {
    pub sources: Arc<AtomicBool>,
    pub workers: Arc<AtomicBool>,
    pub inbound: Arc<AtomicBool>,
    pub trainer: Arc<AtomicBool>,
    pub mqtt: Arc<watch::Sender<bool>>,
}

impl Stops {
    /// Fresh flags, and the receiver the MQTT task watches.
    pub fn new() -> (Stops, watch::Receiver<bool>) {
        let (tx, rx) = watch::channel(false);
        (
            Stops {
                sources: Arc::default(),
                workers: Arc::default(),
                inbound: Arc::default(),
                trainer: Arc::default(),
                mqtt: Arc::new(tx),
            },
            rx,
        )
    }
}

/// See the module documentation.
pub struct Running {
    /// The pipelines' source threads (`src-<pipeline>`).
    pub sources: Vec<Part>,
    /// The pipelines' inference threads (`infer-<pipeline>`).
    pub workers: Vec<Part>,
    /// Samples and model commands.
    pub inbound: Part,
    /// `None` when learning is disabled.
    pub trainer: Option<Part>,
    /// The MQTT connection task; `None` once it has ended.
    pub mqtt: Option<JoinHandle<anyhow::Result<()>>>,
    /// The Prometheus endpoint, when configured.
    pub prometheus: Option<JoinHandle<()>>,
    pub stops: Stops,
}

impl Running {
    /// A part whose end is fatal (the trainer or the inbound thread) has ended: how.
    pub fn fatal(&mut self) -> Option<anyhow::Error> {
        if let Some(how) = self.trainer.as_mut().and_then(Part::ended) {
            return Some(anyhow::anyhow!("the trainer thread {how}"));
        }
        self.inbound
            .ended()
            .map(|how| anyhow::anyhow!("the inbound thread {how}"))
    }

    /// Completes when the MQTT task ends, with why that is fatal; never once it has.
    pub async fn mqtt_ended(&mut self) -> anyhow::Error {
        let Some(task) = self.mqtt.as_mut() else {
            return std::future::pending().await;
        };
        let ended = task.await;
        self.mqtt = None;
        match ended {
            Ok(Ok(())) => anyhow::anyhow!("the MQTT connection task ended"),
            Ok(Err(e)) => e.context("the MQTT connection failed"),
            Err(e) => anyhow::anyhow!("the MQTT connection task panicked: {e}"),
        }
    }

    /// Pipeline threads that panicked since the last look: (pipeline, what happened). A
    /// thread that ended normally (a replay that ran out) is not one.
    pub fn panicked_pipelines(&mut self) -> Vec<(String, String)> {
        panicked(self.sources.iter_mut().chain(self.workers.iter_mut()))
    }

    /// Stop everything in order within `grace`: a fine-tune in progress is cancelled (it is
    /// polled between steps; nothing of it is kept, the live version is untouched);
    /// sources close their slots; inference threads drain what is left; the inbound thread
    /// refuses what is queued; the trainer ends; the MQTT task publishes `offline` and
    /// disconnects. Threads still running at the deadline are reported and left behind.
    pub async fn stop(self, grace: std::time::Duration) {
        let Running {
            sources,
            workers,
            inbound,
            trainer,
            mqtt,
            prometheus,
            stops,
        } = self;
        if let Some(p) = &prometheus {
            p.abort();
        }
        let deadline = tokio::time::Instant::now() + grace;
        stops.trainer.store(true, Ordering::Relaxed);
        stops.sources.store(true, Ordering::Relaxed);
        let mut left = stop_within(sources, deadline).await;
        stops.workers.store(true, Ordering::Relaxed);
        left.extend(stop_within(workers, deadline).await);
        stops.inbound.store(true, Ordering::Relaxed);
        left.extend(stop_within(vec![inbound], deadline).await);
        left.extend(stop_within(trainer.into_iter().collect(), deadline).await);
        if !left.is_empty() {
            tracing::warn!(threads = ?left, "threads did not stop within the grace period; left behind");
        }
        let _ = stops.mqtt.send(true);
        if let Some(task) = mqtt
            && tokio::time::timeout_at(deadline, task).await.is_err()
        {
            tracing::warn!("MQTT connection did not close within the grace period");
        }
    }
}

/// Threads among `parts` named `<kind>-<pipeline>` that panicked since the last look.
fn panicked<'a>(parts: impl Iterator<Item = &'a mut Part>) -> Vec<(String, String)> {
    parts
        .filter_map(|part| {
            let how = part.ended()?;
            let pipeline = part.name().split_once('-').map_or("", |(_, n)| n);
            how.starts_with("panicked").then(|| {
                (
                    pipeline.to_string(),
                    format!("thread `{}` {how}", part.name()),
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicked_pipeline_thread_is_reported_once_with_its_message() {
        let mut parts = [
            Part::spawn("src-door", || {}).expect("spawn"),
            Part::spawn("infer-door", || panic!("bad tensor")).expect("spawn"),
        ];
        // Polled as the main loop does, until the panicking thread has ended.
        let mut seen = Vec::new();
        for _ in 0..500 {
            seen.extend(panicked(parts.iter_mut()));
            if !seen.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(
            seen,
            [(
                "door".to_string(),
                "thread `infer-door` panicked: bad tensor".to_string()
            )]
        );
        assert!(panicked(parts.iter_mut()).is_empty(), "reported once");
    }

    /// The order of the module documentation, on a runtime: each flag is set only after
    /// every part before it has ended, and the MQTT task is told last.
    #[test]
    fn parts_stop_in_order_sources_workers_inbound_trainer_mqtt() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let (stops, mut mqtt_rx) = Stops::new();
            let order = Arc::new(std::sync::Mutex::new(Vec::new()));
            // A part that ends when its flag is set, noting whether `before` were set then.
            let part =
                |name: &'static str, flag: &Arc<AtomicBool>, before: Vec<Arc<AtomicBool>>| {
                    let flag = flag.clone();
                    let order = order.clone();
                    Part::spawn(name, move || {
                        while !flag.load(Ordering::Relaxed) {
                            std::thread::sleep(std::time::Duration::from_millis(2));
                        }
                        let ok = before.iter().all(|b| b.load(Ordering::Relaxed));
                        order.lock().expect("order").push((name, ok));
                    })
                    .expect("spawn")
                };
            let running = Running {
                sources: vec![part("src-a", &stops.sources, vec![])],
                workers: vec![part("infer-a", &stops.workers, vec![stops.sources.clone()])],
                inbound: part("inbound", &stops.inbound, vec![stops.workers.clone()]),
                trainer: Some(part("trainer", &stops.trainer, vec![])),
                mqtt: Some(tokio::spawn(async move {
                    let _ = mqtt_rx.wait_for(|stop| *stop).await;
                    Ok(())
                })),
                prometheus: None,
                stops: stops.clone(),
            };
            running.stop(std::time::Duration::from_secs(5)).await;
            let order = order.lock().expect("order").clone();
            let names: Vec<&str> = order.iter().map(|(n, _)| *n).collect();
            // The trainer is told first (its fine-tune is cancelled) and may end any time.
            let without_trainer: Vec<&str> =
                names.iter().copied().filter(|n| *n != "trainer").collect();
            assert_eq!(
                without_trainer,
                ["src-a", "infer-a", "inbound"],
                "{order:?}"
            );
            assert!(order.iter().all(|(_, ok)| *ok), "{order:?}");
            assert!(*stops.mqtt.borrow(), "the MQTT task was told to stop");
        });
    }
}
