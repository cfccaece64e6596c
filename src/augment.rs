//! Label-preserving augmentation, applied before the joint-label transforms (LSSKD.md §3):
//! crop + horizontal flip for images (on the normalised CHW tensor), and for audio time
//! shift, speed change, gain and noise on the waveform plus SpecAugment masks on the
//! normalised log-mel.

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
}
