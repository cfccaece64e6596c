//! Image preprocessing: colour conversion, resize and per-channel normalisation into a
//! CHW `f32` tensor. Owns [`ImageSpec`].

use image::imageops::{self, FilterType};
use image::{DynamicImage, ImageBuffer, Pixel};
use serde::{Deserialize, Serialize};

use super::FeatureError;

/// How an image becomes a model input: `channels` (1 = luma, 3 = RGB, 4 = RGB and the
/// change from a view's reference that [`super::ChangeLocator::cut`] puts in the alpha
/// channel), target size and per-channel normalisation constants applied to pixel values
/// scaled to [0, 1].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    /// 1 (grayscale / luma), 3 (RGB) or 4 (RGB and change).
    pub channels: usize,
    /// Target height in pixels.
    pub height: usize,
    /// Target width in pixels.
    pub width: usize,
    /// Per-channel mean of [0, 1] pixel values (length `channels`).
    pub mean: Vec<f32>,
    /// Per-channel standard deviation of [0, 1] pixel values (length `channels`, all > 0).
    pub std: Vec<f32>,
}

impl ImageSpec {
    /// Convert to gray (luma), RGB or RGBA per `channels`, resize to `height`×`width`
    /// (`image::imageops`, Triangle filter; no resize when already that size), scale to
    /// [0, 1], then `(x - mean[c]) / std[c]`; CHW row-major, length `channels*height*width`.
    ///
    /// Expects a valid spec (see [`ImageSpec::validate`]); any `channels` other than 1 or 4
    /// is treated as RGB.
    pub fn tensor(&self, img: &DynamicImage) -> Vec<f32> {
        let mut out = self.unnormalised(img);
        let plane = self.height * self.width;
        if plane == 0 {
            return out;
        }
        for (c, chunk) in out.chunks_mut(plane).enumerate() {
            let mean = self.mean.get(c).copied().unwrap_or(0.0);
            let inv_std = 1.0 / self.std.get(c).copied().unwrap_or(1.0);
            for x in chunk {
                *x = (*x - mean) * inv_std;
            }
        }
        out
    }

    /// Same as [`ImageSpec::tensor`] but before normalisation (values in [0, 1]); used to
    /// compute the mean/std of a data set.
    pub fn unnormalised(&self, img: &DynamicImage) -> Vec<f32> {
        match self.channels {
            1 => planes(&img.to_luma8(), self.width, self.height),
            4 => planes(&img.to_rgba8(), self.width, self.height),
            _ => planes(&img.to_rgb8(), self.width, self.height),
        }
    }

    /// Check the spec: channels 1, 3 or 4, positive size, `mean`/`std` lengths equal to
    /// `channels`, finite values and `std > 0`. The error lists every problem.
    pub fn validate(&self) -> Result<(), FeatureError> {
        let mut problems = Vec::new();
        if ![1, 3, 4].contains(&self.channels) {
            problems.push(format!("channels is {}, must be 1, 3 or 4", self.channels));
        }
        if self.height == 0 || self.width == 0 {
            problems.push(format!(
                "size {}x{} (height x width) must be positive",
                self.height, self.width
            ));
        }
        if u32::try_from(self.height).is_err() || u32::try_from(self.width).is_err() {
            problems.push("size does not fit in u32".to_string());
        }
        if self.mean.len() != self.channels {
            problems.push(format!(
                "mean has {} values for {} channels",
                self.mean.len(),
                self.channels
            ));
        }
        if self.std.len() != self.channels {
            problems.push(format!(
                "std has {} values for {} channels",
                self.std.len(),
                self.channels
            ));
        }
        if self.mean.iter().any(|m| !m.is_finite()) {
            problems.push(format!("mean {:?} is not finite", self.mean));
        }
        if self.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            problems.push(format!("std {:?} must be finite and > 0", self.std));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(FeatureError::InvalidSpec(format!(
                "image: {}",
                problems.join("; ")
            )))
        }
    }
}

/// A region of interest: the rectangle of a camera frame (in the frame's pixels) that a
/// pipeline's model looks at. It is cut out of every frame before [`ImageSpec`] resizes it,
/// in inference, samples, label requests and training alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    /// Left edge, pixels from the frame's left.
    pub x: u32,
    /// Top edge, pixels from the frame's top.
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl Region {
    /// Why this region does not fit a `frame_width`×`frame_height` frame, if it does not.
    pub fn check(&self, frame_width: u32, frame_height: u32) -> Result<(), String> {
        if self.width == 0 || self.height == 0 {
            return Err(format!("region {self} is empty"));
        }
        let right = u64::from(self.x) + u64::from(self.width);
        let bottom = u64::from(self.y) + u64::from(self.height);
        if right > u64::from(frame_width) || bottom > u64::from(frame_height) {
            return Err(format!(
                "region {self} reaches ({right}, {bottom}), outside the {frame_width}x{frame_height} frame"
            ));
        }
        Ok(())
    }

    /// The region of `img`; an error names the region and the frame when it does not fit.
    pub fn crop(&self, img: &DynamicImage) -> Result<DynamicImage, FeatureError> {
        self.check(img.width(), img.height())
            .map_err(FeatureError::Region)?;
        Ok(img.crop_imm(self.x, self.y, self.width, self.height))
    }
}

impl std::fmt::Display for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}x{} at ({}, {})",
            self.width, self.height, self.x, self.y
        )
    }
}

/// Resize (if needed) and split an 8-bit image into [0, 1] planes, CHW.
fn planes<P>(img: &ImageBuffer<P, Vec<u8>>, width: usize, height: usize) -> Vec<f32>
where
    P: Pixel<Subpixel = u8> + 'static,
{
    let (w, h) = (
        u32::try_from(width).unwrap_or(u32::MAX),
        u32::try_from(height).unwrap_or(u32::MAX),
    );
    let resized;
    let img = if img.dimensions() == (w, h) {
        img
    } else {
        resized = imageops::resize(img, w, h, FilterType::Triangle);
        &resized
    };
    let channels = usize::from(P::CHANNEL_COUNT);
    let plane = width * height;
    let mut out = vec![0.0f32; channels * plane];
    for (i, px) in img.as_raw().chunks_exact(channels).enumerate() {
        for (c, &v) in px.iter().enumerate() {
            out[c * plane + i] = f32::from(v) / 255.0;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Luma, Rgb, RgbImage};

    fn gray_spec(h: usize, w: usize) -> ImageSpec {
        ImageSpec {
            channels: 1,
            height: h,
            width: w,
            mean: vec![0.5],
            std: vec![0.5],
        }
    }

    #[test]
    fn normalises_gray_pixels_with_mean_and_std() {
        let mut img = GrayImage::from_pixel(2, 2, Luma([0]));
        img.put_pixel(1, 0, Luma([255]));
        let t = gray_spec(2, 2).tensor(&DynamicImage::ImageLuma8(img));
        assert_eq!(t, vec![-1.0, 1.0, -1.0, -1.0]);
    }

    #[test]
    fn unnormalised_values_are_in_unit_range_and_row_major() {
        let mut img = GrayImage::from_pixel(3, 2, Luma([0]));
        img.put_pixel(2, 1, Luma([255]));
        img.put_pixel(0, 1, Luma([51]));
        let t = gray_spec(2, 3).unnormalised(&DynamicImage::ImageLuma8(img));
        assert_eq!(t.len(), 6);
        assert!((t[3] - 0.2).abs() < 1e-6);
        assert_eq!(t[5], 1.0);
        assert!(t.iter().all(|v| (0.0..=1.0).contains(v)));
    }

    #[test]
    fn rgb_output_is_channel_major() {
        let img = RgbImage::from_pixel(2, 1, Rgb([255, 0, 51]));
        let spec = ImageSpec {
            channels: 3,
            height: 1,
            width: 2,
            mean: vec![0.0, 0.0, 0.0],
            std: vec![1.0, 1.0, 0.5],
        };
        let t = spec.tensor(&DynamicImage::ImageRgb8(img));
        assert_eq!(t.len(), 6);
        assert_eq!(&t[0..2], &[1.0, 1.0]);
        assert_eq!(&t[2..4], &[0.0, 0.0]);
        assert!((t[4] - 0.4).abs() < 1e-6 && (t[5] - 0.4).abs() < 1e-6);
    }

    #[test]
    fn a_four_channel_spec_takes_the_change_in_alpha_and_resizes_it_unmixed() {
        // A frame cut to its change: colour, and the change in alpha (zero on the left).
        let img = image::RgbaImage::from_fn(4, 2, |x, _| {
            image::Rgba([200, 100, 0, if x < 2 { 0 } else { 255 }])
        });
        let spec = ImageSpec {
            channels: 4,
            height: 1,
            width: 2,
            mean: vec![0.0; 4],
            std: vec![1.0; 4],
        };
        assert!(spec.validate().is_ok());
        let t = spec.tensor(&DynamicImage::ImageRgba8(img.clone()));
        // Colour where the change is 0 is not darkened (alpha is a channel, not opacity).
        assert!((t[0] - 200.0 / 255.0).abs() < 1e-6 && (t[1] - 200.0 / 255.0).abs() < 1e-6);
        assert!(t[6] < 0.2 && t[7] > 0.8, "{t:?}");
        // A model of colour alone ignores the change channel.
        let rgb = ImageSpec {
            channels: 3,
            mean: vec![0.0; 3],
            std: vec![1.0; 3],
            ..spec
        };
        assert_eq!(&rgb.tensor(&DynamicImage::ImageRgba8(img))[..2], &t[..2]);
    }

    #[test]
    fn converts_rgb_to_luma_for_one_channel_spec() {
        let img = RgbImage::from_pixel(2, 2, Rgb([255, 255, 255]));
        let t = gray_spec(2, 2).unnormalised(&DynamicImage::ImageRgb8(img));
        assert_eq!(t, vec![1.0; 4]);
    }

    #[test]
    fn resizes_to_spec_size() {
        let img = GrayImage::from_pixel(56, 40, Luma([128]));
        let t = gray_spec(28, 28).unnormalised(&DynamicImage::ImageLuma8(img));
        assert_eq!(t.len(), 28 * 28);
        assert!(t.iter().all(|v| (v - 128.0 / 255.0).abs() < 1e-6));
    }

    #[test]
    fn region_crops_inside_the_frame_and_names_a_region_outside_it() {
        let mut img = RgbImage::from_pixel(8, 6, Rgb([0, 0, 0]));
        img.put_pixel(5, 4, Rgb([255, 0, 0]));
        let region = Region {
            x: 4,
            y: 3,
            width: 3,
            height: 2,
        };
        let cut = region
            .crop(&DynamicImage::ImageRgb8(img.clone()))
            .expect("fits");
        assert_eq!((cut.width(), cut.height()), (3, 2));
        assert_eq!(cut.to_rgb8().get_pixel(1, 1), &Rgb([255, 0, 0]));
        let wide = Region { width: 5, ..region };
        let msg = wide
            .crop(&DynamicImage::ImageRgb8(img))
            .expect_err("outside")
            .to_string();
        assert!(
            msg.contains("5x2 at (4, 3)") && msg.contains("8x6 frame"),
            "{msg}"
        );
        assert!(Region { width: 0, ..region }.check(8, 6).is_err());
    }

    #[test]
    fn validate_lists_every_problem() {
        let spec = ImageSpec {
            channels: 2,
            height: 0,
            width: 4,
            mean: vec![0.0],
            std: vec![-1.0],
        };
        let msg = spec.validate().expect_err("bad spec accepted").to_string();
        assert!(msg.contains("channels is 2"), "{msg}");
        assert!(msg.contains("must be positive"), "{msg}");
        assert!(msg.contains("mean has 1 values"), "{msg}");
        assert!(msg.contains("> 0"), "{msg}");
        assert!(gray_spec(28, 28).validate().is_ok());
    }
}
