//! `<p>/<dev>/metrics`: what the daemon has done since it started (per pipeline frames,
//! drops, errors, latency percentiles; adaptations) and what it costs now (RSS, CPU % of
//! one core since the previous message), from `/proc/self/statm` and `getrusage`. The same figures in
//! Prometheus' text format ([`prometheus_text`]), served on a loopback address when
//! `publish.prometheus_listen` is set ([`serve_prometheus`]).

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

/// Resident memory (MiB, `/proc/self/statm`) and CPU time (seconds, user + system,
/// `getrusage`) of this process.
fn process_usage() -> Option<(f64, f64)> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let resident: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value; rusage is plain old data (all-zero
    // is a valid value) that getrusage fills in.
    let (page, usage) = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        let ok = libc::getrusage(libc::RUSAGE_SELF, &mut u) == 0;
        (libc::sysconf(libc::_SC_PAGESIZE) as f64, ok.then_some(u)?)
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some((
        resident * page / (1024.0 * 1024.0),
        secs(usage.ru_utime) + secs(usage.ru_stime),
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

/// `m` in Prometheus' text exposition format (version 0.0.4).
pub fn prometheus_text(m: &Metrics, device: &str) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, f64)>| {
        let _ = writeln!(
            out,
            "# HELP lsskd_{name} {help}\n# TYPE lsskd_{name} {kind}"
        );
        for (labels, v) in rows {
            let _ = writeln!(out, "lsskd_{name}{{device=\"{device}\"{labels}}} {v}");
        }
    };
    let per_pipeline = |f: &dyn Fn(&PipelineMetrics) -> Option<f64>| {
        m.pipelines
            .iter()
            .filter_map(|p| f(p).map(|v| (format!(",pipeline=\"{}\"", p.name), v)))
            .collect::<Vec<_>>()
    };
    family(
        "frames_total",
        "counter",
        "Frames or windows classified.",
        per_pipeline(&|p| Some(p.frames as f64)),
    );
    family(
        "dropped_total",
        "counter",
        "Frames or windows dropped before inference.",
        per_pipeline(&|p| Some(p.dropped as f64)),
    );
    family(
        "errors_total",
        "counter",
        "Inference errors.",
        per_pipeline(&|p| Some(p.errors as f64)),
    );
    let mut latency = Vec::new();
    for p in &m.pipelines {
        for (q, v) in [("0.5", p.latency_p50_ms), ("0.95", p.latency_p95_ms)] {
            if let Some(v) = v {
                latency.push((
                    format!(",pipeline=\"{}\",quantile=\"{q}\"", p.name),
                    v / 1000.0,
                ));
            }
        }
    }
    family(
        "latency_seconds",
        "summary",
        "Features + inference time over the latest 512 frames.",
        latency,
    );
    let a = &m.adaptations;
    family(
        "adaptations_total",
        "counter",
        "Adaptations (imprints and fine-tunes) by outcome.",
        [
            ("run", a.run),
            ("promoted", a.promoted),
            ("rejected", a.rejected),
            ("failed", a.failed),
        ]
        .into_iter()
        .map(|(o, n)| (format!(",outcome=\"{o}\""), n as f64))
        .collect(),
    );
    family(
        "resident_memory_bytes",
        "gauge",
        "Resident memory of the daemon.",
        vec![(String::new(), m.rss_mib * 1024.0 * 1024.0)],
    );
    family(
        "cpu_percent",
        "gauge",
        "CPU time since the previous scrape, % of one core.",
        vec![(String::new(), m.cpu_percent)],
    );
    out
}

/// A request for fresh figures in Prometheus' text format, answered by the main loop.
pub type Scrape = tokio::sync::oneshot::Sender<String>;

/// Bind `addr` (empty: off) and serve it ([`serve_prometheus`]) on a task of its own.
pub async fn start_prometheus(
    addr: &str,
    scrape: tokio::sync::mpsc::Sender<Scrape>,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    if addr.is_empty() {
        return Ok(None);
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("`publish.prometheus_listen` {addr}: {e}"))?;
    tracing::info!(%addr, "serving Prometheus metrics on /metrics");
    Ok(Some(tokio::spawn(serve_prometheus(listener, scrape))))
}

/// Serve `GET /metrics` on `addr` (loopback, checked by the settings): each request asks
/// the main loop for fresh figures through `scrape` and answers with them.
pub async fn serve_prometheus(
    listener: tokio::net::TcpListener,
    scrape: tokio::sync::mpsc::Sender<Scrape>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let scrape = scrape.clone();
        tokio::spawn(async move {
            // The request head (the first line is all that matters), at most 1 KiB.
            let mut buf = Vec::with_capacity(1024);
            let read_head = async {
                let mut chunk = [0u8; 512];
                while buf.len() < 1024 && !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            };
            if tokio::time::timeout(std::time::Duration::from_secs(5), read_head)
                .await
                .is_err()
            {
                return;
            }
            let n = buf.len();
            let request = String::from_utf8_lossy(&buf[..n]);
            let (status, body) =
                if request.starts_with("GET /metrics ") || request.starts_with("GET / ") {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    match scrape.send(tx).await {
                        Ok(()) => match rx.await {
                            Ok(text) => ("200 OK", text),
                            Err(_) => ("503 Service Unavailable", "stopping\n".into()),
                        },
                        Err(_) => ("503 Service Unavailable", "stopping\n".into()),
                    }
                } else {
                    ("404 Not Found", "GET /metrics\n".into())
                };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_has_one_family_per_figure_with_device_and_pipeline_labels() {
        let m = Metrics {
            v: SCHEMA_VERSION,
            ts: 0,
            interval_secs: 60.0,
            pipelines: vec![PipelineMetrics {
                name: "door".into(),
                frames: 12,
                dropped: 1,
                errors: 0,
                latency_p50_ms: Some(2.0),
                latency_p95_ms: Some(4.0),
            }],
            adaptations: AdaptationCounts {
                run: 3,
                promoted: 2,
                rejected: 1,
                failed: 0,
            },
            rss_mib: 10.0,
            cpu_percent: 3.5,
        };
        let t = prometheus_text(&m, "pi4");
        for line in [
            "# TYPE lsskd_frames_total counter",
            "lsskd_frames_total{device=\"pi4\",pipeline=\"door\"} 12",
            "lsskd_latency_seconds{device=\"pi4\",pipeline=\"door\",quantile=\"0.95\"} 0.004",
            "lsskd_adaptations_total{device=\"pi4\",outcome=\"promoted\"} 2",
            "lsskd_resident_memory_bytes{device=\"pi4\"} 10485760",
            "lsskd_cpu_percent{device=\"pi4\"} 3.5",
        ] {
            assert!(t.lines().any(|l| l == line), "missing `{line}` in:\n{t}");
        }
    }

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
