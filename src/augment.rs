//! Label-preserving augmentation, applied before the joint-label transforms (LSSKD.md §3):
//! crop + horizontal flip for images (on the normalised CHW tensor), and for audio time
//! shift, speed change, gain and noise on the waveform plus SpecAugment masks on the
//! normalised log-mel. For sounds heard by a room microphone, [`AudioAugment::room`] adds
//! reverberation, background beds mixed at a drawn SNR and band-limiting; and
//! [`BedMix::background`] draws the windows of a background class (beds alone, or
//! near-silence).

use rand::Rng;
use serde::{Deserialize, Serialize};

/// Image augmentation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageAugment {
    /// Random crop after zero-padding by this many pixels (0: off).
    pub crop_padding: usize,
    /// Mirror left-right with probability 0.5.
    pub hflip: bool,
    /// Rotation drawn from ±rotate_deg degrees about the centre (0: off).
    #[serde(default)]
    pub rotate_deg: f32,
    /// Scale factor drawn from [1 − scale, 1 + scale] (0: off).
    #[serde(default)]
    pub scale: f32,
}

/// Audio augmentation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioAugment {
    /// Maximum circular-free time shift, milliseconds (zero-filled).
    pub shift_ms: f32,
    /// Speed factor drawn from [1 − s, 1 + s] (resampling by linear interpolation).
    pub speed: f32,
    /// Gain drawn from ±gain_db.
    pub gain_db: f32,
    /// White noise amplitude drawn from [0, noise] (relative to full scale), with p = 0.5.
    pub noise: f32,
    /// One time mask of up to this many frames and one frequency mask of up to this many bins.
    pub time_mask: usize,
    pub freq_mask: usize,
    /// Background beds mixed under the clip (`train --noise-beds`); none: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beds: Option<BedMix>,
    /// A random low-pass / high-pass (`train --mic-augment`); none: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub band_limit: Option<BandLimit>,
    /// Convolution with a decaying noise impulse (`train --mic-augment`); none: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverb: Option<Reverb>,
}

/// Mixing a random 1-s segment of a random background bed under a clip, as the data set's
/// noisy splits are made: SNR drawn uniformly from `snr_db`, the signal's power the mean
/// power of its active frames ([`active_power`]), the mix re-normalised to the clip's peak.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BedMix {
    /// Probability that a draw is mixed.
    pub p: f32,
    /// SNR range, dB.
    pub snr_db: [f32; 2],
    /// Background-class windows: probability of a bed segment (else near-silence:
    /// white noise at -90 to -50 dBFS peak).
    pub background_bed_p: f32,
    /// Background-class windows: peak level range, dBFS.
    pub background_peak_dbfs: [f32; 2],
}

/// A random band limit: with probability `p` a low-pass with its cut-off drawn from
/// `lowpass_hz`, and independently with probability `p` a high-pass from `highpass_hz`
/// (each two cascaded RBJ biquads, 24 dB per octave).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BandLimit {
    pub p: f32,
    pub lowpass_hz: [f32; 2],
    pub highpass_hz: [f32; 2],
}

/// Reverberation: with probability `p`, convolution with a direct path plus a velvet-noise
/// tail (sparse ±1 taps, `density_per_s`, a cheap stand-in for dense noise) decaying by
/// 60 dB over a time drawn from `rt60_ms`, its energy relative to the direct path drawn
/// from `wet_db`; re-normalised to the clip's peak.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reverb {
    pub p: f32,
    pub rt60_ms: [f32; 2],
    pub wet_db: [f32; 2],
    pub density_per_s: f32,
}

impl Default for BedMix {
    fn default() -> Self {
        Self {
            p: 0.8,
            snr_db: [0.0, 20.0],
            background_bed_p: 0.85,
            background_peak_dbfs: [-45.0, -3.0],
        }
    }
}

impl Default for BandLimit {
    fn default() -> Self {
        Self {
            p: 0.3,
            lowpass_hz: [2500.0, 7000.0],
            highpass_hz: [80.0, 400.0],
        }
    }
}

impl Default for Reverb {
    fn default() -> Self {
        Self {
            p: 0.4,
            rt60_ms: [100.0, 500.0],
            wet_db: [-12.0, 0.0],
            density_per_s: 2000.0,
        }
    }
}

impl Default for ImageAugment {
    fn default() -> Self {
        Self {
            crop_padding: 2,
            hflip: true,
            rotate_deg: 0.0,
            scale: 0.0,
        }
    }
}

impl Default for AudioAugment {
    fn default() -> Self {
        Self {
            shift_ms: 100.0,
            speed: 0.1,
            gain_db: 6.0,
            noise: 0.005,
            time_mask: 6,
            freq_mask: 5,
            beds: None,
            band_limit: None,
            reverb: None,
        }
    }
}

impl ImageAugment {
    /// Augment a normalised `[c, h, w]` tensor; `fill[c]` is the value of a black pixel.
    pub fn apply<R: Rng>(
        &self,
        x: &[f32],
        [c, h, w]: [usize; 3],
        fill: &[f32],
        rng: &mut R,
    ) -> Vec<f32> {
        let p = self.crop_padding as i64;
        let (dy, dx) = if p > 0 {
            (rng.random_range(-p..=p), rng.random_range(-p..=p))
        } else {
            (0, 0)
        };
        let mirror = self.hflip && rng.random_bool(0.5);
        let angle = if self.rotate_deg > 0.0 {
            rng.random_range(-self.rotate_deg..=self.rotate_deg)
                .to_radians()
        } else {
            0.0
        };
        let zoom = if self.scale > 0.0 {
            rng.random_range(1.0 - self.scale..=1.0 + self.scale)
        } else {
            1.0
        };
        let mut out = vec![0.0; x.len()];
        // Inverse map of output pixel → source point: undo the shift, then the rotation
        // and zoom about the centre; bilinear, `fill` outside. Without rotation and zoom the
        // source points are whole pixels and the weights 1 and 0: a plain shifted copy.
        let (sin, cos) = angle.sin_cos();
        let (cy, cx) = ((h as f32 - 1.0) / 2.0, (w as f32 - 1.0) / 2.0);
        for r in 0..h {
            for col in 0..w {
                let oc = if mirror { w - 1 - col } else { col };
                let (y, xx) = (r as f32 - cy + dy as f32, oc as f32 - cx + dx as f32);
                let sy = (cos * y - sin * xx) / zoom + cy;
                let sx = (sin * y + cos * xx) / zoom + cx;
                let (y0, x0) = (sy.floor(), sx.floor());
                let (ty, tx) = (sy - y0, sx - x0);
                for ch in 0..c {
                    let at = |yy: f32, xq: f32| {
                        if yy >= 0.0 && xq >= 0.0 && yy < h as f32 && xq < w as f32 {
                            x[(ch * h + yy as usize) * w + xq as usize]
                        } else {
                            fill[ch]
                        }
                    };
                    out[(ch * h + r) * w + col] = at(y0, x0) * (1.0 - ty) * (1.0 - tx)
                        + at(y0, x0 + 1.0) * (1.0 - ty) * tx
                        + at(y0 + 1.0, x0) * ty * (1.0 - tx)
                        + at(y0 + 1.0, x0 + 1.0) * ty * tx;
                }
            }
        }
        out
    }
}

impl AudioAugment {
    /// Augment a waveform (same length out as in).
    pub fn waveform<R: Rng>(&self, pcm: &[f32], sample_rate_hz: u32, rng: &mut R) -> Vec<f32> {
        let n = pcm.len();
        // Speed: read the source at rate `f`, centred on the clip.
        let f = 1.0 + rng.random_range(-self.speed..=self.speed);
        let centre = n as f32 / 2.0;
        let shift = (self.shift_ms / 1000.0 * sample_rate_hz as f32) as i64;
        let shift = if shift > 0 {
            rng.random_range(-shift..=shift)
        } else {
            0
        };
        let gain = 10f32.powf(rng.random_range(-self.gain_db..=self.gain_db) / 20.0);
        let noise = if self.noise > 0.0 && rng.random_bool(0.5) {
            rng.random_range(0.0..self.noise)
        } else {
            0.0
        };
        (0..n)
            .map(|i| {
                let src = centre + (i as f32 - centre - shift as f32) * f;
                let v = if src >= 0.0 && src < (n - 1) as f32 {
                    let k = src as usize;
                    let t = src - k as f32;
                    pcm[k] * (1.0 - t) + pcm[k + 1] * t
                } else {
                    0.0
                };
                let v = v * gain
                    + if noise > 0.0 {
                        rng.random_range(-noise..noise)
                    } else {
                        0.0
                    };
                v.clamp(-1.0, 1.0)
            })
            .collect()
    }

    /// The room on top of [`AudioAugment::waveform`]: reverberation of the clip, then a
    /// bed mixed under it, then a band limit (the microphone hears the mix). Each part only
    /// draws from `rng` when it is switched on, so switching none on changes nothing.
    pub fn room<R: Rng>(
        &self,
        pcm: &[f32],
        sample_rate_hz: u32,
        beds: &[Vec<f32>],
        rng: &mut R,
    ) -> Vec<f32> {
        let mut x = pcm.to_vec();
        if let Some(r) = &self.reverb {
            x = r.apply(&x, sample_rate_hz, rng);
        }
        if let Some(b) = &self.beds {
            x = b.apply(&x, beds, sample_rate_hz, rng);
        }
        if let Some(b) = &self.band_limit {
            x = b.apply(&x, sample_rate_hz, rng);
        }
        for v in &mut x {
            *v = v.clamp(-1.0, 1.0);
        }
        x
    }

    /// SpecAugment on a normalised `[1, t, f]` log-mel: masked cells get `fill`.
    pub fn spec_masks<R: Rng>(&self, x: &mut [f32], t: usize, f: usize, fill: f32, rng: &mut R) {
        if self.time_mask > 0 {
            let len = rng.random_range(0..=self.time_mask.min(t));
            let start = rng.random_range(0..=t - len);
            for row in start..start + len {
                x[row * f..(row + 1) * f].fill(fill);
            }
        }
        if self.freq_mask > 0 {
            let len = rng.random_range(0..=self.freq_mask.min(f));
            let start = rng.random_range(0..=f - len);
            for row in 0..t {
                x[row * f + start..row * f + start + len].fill(fill);
            }
        }
    }
}

impl BedMix {
    /// Mix a random segment of a random bed under `pcm` with probability `p` (no beds: `pcm`).
    pub fn apply<R: Rng>(
        &self,
        pcm: &[f32],
        beds: &[Vec<f32>],
        sample_rate_hz: u32,
        rng: &mut R,
    ) -> Vec<f32> {
        if beds.is_empty() || !rng.random_bool(f64::from(self.p.clamp(0.0, 1.0))) {
            return pcm.to_vec();
        }
        let noise = segment(beds, pcm.len(), rng);
        let snr_db = draw(self.snr_db, rng);
        mix_at_snr(pcm, &noise, snr_db, sample_rate_hz)
    }

    /// One window of `len` samples for the background class: a random bed segment with
    /// probability `background_bed_p` (always without beds: else near-silence), at a peak
    /// level drawn from `background_peak_dbfs`.
    pub fn background<R: Rng>(&self, beds: &[Vec<f32>], len: usize, rng: &mut R) -> Vec<f32> {
        let p_bed = if beds.is_empty() {
            0.0
        } else {
            self.background_bed_p.clamp(0.0, 1.0)
        };
        let (mut x, peak_dbfs) = if rng.random_bool(f64::from(p_bed)) {
            (
                segment(beds, len, rng),
                draw(self.background_peak_dbfs, rng),
            )
        } else {
            let x = (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            (x, rng.random_range(-90.0f32..-50.0))
        };
        let peak = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        if peak > 0.0 {
            let g = 10f32.powf(peak_dbfs / 20.0) / peak;
            for v in &mut x {
                *v *= g;
            }
        }
        x
    }
}

impl BandLimit {
    /// With probability `p` each: a low-pass and a high-pass at drawn cut-offs.
    pub fn apply<R: Rng>(&self, pcm: &[f32], sample_rate_hz: u32, rng: &mut R) -> Vec<f32> {
        let p = f64::from(self.p.clamp(0.0, 1.0));
        let mut x = pcm.to_vec();
        if rng.random_bool(p) {
            x = lowpass(&x, sample_rate_hz, draw(self.lowpass_hz, rng));
        }
        if rng.random_bool(p) {
            x = highpass(&x, sample_rate_hz, draw(self.highpass_hz, rng));
        }
        x
    }
}

impl Reverb {
    /// With probability `p`: `pcm` convolved with a drawn impulse (same length out).
    pub fn apply<R: Rng>(&self, pcm: &[f32], sample_rate_hz: u32, rng: &mut R) -> Vec<f32> {
        if !rng.random_bool(f64::from(self.p.clamp(0.0, 1.0))) {
            return pcm.to_vec();
        }
        let rt60_s = draw(self.rt60_ms, rng) / 1000.0;
        let wet_db = draw(self.wet_db, rng);
        let taps = velvet_tail(rt60_s, wet_db, self.density_per_s, sample_rate_hz, rng);
        convolve_sparse(pcm, &taps)
    }
}

/// A value drawn uniformly from `[lo, hi]` (`lo` when the range is empty).
fn draw<R: Rng>([lo, hi]: [f32; 2], rng: &mut R) -> f32 {
    if hi > lo {
        rng.random_range(lo..=hi)
    } else {
        lo
    }
}

/// `len` samples from a random offset of a random bed (a shorter bed repeats).
fn segment<R: Rng>(beds: &[Vec<f32>], len: usize, rng: &mut R) -> Vec<f32> {
    let bed = &beds[rng.random_range(0..beds.len())];
    if bed.is_empty() {
        return vec![0.0; len];
    }
    let start = if bed.len() > len {
        rng.random_range(0..=bed.len() - len)
    } else {
        0
    };
    (0..len).map(|i| bed[(start + i) % bed.len()]).collect()
}

/// Mean power of the active 20-ms frames of `pcm`: those within 20 dB of its loudest
/// frame (the data set's definition of a clip's signal power).
pub fn active_power(pcm: &[f32], sample_rate_hz: u32) -> f32 {
    let frame = (sample_rate_hz as usize / 50).max(1);
    let powers: Vec<f32> = pcm
        .chunks(frame)
        .map(|c| c.iter().map(|v| v * v).sum::<f32>() / c.len() as f32)
        .collect();
    let loudest = powers.iter().copied().fold(0.0f32, f32::max);
    let active: Vec<f32> = powers
        .into_iter()
        .filter(|&p| p > 0.0 && p >= loudest * 0.01)
        .collect();
    if active.is_empty() {
        0.0
    } else {
        active.iter().sum::<f32>() / active.len() as f32
    }
}

/// `clean` plus `noise` scaled to `snr_db` below the clean clip's active power, the sum
/// re-normalised to the clean clip's peak. A silent clip or silent noise is returned as is.
pub fn mix_at_snr(clean: &[f32], noise: &[f32], snr_db: f32, sample_rate_hz: u32) -> Vec<f32> {
    let signal = active_power(clean, sample_rate_hz);
    let noise_power = noise.iter().map(|v| v * v).sum::<f32>() / noise.len().max(1) as f32;
    if signal <= 0.0 || noise_power <= 0.0 {
        return clean.to_vec();
    }
    let g = (signal / noise_power / 10f32.powf(snr_db / 10.0)).sqrt();
    let mut mix: Vec<f32> = clean.iter().zip(noise).map(|(c, n)| c + g * n).collect();
    let peak_clean = clean.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let peak_mix = mix.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if peak_mix > 0.0 {
        let k = peak_clean / peak_mix;
        for v in &mut mix {
            *v *= k;
        }
    }
    mix
}

/// RBJ biquad coefficients `[b0, b1, b2, a1, a2]` (normalised by a0), Q = 1/√2.
fn biquad(sample_rate_hz: u32, cutoff_hz: f32, high: bool) -> [f32; 5] {
    let nyquist = sample_rate_hz as f32 / 2.0;
    let w0 = std::f32::consts::TAU * cutoff_hz.clamp(1.0, nyquist * 0.99) / sample_rate_hz as f32;
    let (sin, cos) = w0.sin_cos();
    let alpha = sin / std::f32::consts::SQRT_2;
    let a0 = 1.0 + alpha;
    let (b0, b1) = if high {
        ((1.0 + cos) / 2.0, -(1.0 + cos))
    } else {
        ((1.0 - cos) / 2.0, 1.0 - cos)
    };
    [
        b0 / a0,
        b1 / a0,
        b0 / a0,
        -2.0 * cos / a0,
        (1.0 - alpha) / a0,
    ]
}

/// Two passes of a biquad (24 dB per octave beyond the cut-off).
fn filter2(pcm: &[f32], [b0, b1, b2, a1, a2]: [f32; 5]) -> Vec<f32> {
    let mut x = pcm.to_vec();
    for _ in 0..2 {
        let (mut x1, mut x2, mut y1, mut y2) = (0.0f32, 0.0f32, 0.0f32, 0.0f32);
        for v in &mut x {
            let y = b0 * *v + b1 * x1 + b2 * x2 - a1 * y1 - a2 * y2;
            (x2, x1, y2, y1) = (x1, *v, y1, y);
            *v = y;
        }
    }
    x
}

/// Low-pass at `cutoff_hz` (24 dB per octave).
pub fn lowpass(pcm: &[f32], sample_rate_hz: u32, cutoff_hz: f32) -> Vec<f32> {
    filter2(pcm, biquad(sample_rate_hz, cutoff_hz, false))
}

/// High-pass at `cutoff_hz` (24 dB per octave).
pub fn highpass(pcm: &[f32], sample_rate_hz: u32, cutoff_hz: f32) -> Vec<f32> {
    filter2(pcm, biquad(sample_rate_hz, cutoff_hz, true))
}

/// A reverberation impulse as sparse taps `(delay in samples, weight)`: the direct path
/// (0, 1), then one ±1 tap at a random place in every `1/density` window up to `rt60_s`,
/// decaying by 60 dB over `rt60_s`, scaled so that the tail's energy is `wet_db` relative
/// to the direct path.
fn velvet_tail<R: Rng>(
    rt60_s: f32,
    wet_db: f32,
    density_per_s: f32,
    sample_rate_hz: u32,
    rng: &mut R,
) -> Vec<(usize, f32)> {
    let len = (rt60_s * sample_rate_hz as f32) as usize;
    let spacing = ((sample_rate_hz as f32 / density_per_s.max(1.0)) as usize).max(1);
    let mut taps = vec![(0usize, 1.0f32)];
    let mut at = 1;
    while at < len {
        let d = at + rng.random_range(0..spacing);
        let sign = if rng.random_bool(0.5) { 1.0 } else { -1.0 };
        // 60 dB over len: amplitude 10^(-3 d / len).
        taps.push((d, sign * 10f32.powf(-3.0 * d as f32 / len as f32)));
        at += spacing;
    }
    let tail: f32 = taps[1..].iter().map(|(_, w)| w * w).sum();
    if tail > 0.0 {
        let g = (10f32.powf(wet_db / 10.0) / tail).sqrt();
        for t in &mut taps[1..] {
            t.1 *= g;
        }
    }
    taps
}

/// `pcm` convolved with sparse `taps` (same length out), re-normalised to `pcm`'s peak.
fn convolve_sparse(pcm: &[f32], taps: &[(usize, f32)]) -> Vec<f32> {
    let mut out = vec![0.0f32; pcm.len()];
    for &(d, w) in taps {
        if d >= pcm.len() {
            continue;
        }
        for (o, x) in out[d..].iter_mut().zip(pcm) {
            *o += w * x;
        }
    }
    let peak_in = pcm.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let peak_out = out.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if peak_out > 0.0 {
        let k = peak_in / peak_out;
        for v in &mut out {
            *v *= k;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn image_crop_shifts_content_and_fills_border() {
        let aug = ImageAugment {
            crop_padding: 1,
            hflip: false,
            ..ImageAugment::default()
        };
        let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let mut rng = StdRng::seed_from_u64(3);
        let mut saw_fill = false;
        for _ in 0..20 {
            let y = aug.apply(&x, [1, 3, 3], &[-1.0], &mut rng);
            assert_eq!(y.len(), 9);
            saw_fill |= y.contains(&-1.0);
            // Every non-fill value comes from the input.
            assert!(y.iter().all(|v| *v == -1.0 || x.contains(v)));
        }
        assert!(saw_fill);
    }

    #[test]
    fn image_affine_identity_and_rotation() {
        // A bright vertical bar in a 9×9 image.
        let mut x = vec![0.0f32; 81];
        for r in 1..8 {
            x[r * 9 + 4] = 1.0;
        }
        let mut rng = StdRng::seed_from_u64(0);
        // Rotation by (almost) exactly 90°: the bar becomes horizontal.
        let aug = ImageAugment {
            crop_padding: 0,
            hflip: false,
            rotate_deg: 90.0,
            scale: 0.0,
        };
        let mut saw_horizontal = false;
        for _ in 0..200 {
            let y = aug.apply(&x, [1, 9, 9], &[0.0], &mut rng);
            assert!(y.iter().all(|v| (0.0..=1.0 + 1e-5).contains(v)));
            let row: f32 = y[4 * 9 + 1..4 * 9 + 8].iter().sum();
            let col: f32 = (1..8).map(|r| y[r * 9 + 4]).sum();
            saw_horizontal |= row > 6.0 && col < 2.0;
        }
        assert!(saw_horizontal);
        // A tiny zoom keeps the picture almost as it is.
        let zoom = ImageAugment {
            crop_padding: 0,
            hflip: false,
            rotate_deg: 0.0,
            scale: 1e-4,
        };
        let y = zoom.apply(&x, [1, 9, 9], &[0.0], &mut rng);
        assert!(y.iter().zip(&x).all(|(a, b)| (a - b).abs() < 1e-2));
    }

    #[test]
    fn audio_waveform_keeps_length_and_range() {
        let aug = AudioAugment::default();
        let pcm: Vec<f32> = (0..16000).map(|i| (i as f32 * 0.05).sin() * 0.9).collect();
        let mut rng = StdRng::seed_from_u64(1);
        let y = aug.waveform(&pcm, 16000, &mut rng);
        assert_eq!(y.len(), pcm.len());
        assert!(y.iter().all(|v| (-1.0..=1.0).contains(v)));
        assert_ne!(y, pcm);
    }

    #[test]
    fn spec_masks_only_write_fill_value() {
        let aug = AudioAugment::default();
        let mut x = vec![5.0; 49 * 40];
        let mut rng = StdRng::seed_from_u64(2);
        aug.spec_masks(&mut x, 49, 40, 0.0, &mut rng);
        assert!(x.iter().all(|&v| v == 5.0 || v == 0.0));
    }

    fn white(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-0.5f32..0.5)).collect()
    }

    fn tone(hz: f32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| 0.5 * (std::f32::consts::TAU * hz * i as f32 / 16000.0).sin())
            .collect()
    }

    fn power(x: &[f32]) -> f32 {
        x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32
    }

    /// A 1-s clip: a 300-ms tone in the middle, silence around it.
    fn burst() -> Vec<f32> {
        let mut x = vec![0.0f32; 16000];
        x[6000..10800].copy_from_slice(&tone(440.0, 4800));
        x
    }

    /// The SNR of `mix` = k·(clean + noise): k from the projection on `clean`.
    fn measured_snr_db(mix: &[f32], clean: &[f32]) -> f32 {
        let k = mix.iter().zip(clean).map(|(m, c)| m * c).sum::<f32>()
            / clean.iter().map(|c| c * c).sum::<f32>();
        let noise: Vec<f32> = mix.iter().zip(clean).map(|(m, c)| m - k * c).collect();
        let signal: Vec<f32> = clean.iter().map(|c| k * c).collect();
        10.0 * (active_power(&signal, 16000) / power(&noise)).log10()
    }

    #[test]
    fn active_power_counts_only_frames_near_the_loudest() {
        let x = burst();
        // The tone's power (0.125) is the active frames' mean; the silence does not count.
        assert!((active_power(&x, 16000) - 0.125).abs() < 0.01);
        assert_eq!(active_power(&[0.0; 320], 16000), 0.0);
    }

    #[test]
    fn bed_mix_lands_within_the_requested_snr_and_keeps_the_peak() {
        let clean = burst();
        let beds = vec![white(40_000, 7), white(12_000, 8)];
        let mix = BedMix {
            p: 1.0,
            snr_db: [0.0, 20.0],
            ..BedMix::default()
        };
        let mut rng = StdRng::seed_from_u64(3);
        let mut seen = Vec::new();
        for _ in 0..40 {
            let y = mix.apply(&clean, &beds, 16000, &mut rng);
            assert_eq!(y.len(), clean.len());
            let peak = y.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert!((peak - 0.5).abs() < 1e-3, "peak {peak}");
            let snr = measured_snr_db(&y, &clean);
            assert!((-0.5..=20.5).contains(&snr), "snr {snr}");
            seen.push(snr);
        }
        // The draws cover the range, not one point of it.
        assert!(seen.iter().any(|&s| s < 5.0) && seen.iter().any(|&s| s > 15.0));
        // One asked-for SNR comes out as asked.
        let y = mix_at_snr(&clean, &beds[0][..16000], 10.0, 16000);
        assert!((measured_snr_db(&y, &clean) - 10.0).abs() < 0.5);
    }

    #[test]
    fn bed_mix_with_p_zero_or_no_beds_leaves_the_clip() {
        let clean = burst();
        let mut rng = StdRng::seed_from_u64(0);
        let off = BedMix {
            p: 0.0,
            ..BedMix::default()
        };
        assert_eq!(
            off.apply(&clean, &[white(16000, 1)], 16000, &mut rng),
            clean
        );
        assert_eq!(BedMix::default().apply(&clean, &[], 16000, &mut rng), clean);
    }

    #[test]
    fn band_limit_removes_energy_beyond_the_cut_off() {
        let n = 16000;
        // Low-pass at 2 kHz: 6 kHz (1.6 octaves above) loses > 30 dB, 300 Hz < 1 dB.
        let high = lowpass(&tone(6000.0, n), 16000, 2000.0);
        let low = lowpass(&tone(300.0, n), 16000, 2000.0);
        let db = |y: &[f32]| 10.0 * (power(&y[1000..]) / 0.125).log10();
        assert!(
            db(&high) < -30.0,
            "6 kHz through a 2 kHz low-pass: {} dB",
            db(&high)
        );
        assert!(
            db(&low) > -1.0,
            "300 Hz through a 2 kHz low-pass: {} dB",
            db(&low)
        );
        // High-pass at 400 Hz: 100 Hz (2 octaves below) loses > 30 dB, 3 kHz < 1 dB.
        let below = highpass(&tone(100.0, n), 16000, 400.0);
        let above = highpass(&tone(3000.0, n), 16000, 400.0);
        assert!(db(&below) < -30.0, "{} dB", db(&below));
        assert!(db(&above) > -1.0, "{} dB", db(&above));
        // Through the settings: always on, the cut-offs fixed.
        let b = BandLimit {
            p: 1.0,
            lowpass_hz: [2000.0, 2000.0],
            highpass_hz: [400.0, 400.0],
        };
        let y = b.apply(&tone(6000.0, n), 16000, &mut StdRng::seed_from_u64(0));
        assert!(db(&y) < -30.0);
    }

    #[test]
    fn reverb_lengthens_the_tail() {
        let x = burst();
        let r = Reverb {
            p: 1.0,
            rt60_ms: [400.0, 400.0],
            wet_db: [0.0, 0.0],
            ..Reverb::default()
        };
        let y = r.apply(&x, 16000, &mut StdRng::seed_from_u64(5));
        assert_eq!(y.len(), x.len());
        // After the tone ends (10,800) the dry clip is silent; the reverberant one is not,
        // and its tail decays: 100-200 ms after the end louder than 300-400 ms after.
        assert_eq!(power(&x[12_400..14_000]), 0.0);
        let early = power(&y[12_400..14_000]);
        let late = power(&y[15_600..16_000]);
        assert!(early > 1e-4 * 0.125, "tail power {early}");
        assert!(late < early, "{late} !< {early}");
        let peak = y.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!((peak - 0.5).abs() < 1e-3);
    }

    #[test]
    fn background_windows_are_bed_segments_or_near_silence() {
        let mix = BedMix::default();
        let mut rng = StdRng::seed_from_u64(9);
        let beds = vec![white(30_000, 2)];
        for _ in 0..20 {
            let y = mix.background(&beds, 16000, &mut rng);
            assert_eq!(y.len(), 16000);
            let peak_dbfs = 20.0 * y.iter().fold(0.0f32, |m, v| m.max(v.abs())).log10();
            assert!((-90.1..=-2.9).contains(&peak_dbfs), "{peak_dbfs}");
        }
        // Without beds every window is near-silence.
        let y = mix.background(&[], 16000, &mut rng);
        assert!(y.iter().all(|v| v.abs() <= 10f32.powf(-50.0 / 20.0) + 1e-6));
    }

    #[test]
    fn room_is_deterministic_under_a_seed_and_off_by_default() {
        let x = burst();
        let beds = vec![white(30_000, 4)];
        let on = AudioAugment {
            beds: Some(BedMix::default()),
            band_limit: Some(BandLimit::default()),
            reverb: Some(Reverb::default()),
            ..AudioAugment::default()
        };
        let run = |seed| on.room(&x, 16000, &beds, &mut StdRng::seed_from_u64(seed));
        assert_eq!(run(1), run(1));
        assert!((0..8).any(|s| run(s) != run(s + 8)));
        // The defaults add no room and draw nothing.
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(AudioAugment::default().room(&x, 16000, &beds, &mut rng), x);
        assert_eq!(
            rng.random::<u64>(),
            StdRng::seed_from_u64(1).random::<u64>()
        );
    }
}
