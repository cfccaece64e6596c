//! The microphone source through cpal (ALSA on Linux).
//!
//! The input configuration is chosen explicitly from `supported_input_configs()` — the
//! fewest channels, a sample format we read natively (i16 or f32), the model's rate when
//! the device offers it (else 48 kHz, else the highest) — because conversions inside ALSA's
//! `plug` silently drop blocks under cpal's access pattern. The callback never blocks: it
//! downmixes to mono and hands the block to a bounded queue (full: dropped and counted).
//! A worker thread cuts sliding windows at the device rate, resamples each window to the
//! model's rate and sends it on as a [`Capture`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{SampleFormat, StreamConfig};

use super::health::SourceHealth;
use super::slot;
use super::window::Windower;
use super::{Capture, CaptureError, now_ms};
use crate::features::{Clip, Raw, audio::resample};

/// Pick the input configuration (pure, for tests): fewest channels, i16 before f32, the
/// wanted rate if in range, else 48 kHz if in range, else the range's maximum.
pub fn choose(
    ranges: &[(u16, u32, u32, SampleFormat)],
    want_hz: u32,
) -> Option<(u16, u32, SampleFormat)> {
    let usable = |f: SampleFormat| matches!(f, SampleFormat::I16 | SampleFormat::F32);
    let mut best: Option<(u16, u32, SampleFormat, u8)> = None;
    for &(ch, min, max, fmt) in ranges.iter().filter(|r| usable(r.3)) {
        let rate = if (min..=max).contains(&want_hz) {
            want_hz
        } else if (min..=max).contains(&48_000) {
            48_000
        } else {
            max
        };
        // Lower score is better: channels first, then rate match, then format.
        let score = (ch.min(8) as u8) * 4
            + u8::from(rate != want_hz) * 2
            + u8::from(fmt != SampleFormat::I16);
        if best.is_none_or(|b| score < b.3) {
            best = Some((ch, rate, fmt, score));
        }
    }
    best.map(|(c, r, f, _)| (c, r, f))
}

fn downmix_i16(data: &[i16], channels: usize) -> Vec<f32> {
    data.chunks(channels)
        .map(|f| f.iter().map(|&s| s as f32 / 32768.0).sum::<f32>() / channels as f32)
        .collect()
}

fn downmix_f32(data: &[f32], channels: usize) -> Vec<f32> {
    data.chunks(channels)
        .map(|f| f.iter().sum::<f32>() / channels as f32)
        .collect()
}

/// Microphone request, from `[pipeline.source]` and the model's rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MicRequest {
    /// `default`, or a substring of the ALSA device description.
    pub device: String,
    pub model_rate_hz: u32,
    pub window_ms: u64,
    pub hop_ms: u64,
}

fn find_device(name: &str) -> Result<cpal::Device, String> {
    let host = cpal::default_host();
    let found = if name == "default" {
        host.default_input_device()
    } else {
        host.input_devices().map_err(|e| e.to_string())?.find(|d| {
            d.description()
                .map(|n| n.to_string().contains(name))
                .unwrap_or(false)
        })
    };
    found.ok_or_else(|| "no such capture device".into())
}

/// Open the device and hand windows over until `stop`; an error when it cannot open or
/// the stream stops (the caller retries).
pub fn run(
    req: &MicRequest,
    out: &slot::Sender<Capture>,
    next_id: &AtomicU64,
    health: &SourceHealth,
    stop: &AtomicBool,
) -> Result<(), CaptureError> {
    let source_name = format!("microphone `{}`", req.device);
    let open_err = |message: String| CaptureError::Open {
        source_name: source_name.clone(),
        message,
    };
    let device = find_device(&req.device).map_err(open_err)?;
    let ranges: Vec<(u16, u32, u32, SampleFormat)> = device
        .supported_input_configs()
        .map_err(|e| open_err(e.to_string()))?
        .map(|r| {
            (
                r.channels(),
                r.min_sample_rate(),
                r.max_sample_rate(),
                r.sample_format(),
            )
        })
        .collect();
    let (channels, rate, format) = choose(&ranges, req.model_rate_hz)
        .ok_or_else(|| open_err(format!("no i16/f32 input configuration among {ranges:?}")))?;
    let config = StreamConfig {
        channels,
        sample_rate: rate,
        buffer_size: cpal::BufferSize::Default,
    };
    // The callback only downmixes and hands the block over; full queue: drop and count.
    let (tx, rx): (SyncSender<Vec<f32>>, Receiver<Vec<f32>>) = sync_channel(256);
    let ch = channels as usize;
    let dropped = health.dropped_blocks.clone();
    let push = move |block: Vec<f32>| {
        if let Err(TrySendError::Full(_)) = tx.try_send(block) {
            dropped.fetch_add(1, Ordering::Relaxed);
        }
    };
    let err_cb = |e: cpal::Error| tracing::warn!(error = %e, "microphone stream error");
    let stream = match format {
        SampleFormat::I16 => device.build_input_stream::<i16, _, _>(
            config,
            move |data: &[i16], _: &_| push(downmix_i16(data, ch)),
            err_cb,
            None,
        ),
        _ => device.build_input_stream::<f32, _, _>(
            config,
            move |data: &[f32], _: &_| push(downmix_f32(data, ch)),
            err_cb,
            None,
        ),
    }
    .map_err(|e| open_err(e.to_string()))?;
    stream.play().map_err(|e| open_err(e.to_string()))?;
    tracing::info!(device = %req.device, channels, rate, format = ?format, "microphone streaming");
    health.set("running");
    let mut windows = Windower::from_ms(rate, req.window_ms, req.hop_ms);
    let mut closed = false;
    while !stop.load(Ordering::Relaxed) && !closed {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(block) => windows.push(&block, |w| {
                health.alive();
                let samples = if rate == req.model_rate_hz {
                    w
                } else {
                    resample(&w, rate, req.model_rate_hz).unwrap_or_default()
                };
                let capture = Capture {
                    id: next_id.fetch_add(1, Ordering::Relaxed),
                    ts_ms: now_ms(),
                    raw: Raw::Audio(Clip {
                        samples,
                        sample_rate_hz: req.model_rate_hz,
                    }),
                };
                closed |= out.send(capture).is_err();
            }),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                return Err(CaptureError::Failed {
                    source_name,
                    message: "the audio stream stopped".into(),
                });
            }
        }
    }
    drop(stream);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefers_mono_i16_at_the_model_rate() {
        let ranges = [
            (2, 8_000, 96_000, SampleFormat::F32),
            (1, 8_000, 96_000, SampleFormat::F32),
            (1, 8_000, 96_000, SampleFormat::I16),
        ];
        assert_eq!(
            choose(&ranges, 16_000),
            Some((1, 16_000, SampleFormat::I16))
        );
    }

    #[test]
    fn falls_back_to_48k_then_the_maximum() {
        assert_eq!(
            choose(&[(1, 48_000, 48_000, SampleFormat::I16)], 16_000),
            Some((1, 48_000, SampleFormat::I16))
        );
        assert_eq!(
            choose(&[(1, 44_100, 44_100, SampleFormat::F32)], 16_000),
            Some((1, 44_100, SampleFormat::F32))
        );
        assert_eq!(
            choose(&[(1, 8_000, 48_000, SampleFormat::U8)], 16_000),
            None
        );
    }

    #[test]
    fn downmix_averages_channels() {
        assert_eq!(downmix_f32(&[1.0, 0.0, 0.5, 0.5], 2), vec![0.5, 0.5]);
        assert_eq!(downmix_i16(&[16384, 16384], 2), vec![0.5]);
    }
}
