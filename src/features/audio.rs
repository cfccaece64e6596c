//! Audio preprocessing: resampling (rubato) and the log-mel spectrogram (realfft) that
//! turns a mono PCM clip into a `[1, T, F]` model input. Owns [`AudioSpec`], the reusable
//! [`LogMel`] extractor and [`resample`].
//!
//! The spectrogram, for a spec with window `W`, hop `H`, FFT size `N` and `M` mel bands:
//! - the clip is resampled to `sample_rate_hz`, then zero-padded or truncated (keeping the
//!   first samples) to `clip_samples`;
//! - frames start at `t*H` for `t` in `0..T`, `T = 1 + (clip_samples - W) / H` (no
//!   padding at the edges);
//! - each frame is multiplied by a periodic Hann window of `W` samples
//!   (`0.5 - 0.5 cos(2πn/W)`), zero-padded to `N` and transformed with a real FFT;
//! - power `|X[k]|²` (unscaled) of bins `0..=N/2` is summed through `M` triangular filters
//!   on the HTK mel scale (`mel = 2595 log10(1 + f/700)`), centres equally spaced in mel
//!   between `fmin_hz` and `fmax_hz`, peak weight 1, no area normalisation;
//! - the output is `ln(mel_power + log_floor)`, time-major `[T, M]`.

use std::fmt;
use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};
use rubato::{FftFixedInOut, Resampler};
use serde::{Deserialize, Serialize};

use super::{Clip, FeatureError};

/// How a clip becomes a log-mel model input. See the module docs for the exact algorithm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioSpec {
    /// Sample rate the features are computed at; other clips are resampled to it.
    pub sample_rate_hz: u32,
    /// Clip length in samples at `sample_rate_hz` (pad with zeros / truncate to it).
    pub clip_samples: usize,
    /// Periodic Hann analysis window length in samples.
    pub window_samples: usize,
    /// Hop between frame starts in samples.
    pub hop_samples: usize,
    /// FFT length (>= `window_samples`; the window is zero-padded to it).
    pub n_fft: usize,
    /// Number of mel bands `F`.
    pub n_mels: usize,
    /// Lower edge of the lowest mel filter in Hz.
    pub fmin_hz: f32,
    /// Upper edge of the highest mel filter in Hz (<= `sample_rate_hz / 2`).
    pub fmax_hz: f32,
    /// Added to mel power before the natural log: `ln(mel_power + log_floor)`.
    pub log_floor: f32,
    /// Mean subtracted from the log-mel values by [`AudioSpec::tensor`].
    pub mean: f32,
    /// Standard deviation the log-mel values are divided by in [`AudioSpec::tensor`].
    pub std: f32,
}

impl AudioSpec {
    /// The project default for keyword spotting: 16 kHz, 1 s clips (16000 samples), 30 ms
    /// periodic Hann window (480 samples), 20 ms hop (320 samples), `n_fft` 512, 40 HTK
    /// mel bands over 20–8000 Hz, `ln(mel_power + 1e-6)`, mean 0, std 1. Gives 49×40.
    pub fn default_kws() -> Self {
        AudioSpec {
            sample_rate_hz: 16_000,
            clip_samples: 16_000,
            window_samples: 480,
            hop_samples: 320,
            n_fft: 512,
            n_mels: 40,
            fmin_hz: 20.0,
            fmax_hz: 8000.0,
            log_floor: 1e-6,
            mean: 0.0,
            std: 1.0,
        }
    }

    /// Frames `T = 1 + (clip_samples - window_samples) / hop_samples` (no padding); 49 for
    /// [`AudioSpec::default_kws`]. 0 when the spec cannot produce a frame (hop 0 or a clip
    /// shorter than the window).
    pub fn frames(&self) -> usize {
        if self.hop_samples == 0 || self.window_samples == 0 {
            return 0;
        }
        match self.clip_samples.checked_sub(self.window_samples) {
            Some(rest) => 1 + rest / self.hop_samples,
            None => 0,
        }
    }

    /// Clip → `[T, F]` log-mel (`F = n_mels`), row-major time-major, NOT normalised.
    /// Resamples first when the clip's rate differs from `sample_rate_hz`; then pads with
    /// zeros / truncates (keeping the first samples) to `clip_samples`.
    ///
    /// Builds a [`LogMel`] per call; repeated callers should keep one from
    /// [`AudioSpec::extractor`].
    pub fn log_mel(&self, clip: &Clip) -> Result<Vec<f32>, FeatureError> {
        let mut extractor = self.extractor()?;
        extractor.compute_clip(clip)
    }

    /// [`AudioSpec::log_mel`] then `(x - mean) / std`. Shape `[1, T, F]` flattened.
    pub fn tensor(&self, clip: &Clip) -> Result<Vec<f32>, FeatureError> {
        let mut out = self.log_mel(clip)?;
        let inv_std = 1.0 / self.std;
        for x in &mut out {
            *x = (*x - self.mean) * inv_std;
        }
        Ok(out)
    }

    /// Validate the spec and precompute the window, mel filterbank and FFT plan.
    pub fn extractor(&self) -> Result<LogMel, FeatureError> {
        self.validate()?;
        LogMel::new(self)
    }

    /// Check the spec: positive rate and sizes, `clip_samples >= window_samples`,
    /// `n_fft >= window_samples`, `0 <= fmin_hz < fmax_hz <= sample_rate_hz / 2`,
    /// `log_floor > 0`, `std > 0`, finite values, and every mel filter covering at least
    /// one FFT bin. The error lists every problem.
    pub fn validate(&self) -> Result<(), FeatureError> {
        let mut problems = Vec::new();
        if self.sample_rate_hz == 0 {
            problems.push("sample_rate_hz must be positive".to_string());
        }
        for (name, value) in [
            ("clip_samples", self.clip_samples),
            ("window_samples", self.window_samples),
            ("hop_samples", self.hop_samples),
            ("n_fft", self.n_fft),
            ("n_mels", self.n_mels),
        ] {
            if value == 0 {
                problems.push(format!("{name} must be positive"));
            }
        }
        if self.clip_samples < self.window_samples {
            problems.push(format!(
                "clip_samples {} is shorter than window_samples {}",
                self.clip_samples, self.window_samples
            ));
        }
        if self.n_fft < self.window_samples {
            problems.push(format!(
                "n_fft {} is smaller than window_samples {}",
                self.n_fft, self.window_samples
            ));
        }
        let nyquist_hz = self.sample_rate_hz as f32 / 2.0;
        let band_ok = self.fmin_hz.is_finite()
            && self.fmax_hz.is_finite()
            && self.fmin_hz >= 0.0
            && self.fmin_hz < self.fmax_hz;
        if !band_ok {
            problems.push(format!(
                "need 0 <= fmin_hz < fmax_hz, got fmin_hz {} and fmax_hz {}",
                self.fmin_hz, self.fmax_hz
            ));
        }
        if self.fmax_hz > nyquist_hz {
            problems.push(format!(
                "fmax_hz {} is above half the sample rate ({nyquist_hz} Hz)",
                self.fmax_hz
            ));
        }
        if !(self.log_floor.is_finite() && self.log_floor > 0.0) {
            problems.push(format!(
                "log_floor {} must be finite and > 0",
                self.log_floor
            ));
        }
        if !self.mean.is_finite() {
            problems.push(format!("mean {} is not finite", self.mean));
        }
        if !(self.std.is_finite() && self.std > 0.0) {
            problems.push(format!("std {} must be finite and > 0", self.std));
        }
        if problems.is_empty() {
            let filters = mel_filterbank(self);
            let empty: Vec<String> = filters
                .iter()
                .enumerate()
                .filter(|(_, f)| f.weights.is_empty())
                .map(|(j, f)| format!("{j} ({:.0}–{:.0} Hz)", f.lower_hz, f.upper_hz))
                .collect();
            if !empty.is_empty() {
                problems.push(format!(
                    "mel bands {} cover no FFT bin; use fewer mel bands or a larger n_fft",
                    empty.join(", ")
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(FeatureError::InvalidSpec(format!(
                "audio: {}",
                problems.join("; ")
            )))
        }
    }
}

/// One triangular mel filter, stored sparsely from its first non-zero FFT bin.
#[derive(Debug, Clone)]
struct MelFilter {
    first_bin: usize,
    weights: Vec<f32>,
    lower_hz: f32,
    centre_hz: f32,
    upper_hz: f32,
}

fn hz_to_mel(hz: f32) -> f32 {
    2595.0 * (1.0 + hz / 700.0).log10()
}

fn mel_to_hz(mel: f32) -> f32 {
    700.0 * (10f32.powf(mel / 2595.0) - 1.0)
}

/// Triangular HTK-mel filters over bins `0..=n_fft/2`, peak weight 1.
fn mel_filterbank(spec: &AudioSpec) -> Vec<MelFilter> {
    let n_bins = spec.n_fft / 2 + 1;
    let bin_hz = spec.sample_rate_hz as f32 / spec.n_fft as f32;
    let (mel_lo, mel_hi) = (hz_to_mel(spec.fmin_hz), hz_to_mel(spec.fmax_hz));
    let step = (mel_hi - mel_lo) / (spec.n_mels + 1) as f32;
    let edges_hz: Vec<f32> = (0..spec.n_mels + 2)
        .map(|i| mel_to_hz(mel_lo + step * i as f32))
        .collect();
    edges_hz
        .windows(3)
        .map(|e| {
            let (lower_hz, centre_hz, upper_hz) = (e[0], e[1], e[2]);
            let mut first_bin = 0;
            let mut weights = Vec::new();
            for k in 0..n_bins {
                let f = k as f32 * bin_hz;
                let w = if f > lower_hz && f < centre_hz {
                    (f - lower_hz) / (centre_hz - lower_hz)
                } else if f >= centre_hz && f < upper_hz {
                    (upper_hz - f) / (upper_hz - centre_hz)
                } else {
                    0.0
                };
                if w > 0.0 {
                    if weights.is_empty() {
                        first_bin = k;
                    }
                    // Bins between the first and last non-zero ones are all non-zero
                    // (the triangle is convex), so the dense run is exact.
                    weights.push(w);
                }
            }
            MelFilter {
                first_bin,
                weights,
                lower_hz,
                centre_hz,
                upper_hz,
            }
        })
        .collect()
}

/// A reusable log-mel extractor for one [`AudioSpec`]: holds the Hann window, the sparse
/// mel filterbank, the FFT plan and scratch buffers, so per-window work is one FFT per
/// frame plus the filter sums. Build with [`AudioSpec::extractor`].
#[derive(Clone)]
pub struct LogMel {
    spec: AudioSpec,
    frames: usize,
    window: Vec<f32>,
    filters: Vec<MelFilter>,
    fft: Arc<dyn RealToComplex<f32>>,
    frame_buf: Vec<f32>,
    spectrum: Vec<Complex<f32>>,
    scratch: Vec<Complex<f32>>,
    power: Vec<f32>,
}

impl fmt::Debug for LogMel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogMel")
            .field("spec", &self.spec)
            .field("frames", &self.frames)
            .finish_non_exhaustive()
    }
}

impl LogMel {
    fn new(spec: &AudioSpec) -> Result<Self, FeatureError> {
        let w = spec.window_samples;
        let window = (0..w)
            .map(|n| {
                let phase = 2.0 * std::f64::consts::PI * n as f64 / w as f64;
                (0.5 - 0.5 * phase.cos()) as f32
            })
            .collect();
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(spec.n_fft);
        let frame_buf = fft.make_input_vec();
        let spectrum = fft.make_output_vec();
        let scratch = fft.make_scratch_vec();
        Ok(LogMel {
            spec: spec.clone(),
            frames: spec.frames(),
            window,
            filters: mel_filterbank(spec),
            power: vec![0.0; spectrum.len()],
            fft,
            frame_buf,
            spectrum,
            scratch,
        })
    }

    /// The spec this extractor was built for.
    pub fn spec(&self) -> &AudioSpec {
        &self.spec
    }

    /// Number of frames `T` per output.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Centre frequency in Hz of each mel band (length `n_mels`).
    pub fn band_centres_hz(&self) -> Vec<f32> {
        self.filters.iter().map(|f| f.centre_hz).collect()
    }

    /// Like [`AudioSpec::log_mel`]: resamples `clip` to the spec rate when needed, then
    /// computes the `[T, F]` log-mel.
    pub fn compute_clip(&mut self, clip: &Clip) -> Result<Vec<f32>, FeatureError> {
        if clip.sample_rate_hz == self.spec.sample_rate_hz {
            self.compute(&clip.samples)
        } else {
            let samples = resample(&clip.samples, clip.sample_rate_hz, self.spec.sample_rate_hz)?;
            self.compute(&samples)
        }
    }

    /// Samples already at `sample_rate_hz` → `[T, F]` log-mel, time-major, NOT
    /// normalised. Shorter input is zero-padded, longer input truncated (the first
    /// `clip_samples` are used).
    pub fn compute(&mut self, samples: &[f32]) -> Result<Vec<f32>, FeatureError> {
        let n_mels = self.filters.len();
        let clip = &samples[..samples.len().min(self.spec.clip_samples)];
        let ln_floor = self.spec.log_floor;
        let mut out = Vec::with_capacity(self.frames * n_mels);
        for t in 0..self.frames {
            let start = t * self.spec.hop_samples;
            let available = clip.len().saturating_sub(start).min(self.window.len());
            self.frame_buf.fill(0.0);
            if available == 0 {
                // Entirely in the zero padding: zero power in every band.
                out.extend(std::iter::repeat_n(ln_floor.ln(), n_mels));
                continue;
            }
            for ((dst, &x), &w) in self.frame_buf[..available]
                .iter_mut()
                .zip(&clip[start..start + available])
                .zip(&self.window)
            {
                *dst = x * w;
            }
            self.fft
                .process_with_scratch(&mut self.frame_buf, &mut self.spectrum, &mut self.scratch)
                .map_err(|e| FeatureError::InvalidSpec(format!("FFT failed: {e}")))?;
            for (p, c) in self.power.iter_mut().zip(&self.spectrum) {
                *p = c.norm_sqr();
            }
            for filter in &self.filters {
                let bins = &self.power[filter.first_bin..filter.first_bin + filter.weights.len()];
                let mel: f32 = bins.iter().zip(&filter.weights).map(|(p, w)| p * w).sum();
                out.push((mel + ln_floor).ln());
            }
        }
        Ok(out)
    }
}

/// Resample mono PCM from `from_hz` to `to_hz` with rubato's synchronous FFT resampler
/// (`FftFixedInOut`) over the whole buffer. The output has `round(len * to_hz / from_hz)`
/// samples, aligned with the input (the resampler delay is removed). Identity when the
/// rates are equal.
pub fn resample(samples: &[f32], from_hz: u32, to_hz: u32) -> Result<Vec<f32>, FeatureError> {
    if from_hz == to_hz {
        return Ok(samples.to_vec());
    }
    if from_hz == 0 || to_hz == 0 {
        return Err(FeatureError::Resample(format!(
            "cannot resample from {from_hz} Hz to {to_hz} Hz: rates must be positive"
        )));
    }
    let expected = ((samples.len() as u128 * u128::from(to_hz) + u128::from(from_hz) / 2)
        / u128::from(from_hz)) as usize;
    if samples.is_empty() {
        return Ok(Vec::new());
    }
    let fail = |what: String| FeatureError::Resample(format!("{from_hz} Hz → {to_hz} Hz: {what}"));
    let mut resampler = FftFixedInOut::<f32>::new(from_hz as usize, to_hz as usize, 1024, 1)
        .map_err(|e| fail(e.to_string()))?;
    let delay = resampler.output_delay();
    let mut out = Vec::with_capacity(expected + delay + resampler.output_frames_max());
    let mut chunk = vec![0.0f32; resampler.input_frames_max()];
    let mut pos = 0;
    while out.len() < expected + delay {
        let need = resampler.input_frames_next();
        chunk.resize(need, 0.0);
        let take = samples.len().saturating_sub(pos).min(need);
        chunk[..take].copy_from_slice(&samples[pos..pos + take]);
        chunk[take..].fill(0.0);
        pos += take;
        let produced = resampler
            .process(&[&chunk], None)
            .map_err(|e| fail(e.to_string()))?;
        match produced.first() {
            Some(channel) if !channel.is_empty() => out.extend_from_slice(channel),
            _ => return Err(fail("resampler produced no output".to_string())),
        }
    }
    out.drain(..delay);
    out.truncate(expected);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq_hz: f32, rate_hz: u32, len: usize, amp: f32) -> Vec<f32> {
        (0..len)
            .map(|n| amp * (2.0 * std::f32::consts::PI * freq_hz * n as f32 / rate_hz as f32).sin())
            .collect()
    }

    fn sign_changes(x: &[f32]) -> usize {
        x.windows(2)
            .filter(|w| (w[0] >= 0.0) != (w[1] >= 0.0))
            .count()
    }

    #[test]
    fn default_kws_gives_49_by_40() {
        let spec = AudioSpec::default_kws();
        assert_eq!(spec.frames(), 49);
        let clip = Clip {
            samples: sine(440.0, 16_000, 16_000, 0.3),
            sample_rate_hz: 16_000,
        };
        assert_eq!(spec.log_mel(&clip).expect("log-mel").len(), 49 * 40);
        assert_eq!(spec.tensor(&clip).expect("tensor").len(), 49 * 40);
    }

    #[test]
    fn one_khz_sine_peaks_in_the_band_containing_1khz() {
        let spec = AudioSpec::default_kws();
        let mut lm = spec.extractor().expect("extractor");
        let out = lm
            .compute(&sine(1000.0, 16_000, 16_000, 0.5))
            .expect("log-mel");
        let centres = lm.band_centres_hz();
        let expected = centres
            .iter()
            .enumerate()
            .min_by(|a, b| (a.1 - 1000.0).abs().total_cmp(&(b.1 - 1000.0).abs()))
            .map(|(j, _)| j)
            .expect("bands");
        for (t, frame) in out.chunks(40).enumerate() {
            let peak = frame
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(j, _)| j)
                .expect("frame");
            assert_eq!(peak, expected, "frame {t}: {frame:?}");
        }
        // The peak stands well above distant bands.
        assert!(out[expected] - out[0] > 10.0, "{:?}", &out[..40]);
    }

    #[test]
    fn silence_gives_log_of_floor_everywhere() {
        let spec = AudioSpec::default_kws();
        let clip = Clip {
            samples: vec![0.0; 16_000],
            sample_rate_hz: 16_000,
        };
        let out = spec.log_mel(&clip).expect("log-mel");
        let floor = 1e-6f32.ln();
        assert_eq!(out.len(), 49 * 40);
        assert!(
            out.iter().all(|&v| (v - floor).abs() < 1e-5),
            "{:?}",
            &out[..4]
        );
    }

    #[test]
    fn short_clip_is_zero_padded_and_long_clip_truncated() {
        let spec = AudioSpec::default_kws();
        let mut lm = spec.extractor().expect("extractor");
        let tone = sine(1000.0, 16_000, 20_000, 0.5);
        let full = lm.compute(&tone[..16_000]).expect("full");
        assert_eq!(lm.compute(&tone).expect("long"), full);
        let short = lm.compute(&tone[..8000]).expect("short");
        assert_eq!(short.len(), 49 * 40);
        let floor = 1e-6f32.ln();
        assert!(short[48 * 40..].iter().all(|&v| (v - floor).abs() < 1e-5));
        assert_eq!(short[..10 * 40], full[..10 * 40]);
    }

    #[test]
    fn tensor_applies_mean_and_std() {
        let mut spec = AudioSpec::default_kws();
        spec.mean = -10.0;
        spec.std = 2.0;
        let clip = Clip {
            samples: sine(300.0, 16_000, 16_000, 0.1),
            sample_rate_hz: 16_000,
        };
        let raw = spec.log_mel(&clip).expect("log-mel");
        let norm = spec.tensor(&clip).expect("tensor");
        for (r, n) in raw.iter().zip(&norm) {
            assert!((n - (r + 10.0) / 2.0).abs() < 1e-5);
        }
    }

    #[test]
    fn log_mel_resamples_other_rates() {
        let spec = AudioSpec::default_kws();
        let at_48k = Clip {
            samples: sine(1000.0, 48_000, 48_000, 0.5),
            sample_rate_hz: 48_000,
        };
        let at_16k = Clip {
            samples: sine(1000.0, 16_000, 16_000, 0.5),
            sample_rate_hz: 16_000,
        };
        let a = spec.log_mel(&at_48k).expect("48k");
        let b = spec.log_mel(&at_16k).expect("16k");
        assert_eq!(a.len(), b.len());
        // Middle frames agree closely in the loud bands.
        let mid = 24 * 40;
        let peak = (0..40)
            .max_by(|&i, &j| b[mid + i].total_cmp(&b[mid + j]))
            .expect("bands");
        assert!(
            (a[mid + peak] - b[mid + peak]).abs() < 0.1,
            "{} vs {}",
            a[mid + peak],
            b[mid + peak]
        );
    }

    #[test]
    fn resample_48k_sine_to_16k_keeps_frequency_and_length_ratio() {
        let input = sine(440.0, 48_000, 48_000, 0.5);
        let out = resample(&input, 48_000, 16_000).expect("resample");
        assert_eq!(out.len(), 16_000);
        // 440 Hz over 1 s: 880 zero crossings.
        let crossings = sign_changes(&out);
        assert!((878..=882).contains(&crossings), "{crossings} crossings");
        // Amplitude is preserved away from the edges, and phase is aligned with the input.
        let mid = &out[2000..14_000];
        let rms = (mid.iter().map(|x| x * x).sum::<f32>() / mid.len() as f32).sqrt();
        assert!((rms - 0.5 / 2f32.sqrt()).abs() < 0.01, "rms {rms}");
        for n in (4000..12_000).step_by(997) {
            assert!((out[n] - input[3 * n]).abs() < 0.01, "sample {n}");
        }
    }

    #[test]
    fn resample_handles_non_integer_ratios_and_identity() {
        let input = sine(440.0, 44_100, 22_050, 0.5);
        let out = resample(&input, 44_100, 16_000).expect("resample");
        assert_eq!(out.len(), 8000);
        let crossings = sign_changes(&out);
        assert!((438..=442).contains(&crossings), "{crossings} crossings");
        assert_eq!(resample(&input, 44_100, 44_100).expect("identity"), input);
        assert!(resample(&input, 0, 16_000).is_err());
    }

    #[test]
    fn validate_rejects_inconsistent_specs() {
        let mut spec = AudioSpec::default_kws();
        spec.window_samples = 600;
        spec.clip_samples = 500;
        spec.std = 0.0;
        let msg = spec.validate().expect_err("bad spec").to_string();
        assert!(
            msg.contains("n_fft 512 is smaller than window_samples 600"),
            "{msg}"
        );
        assert!(msg.contains("clip_samples 500"), "{msg}");
        assert!(msg.contains("std"), "{msg}");
        let mut spec = AudioSpec::default_kws();
        spec.n_mels = 200;
        let msg = spec.validate().expect_err("too many mels").to_string();
        assert!(msg.contains("cover no FFT bin"), "{msg}");
        let mut spec = AudioSpec::default_kws();
        spec.hop_samples = 0;
        assert_eq!(spec.frames(), 0);
        assert!(
            spec.log_mel(&Clip {
                samples: vec![],
                sample_rate_hz: 16_000
            })
            .is_err()
        );
    }
}
