//! `<p>/<dev>/metrics`: what the daemon has done since it started (per pipeline frames,
//! drops, errors, latency percentiles; adaptations) and what it costs now (RSS, CPU % of
//! one core since the previous message), from `/proc/self`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::capture::now_ms;
use crate::mqtt::payload::{AdaptationCounts, Metrics, PipelineMetrics, SCHEMA_VERSION};
use crate::pipeline::PipelineHandle;

/// Adaptation outcomes, counted by the trainer thread.
#[derive(Debug, Default)]
pub struct AdaptCounters {
    pub run: AtomicU64,
    pub promoted: AtomicU64,
    pub rejected: AtomicU64,
    pub failed: AtomicU64,
}

impl AdaptCounters {
    fn snapshot(&self) -> AdaptationCounts {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        AdaptationCounts {
            run: n(&self.run),
            promoted: n(&self.promoted),
            rejected: n(&self.rejected),
            failed: n(&self.failed),
        }
    }
}

/// Resident memory (MiB) and CPU time (seconds, user + system) of this process.
fn process_usage() -> Option<(f64, f64)> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let resident: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces, inside parentheses).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let (utime, stime): (f64, f64) = (f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?);
    // SAFETY: sysconf only reads a configuration value.
    let (page, tick) = unsafe {
        (
            libc::sysconf(libc::_SC_PAGESIZE) as f64,
            libc::sysconf(libc::_SC_CLK_TCK) as f64,
        )
    };
    Some((
        resident * page / (1024.0 * 1024.0),
        (utime + stime) / tick.max(1.0),
    ))
}

/// Builds one metrics message after another; CPU % is over the time since the previous.
pub struct MetricsProbe {
    last: Instant,
    last_cpu_secs: f64,
}

impl MetricsProbe {
    pub fn new() -> Self {
        Self {
            last: Instant::now(),
            last_cpu_secs: process_usage().map_or(0.0, |(_, cpu)| cpu),
        }
    }

    pub fn sample(&mut self, pipelines: &[PipelineHandle], adapt: &AdaptCounters) -> Metrics {
        let (rss_mib, cpu_secs) = process_usage().unwrap_or((0.0, self.last_cpu_secs));
        let interval = self.last.elapsed().as_secs_f64().max(1e-3);
        let cpu_percent = 100.0 * (cpu_secs - self.last_cpu_secs).max(0.0) / interval;
        self.last = Instant::now();
        self.last_cpu_secs = cpu_secs;
        Metrics {
            v: SCHEMA_VERSION,
            ts: now_ms(),
            interval_secs: interval,
            pipelines: pipelines
                .iter()
                .map(|p| {
                    let h = p.health();
                    let q = p
                        .stats
                        .recent_latency_us
                        .lock()
                        .ok()
                        .and_then(|w| w.quantiles_ms(&[0.5, 0.95]));
                    PipelineMetrics {
                        name: h.name,
                        frames: h.inferences,
                        dropped: h.dropped,
                        errors: h.errors,
                        latency_p50_ms: q.as_ref().map(|q| q[0]),
                        latency_p95_ms: q.as_ref().map(|q| q[1]),
                    }
                })
                .collect(),
            adaptations: adapt.snapshot(),
            rss_mib,
            cpu_percent,
        }
    }
}

impl Default for MetricsProbe {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_and_spends_cpu() {
        let (rss, cpu0) = process_usage().expect("/proc/self");
        assert!(rss > 1.0, "{rss} MiB");
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed().as_millis() < 300 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let (_, cpu1) = process_usage().expect("/proc/self");
        assert!(cpu1 - cpu0 >= 0.1, "{cpu0} -> {cpu1}");
    }
}
