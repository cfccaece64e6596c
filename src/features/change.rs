//! Where a fixed camera's view changed: a frame is compared with the view's reference (the
//! mean of frames of its empty state), after undoing the camera's small shake and its
//! changes of exposure, and the square around the largest change is cut out. A state such
//! as "a parcel on the step" is then classified from a crop where the parcel fills the
//! model's input, instead of a few pixels of a whole-view thumbnail. Owns [`ChangeLocator`].

use image::{DynamicImage, RgbImage, Rgba, RgbaImage};

use super::{FeatureError, Raw, Region};

/// Frames of a view's reference state its reference is the mean of when a data set is cut
/// for training or evaluation (a person teaching a view sends five of each state).
pub const REFERENCE_FRAMES: usize = 5;

/// Camera shake searched for, pixels each way (the data's cameras shake ±3 px and turn
/// ±1°, about 2 px at the edge of a 240 px region).
const SHIFT: i32 = 4;
/// Box-blur radius applied to both images before comparing (sensor noise, JPEG, focus).
const BLUR: usize = 2;
/// Box-blur radius of the difference map (one object is one blob).
const DIFF_BLUR: usize = 4;
/// The blob is the connected area above this fraction of the difference's peak.
const BLOB: f32 = 0.35;
/// The crop's side, as a multiple of the blob's longer side.
const MARGIN: f32 = 1.4;
/// The smallest crop side, as a fraction of the view's shorter side.
const MIN_SIDE: f32 = 0.2;
/// The change channel's value per unit of difference between the standardised lumas
/// (an object on a background differs by 1–3 units; the sensor noise left after the blur,
/// about 0.1).
pub const CHANGE_SCALE: f32 = 64.0;

/// What [`ChangeLocator::compare`] finds.
struct Change {
    /// The square around the largest change, in the frame's pixels.
    square: Region,
    /// `|frame − reference|` of the blurred, standardised lumas, in the reference's pixels.
    diff: Vec<f32>,
    /// The camera's shake: the frame shows the reference's pixel (x, y) at (x+dx, y+dy).
    shake: (i32, i32),
}

/// The reference of one view and the rule that finds where a frame differs from it.
#[derive(Debug, Clone)]
pub struct ChangeLocator {
    /// The reference frame (kept to be stored with a model version).
    frame: DynamicImage,
    /// Blurred, contrast-normalised luma of `frame`.
    reference: Vec<f32>,
}

/// The pixel-wise mean of `frames` (at least one, all the same size): a view's reference.
pub fn mean_frame(frames: &[&DynamicImage]) -> Result<DynamicImage, FeatureError> {
    let first = frames
        .first()
        .ok_or_else(|| FeatureError::Change("no reference frames".into()))?;
    let (w, h) = (first.width(), first.height());
    let mut sum = vec![0u32; (w * h * 3) as usize];
    for f in frames {
        if (f.width(), f.height()) != (w, h) {
            return Err(FeatureError::Change(format!(
                "reference frames differ in size: {}x{} and {w}x{h}",
                f.width(),
                f.height()
            )));
        }
        for (s, v) in sum.iter_mut().zip(f.to_rgb8().as_raw()) {
            *s += u32::from(*v);
        }
    }
    let n = frames.len() as u32;
    let mean = sum.iter().map(|s| ((s + n / 2) / n) as u8).collect();
    let img = RgbImage::from_raw(w, h, mean).expect("the buffer is w*h*3");
    Ok(DynamicImage::ImageRgb8(img))
}

impl ChangeLocator {
    /// A locator against `frame`, the view's reference (see [`mean_frame`]).
    pub fn new(frame: DynamicImage) -> Result<Self, FeatureError> {
        let (width, height) = (frame.width() as usize, frame.height() as usize);
        let min = 2 * SHIFT as usize + 8;
        if width < min || height < min {
            return Err(FeatureError::Change(format!(
                "the reference frame is {width}x{height}, smaller than {min}x{min}"
            )));
        }
        let mut reference = box_blur(&luma(&frame.to_rgb8()), width, height, BLUR);
        standardise(&mut reference);
        Ok(Self { frame, reference })
    }

    /// A locator against the mean of `frames`.
    pub fn from_references(frames: &[&DynamicImage]) -> Result<Self, FeatureError> {
        Self::new(mean_frame(frames)?)
    }

    /// The reference frame.
    pub fn frame(&self) -> &DynamicImage {
        &self.frame
    }

    /// `(width, height)` of the reference, the size every frame must have.
    fn size(&self) -> (usize, usize) {
        (self.frame.width() as usize, self.frame.height() as usize)
    }

    /// The square of `img` around its largest change from the reference; `img` must be
    /// the reference's size.
    pub fn locate(&self, img: &DynamicImage) -> Result<Region, FeatureError> {
        Ok(self.compare(img)?.square)
    }

    /// Where and how much `img` differs from the reference.
    fn compare(&self, img: &DynamicImage) -> Result<Change, FeatureError> {
        let (w, h) = self.size();
        if (img.width() as usize, img.height() as usize) != (w, h) {
            return Err(FeatureError::Change(format!(
                "frame is {}x{}, the view's reference {w}x{h}",
                img.width(),
                img.height()
            )));
        }
        let mut g = box_blur(&luma(&img.to_rgb8()), w, h, BLUR);
        standardise(&mut g);
        let (dx, dy) = self.shake(&g);
        let s = SHIFT as usize;
        let mut diff = vec![0f32; w * h];
        for y in s..h - s {
            for x in s..w - s {
                let moved = g[offset(y, dy) * w + offset(x, dx)];
                diff[y * w + x] = (moved - self.reference[y * w + x]).abs();
            }
        }
        let (x0, y0, x1, y1) = blob(&box_blur(&diff, w, h, DIFF_BLUR), w, h);
        let short = w.min(h) as f32;
        let side = (((x1 - x0).max(y1 - y0) + 1) as f32 * MARGIN)
            .max(short * MIN_SIDE)
            .min(short) as usize;
        // The blob is in reference coordinates; the frame's content is shifted by (dx, dy).
        let cx = (x0 + x1) as i64 / 2 + i64::from(dx);
        let cy = (y0 + y1) as i64 / 2 + i64::from(dy);
        let half = side as i64 / 2;
        let clamp = |c: i64, n: usize| (c - half).clamp(0, (n - side) as i64) as u32;
        Ok(Change {
            square: Region {
                x: clamp(cx, w),
                y: clamp(cy, h),
                width: side as u32,
                height: side as u32,
            },
            diff,
            shake: (dx, dy),
        })
    }

    /// The model's view of a frame: the square of `img` around its largest change
    /// ([`ChangeLocator::locate`]), its colour in RGB and, as a fourth (alpha) channel,
    /// how much each of its pixels differs from the reference ([`CHANGE_SCALE`]), so that
    /// the model sees both what is there and what is new.
    pub fn cut(&self, img: &DynamicImage) -> Result<DynamicImage, FeatureError> {
        let Change {
            square,
            diff,
            shake,
        } = self.compare(img)?;
        let (w, h) = self.size();
        let rgb = square.crop(img)?.to_rgb8();
        let cut = RgbaImage::from_fn(square.width, square.height, |x, y| {
            // The frame's pixel (fx, fy) shows the reference's (fx - dx, fy - dy).
            let rx = i64::from(square.x + x) - i64::from(shake.0);
            let ry = i64::from(square.y + y) - i64::from(shake.1);
            let change = if (0..w as i64).contains(&rx) && (0..h as i64).contains(&ry) {
                diff[ry as usize * w + rx as usize]
            } else {
                0.0
            };
            let [r, g, b] = rgb.get_pixel(x, y).0;
            Rgba([
                r,
                g,
                b,
                (change * CHANGE_SCALE).round().clamp(0.0, 255.0) as u8,
            ])
        });
        Ok(DynamicImage::ImageRgba8(cut))
    }

    /// An image input cut as [`ChangeLocator::cut`]; any other input as it is.
    pub fn cut_raw(&self, raw: &Raw) -> Result<Raw, FeatureError> {
        match raw {
            Raw::Image(img) => Ok(Raw::Image(self.cut(img)?)),
            Raw::Audio(_) => Ok(raw.clone()),
        }
    }

    /// The shift `(dx, dy)` that best lays `g` over the reference (sum of absolute
    /// differences on every other pixel of the interior).
    fn shake(&self, g: &[f32]) -> (i32, i32) {
        let ((w, h), s) = (self.size(), SHIFT as usize);
        let mut best = (f32::MAX, 0, 0);
        for dy in -SHIFT..=SHIFT {
            for dx in -SHIFT..=SHIFT {
                let mut e = 0f32;
                for y in (s..h - s).step_by(2) {
                    let row = offset(y, dy) * w;
                    for x in (s..w - s).step_by(2) {
                        e += (g[row + offset(x, dx)] - self.reference[y * w + x]).abs();
                    }
                }
                if e < best.0 {
                    best = (e, dx, dy);
                }
            }
        }
        (best.1, best.2)
    }
}

fn offset(i: usize, d: i32) -> usize {
    (i as i64 + i64::from(d)) as usize
}

/// Bounding box `(x0, y0, x1, y1)` (inclusive) of the 4-connected area around the peak of
/// `diff` that stays above [`BLOB`] of the peak.
fn blob(diff: &[f32], w: usize, h: usize) -> (usize, usize, usize, usize) {
    let (peak, top) = diff
        .iter()
        .copied()
        .enumerate()
        .fold((0, f32::MIN), |b, (i, v)| if v > b.1 { (i, v) } else { b });
    let threshold = top * BLOB;
    let mut seen = vec![false; w * h];
    let mut stack = vec![peak];
    seen[peak] = true;
    let (mut x0, mut y0, mut x1, mut y1) = (w, h, 0, 0);
    while let Some(i) = stack.pop() {
        let (x, y) = (i % w, i / w);
        (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
        let neighbours = [
            (x.wrapping_sub(1), y),
            (x + 1, y),
            (x, y.wrapping_sub(1)),
            (x, y + 1),
        ];
        for (nx, ny) in neighbours {
            if nx >= w || ny >= h {
                continue;
            }
            let j = ny * w + nx;
            if !seen[j] && diff[j] >= threshold {
                seen[j] = true;
                stack.push(j);
            }
        }
    }
    (x0, y0, x1, y1)
}

fn luma(img: &RgbImage) -> Vec<f32> {
    img.pixels()
        .map(|p| 0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2]))
        .collect()
}

/// Zero mean, unit standard deviation: exposure and gain changes cancel out.
fn standardise(v: &mut [f32]) {
    let n = v.len() as f32;
    let mean = v.iter().sum::<f32>() / n;
    let sd = (v.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / n)
        .sqrt()
        .max(1.0);
    v.iter_mut().for_each(|x| *x = (*x - mean) / sd);
}

/// Separable box blur of radius `r`, the window shrunk at the borders.
fn box_blur(v: &[f32], w: usize, h: usize, r: usize) -> Vec<f32> {
    let mut rows = vec![0f32; v.len()];
    for y in 0..h {
        for x in 0..w {
            let (a, b) = (x.saturating_sub(r), (x + r).min(w - 1));
            rows[y * w + x] = v[y * w + a..=y * w + b].iter().sum::<f32>() / (b - a + 1) as f32;
        }
    }
    let mut out = vec![0f32; v.len()];
    for y in 0..h {
        let (a, b) = (y.saturating_sub(r), (y + r).min(h - 1));
        for x in 0..w {
            out[y * w + x] = (a..=b).map(|k| rows[k * w + x]).sum::<f32>() / (b - a + 1) as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A textured 120x90 view, shifted by `(sx, sy)` and scaled in brightness by `gain`,
    /// with an optional bright 16x16 square at `(ox, oy)`.
    fn view(sx: i64, sy: i64, gain: f32, object: Option<(u32, u32)>) -> DynamicImage {
        let img = RgbImage::from_fn(120, 90, |x, y| {
            let (u, v) = (x as i64 + sx, y as i64 + sy);
            let t = (((u * 7) ^ (v * 13)) % 97) as f32 + 60.0 + (u % 17) as f32 * 3.0;
            let mut p = t * gain;
            if let Some((ox, oy)) = object
                && (ox..ox + 16).contains(&x)
                && (oy..oy + 16).contains(&y)
            {
                p = 250.0;
            }
            let p = p.clamp(0.0, 255.0) as u8;
            image::Rgb([p, p, p])
        });
        DynamicImage::ImageRgb8(img)
    }

    #[test]
    fn finds_the_object_through_shake_and_exposure() {
        let refs = [view(0, 0, 1.0, None), view(1, 0, 1.0, None)];
        let loc = ChangeLocator::from_references(&refs.iter().collect::<Vec<_>>()).unwrap();
        let frame = view(-3, 2, 0.7, Some((70, 40)));
        let r = loc.locate(&frame).unwrap();
        // The square holds the object's centre (78, 48) and is not the whole view.
        assert!(r.x <= 78 && 78 < r.x + r.width, "{r}");
        assert!(r.y <= 48 && 48 < r.y + r.height, "{r}");
        assert!(r.width < 60 && r.width == r.height, "{r}");
        assert_eq!(loc.cut(&frame).unwrap().width(), r.width);
    }

    #[test]
    fn frames_of_another_size_are_refused_by_name() {
        let refs = [view(0, 0, 1.0, None)];
        let loc = ChangeLocator::from_references(&refs.iter().collect::<Vec<_>>()).unwrap();
        let small = DynamicImage::new_rgb8(60, 45);
        let err = loc.locate(&small).unwrap_err().to_string();
        assert!(err.contains("60x45") && err.contains("120x90"), "{err}");
        assert!(ChangeLocator::from_references(&[]).is_err());
    }

    #[test]
    fn the_cut_carries_the_change_as_its_fourth_channel() {
        let refs = [view(0, 0, 1.0, None)];
        let loc = ChangeLocator::from_references(&refs.iter().collect::<Vec<_>>()).unwrap();
        // The scene moved: the frame's pixel (x, y) is the reference's (x - 2, y + 1).
        let frame = view(-2, 1, 1.0, Some((50, 30)));
        let r = loc.locate(&frame).unwrap();
        let cut = loc.cut(&frame).unwrap().to_rgba8();
        assert_eq!(cut.dimensions(), (r.width, r.height));
        let rgb = frame.to_rgb8();
        let at = |fx: u32, fy: u32| cut.get_pixel(fx - r.x, fy - r.y).0;
        // Colour: the frame's own pixels.
        assert_eq!(at(r.x, r.y)[..3], rgb.get_pixel(r.x, r.y).0);
        // Change: strong on the object; under one unit away from it, where the shake is
        // undone (what is left is the object's share of the frame's mean and spread).
        let (object, corner) = (at(58, 38)[3], at(r.x + 1, r.y + r.height - 2)[3]);
        assert!(
            object > 100 && corner < CHANGE_SCALE as u8,
            "{object} {corner} {r}"
        );
    }
}
