//! Training sets for the trainer: adapters from raw items to [`TrainData`] — features
//! (shared with inference) plus label-preserving augmentation — and the preprocessing
//! statistics of a data set. Used by `train`, few-shot adaptation and the benchmarks.

use rand::rngs::StdRng;

use crate::augment::{AudioAugment, ImageAugment};
use crate::dataset::Dataset;
use crate::features::{AudioSpec, ImageSpec, Preprocess, Raw};
use crate::lsskd::{Anchor, TrainData};

/// Preprocessed (and optionally augmented) view of a data set.
pub struct FeatureData<'a> {
    labels: Vec<usize>,
    /// Per item: (probabilities, embedding) of [`Anchor`].
    anchors: Vec<Option<(Vec<f32>, Vec<f32>)>>,
    kind: Kind<'a>,
}

enum Kind<'a> {
    /// Image tensors are computed once; augmentation works on the tensor.
    Image {
        tensors: Vec<Vec<f32>>,
        shape: [usize; 3],
        fill: Vec<f32>,
        augment: Option<ImageAugment>,
        /// Per-item replacement of `augment` (see [`FeatureData::set_image_augment`]).
        item_augment: Vec<Option<ImageAugment>>,
    },
    /// Audio is featurised per draw, after waveform augmentation.
    Audio {
        clips: Vec<AudioItem<'a>>,
        /// Background beds (`--noise-beds`), PCM at the clips' sample rate.
        beds: Vec<Vec<f32>>,
        spec: AudioSpec,
        augment: Option<AudioAugment>,
        /// Per-item replacement of `augment` (see [`FeatureData::set_audio_augment`]).
        item_augment: Vec<Option<AudioAugment>>,
    },
}

/// One audio item: a clip, or a window of the background class drawn afresh each time
/// ([`crate::augment::BedMix::background`]).
#[derive(Clone, Copy)]
enum AudioItem<'a> {
    Clip(&'a crate::features::Clip),
    Background,
}

impl<'a> FeatureData<'a> {
    /// Items `(label, raw)` under `preprocess`; `augment` switches augmentation on.
    pub fn new(
        items: Vec<(usize, &'a Raw)>,
        preprocess: &Preprocess,
        augment: bool,
    ) -> anyhow::Result<Self> {
        let labels = items.iter().map(|(l, _)| *l).collect();
        let kind = match preprocess {
            Preprocess::Image(spec) => {
                let tensors = items
                    .iter()
                    .map(|(_, raw)| preprocess.tensor(raw))
                    .collect::<Result<Vec<_>, _>>()?;
                Kind::Image {
                    tensors,
                    shape: preprocess.input_shape(),
                    fill: spec
                        .mean
                        .iter()
                        .zip(&spec.std)
                        .map(|(m, s)| -m / s)
                        .collect(),
                    augment: augment.then(ImageAugment::default),
                    item_augment: vec![None; items.len()],
                }
            }
            Preprocess::Audio(spec) => {
                let clips = items
                    .iter()
                    .map(|(_, raw)| match raw {
                        Raw::Audio(c) => Ok(AudioItem::Clip(c)),
                        Raw::Image(_) => Err(anyhow::anyhow!("an image in an audio data set")),
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                Kind::Audio {
                    item_augment: vec![None; clips.len()],
                    clips,
                    beds: Vec::new(),
                    spec: spec.clone(),
                    augment: augment.then(AudioAugment::default),
                }
            }
        };
        Ok(Self {
            anchors: vec![None; items.len()],
            labels,
            kind,
        })
    }

    /// All items of a data set.
    pub fn from_dataset(
        ds: &'a Dataset,
        preprocess: &Preprocess,
        augment: bool,
    ) -> anyhow::Result<Self> {
        Self::new(
            ds.items.iter().map(|i| (i.label, &i.raw)).collect(),
            preprocess,
            augment,
        )
    }
}

impl FeatureData<'_> {
    /// Room augmentation for audio (no effect on images): `augment` replaces the default
    /// settings (when augmentation is on), `beds` are what [`AudioAugment::beds`] mixes in.
    pub fn set_room(&mut self, augment: AudioAugment, beds: Vec<Vec<f32>>) {
        if let Kind::Audio {
            augment: a,
            beds: b,
            ..
        } = &mut self.kind
        {
            if a.is_some() {
                *a = Some(augment);
            }
            *b = beds;
        }
    }

    /// Add `n` items of the background class `label`: windows of the beds alone or
    /// near-silence, drawn afresh at every draw (a fixed set without augmentation). No
    /// effect on images.
    pub fn add_background(&mut self, label: usize, n: usize) {
        if let Kind::Audio {
            clips,
            item_augment,
            ..
        } = &mut self.kind
        {
            clips.extend(std::iter::repeat_n(AudioItem::Background, n));
            item_augment.extend(std::iter::repeat_n(None, n));
            self.labels.extend(std::iter::repeat_n(label, n));
            self.anchors.extend(std::iter::repeat_n(None, n));
        }
    }

    /// Set the anchor of item `i` ([`TrainData::anchor`]).
    pub fn set_anchor(&mut self, i: usize, probs: Vec<f32>, embedding: Vec<f32>) {
        self.anchors[i] = Some((probs, embedding));
    }

    /// Augment image item `i` with `a` instead of the default (when augmentation is on);
    /// no effect on audio.
    pub fn set_image_augment(&mut self, i: usize, a: ImageAugment) {
        if let Kind::Image { item_augment, .. } = &mut self.kind {
            item_augment[i] = Some(a);
        }
    }

    /// Augment audio item `i` with `a` instead of the default (when augmentation is on);
    /// no effect on images.
    pub fn set_audio_augment(&mut self, i: usize, a: AudioAugment) {
        if let Kind::Audio { item_augment, .. } = &mut self.kind {
            item_augment[i] = Some(a);
        }
    }
}

impl TrainData for FeatureData<'_> {
    fn len(&self) -> usize {
        self.labels.len()
    }

    fn label(&self, i: usize) -> usize {
        self.labels[i]
    }

    fn anchor(&self, i: usize) -> Option<Anchor<'_>> {
        self.anchors[i]
            .as_ref()
            .map(|(probs, embedding)| Anchor { probs, embedding })
    }

    fn input(&self, i: usize, rng: Option<&mut StdRng>) -> Vec<f32> {
        match (&self.kind, rng) {
            (
                Kind::Image {
                    tensors,
                    shape,
                    fill,
                    augment: Some(a),
                    item_augment,
                },
                Some(rng),
            ) => item_augment[i]
                .as_ref()
                .unwrap_or(a)
                .apply(&tensors[i], *shape, fill, rng),
            (Kind::Image { tensors, .. }, _) => tensors[i].clone(),
            (
                Kind::Audio {
                    clips,
                    beds,
                    spec,
                    augment,
                    item_augment,
                },
                rng,
            ) => {
                let augment = augment
                    .as_ref()
                    .map(|a| item_augment[i].as_ref().unwrap_or(a));
                let sample_rate_hz = spec.sample_rate_hz;
                let zeros = || vec![0.0; spec.frames() * spec.n_mels];
                let tensor = |samples: Vec<f32>, sample_rate_hz: u32| {
                    let clip = crate::features::Clip {
                        samples,
                        sample_rate_hz,
                    };
                    spec.tensor(&clip).unwrap_or_else(|_| zeros())
                };
                match (clips[i], augment, rng) {
                    (AudioItem::Clip(clip), Some(a), Some(rng)) => {
                        let pcm = a.waveform(&clip.samples, clip.sample_rate_hz, rng);
                        let pcm = a.room(&pcm, clip.sample_rate_hz, beds, rng);
                        let mut x = tensor(pcm, clip.sample_rate_hz);
                        a.spec_masks(&mut x, spec.frames(), spec.n_mels, 0.0, rng);
                        x
                    }
                    (AudioItem::Clip(clip), _, _) => spec.tensor(clip).unwrap_or_else(|_| zeros()),
                    (AudioItem::Background, Some(a), Some(rng)) => {
                        let mix = a.beds.clone().unwrap_or_default();
                        let pcm = mix.background(beds, spec.clip_samples, rng);
                        let quiet = AudioAugment {
                            beds: None,
                            ..a.clone()
                        };
                        let pcm = quiet.room(&pcm, sample_rate_hz, beds, rng);
                        let mut x = tensor(pcm, sample_rate_hz);
                        a.spec_masks(&mut x, spec.frames(), spec.n_mels, 0.0, rng);
                        x
                    }
                    (AudioItem::Background, _, _) => {
                        // Without augmentation: a fixed window per item.
                        let mut rng = <StdRng as rand::SeedableRng>::seed_from_u64(i as u64);
                        let pcm = crate::augment::BedMix::default().background(
                            beds,
                            spec.clip_samples,
                            &mut rng,
                        );
                        tensor(pcm, sample_rate_hz)
                    }
                }
            }
        }
    }
}

/// Image preprocessing for a data set: channels (luma, RGB, or RGB and change) and size of
/// its first image, mean/std of its pixels.
pub fn image_spec_for(ds: &Dataset) -> anyhow::Result<ImageSpec> {
    let first = ds
        .items
        .iter()
        .find_map(|i| match &i.raw {
            Raw::Image(img) => Some(img),
            Raw::Audio(_) => None,
        })
        .ok_or_else(|| anyhow::anyhow!("no images in the data set"))?;
    // RGBA: the frames cut to their change (`features::ChangeLocator::cut`).
    let channels = match (first.color().has_alpha(), first.color().has_color()) {
        (true, _) => 4,
        (false, true) => 3,
        (false, false) => 1,
    };
    let mut spec = ImageSpec {
        channels,
        height: first.height() as usize,
        width: first.width() as usize,
        mean: vec![0.0; channels],
        std: vec![1.0; channels],
    };
    let (mut sum, mut sq, mut n) = (vec![0f64; channels], vec![0f64; channels], 0usize);
    let plane = spec.height * spec.width;
    for item in ds.items.iter().step_by((ds.items.len() / 5000).max(1)) {
        if let Raw::Image(img) = &item.raw {
            let x = spec.unnormalised(img);
            for c in 0..channels {
                for &v in &x[c * plane..(c + 1) * plane] {
                    sum[c] += v as f64;
                    sq[c] += (v * v) as f64;
                }
            }
            n += plane;
        }
    }
    for c in 0..channels {
        let mean = sum[c] / n as f64;
        spec.mean[c] = mean as f32;
        spec.std[c] = ((sq[c] / n as f64 - mean * mean).max(1e-8)).sqrt() as f32;
    }
    Ok(spec)
}

/// Audio preprocessing: the project default log-mel with mean/std of the data set's features.
pub fn audio_spec_for(ds: &Dataset) -> anyhow::Result<AudioSpec> {
    let mut spec = AudioSpec::default_kws();
    let (mut sum, mut sq, mut n) = (0f64, 0f64, 0usize);
    for item in ds.items.iter().step_by((ds.items.len() / 400).max(1)) {
        if let Raw::Audio(clip) = &item.raw {
            for v in spec.log_mel(clip)? {
                sum += v as f64;
                sq += (v * v) as f64;
                n += 1;
            }
        }
    }
    anyhow::ensure!(n > 0, "no audio clips in the data set");
    let mean = sum / n as f64;
    spec.mean = mean as f32;
    spec.std = ((sq / n as f64 - mean * mean).max(1e-8)).sqrt() as f32;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::BedMix;
    use crate::features::Clip;
    use rand::SeedableRng;

    #[test]
    fn frames_cut_to_their_change_make_a_four_channel_spec() {
        let item = |img: image::DynamicImage| crate::dataset::Item {
            label: 0,
            raw: Raw::Image(img),
            source: "x".into(),
            group: None,
        };
        let spec_of = |img| {
            let ds = Dataset {
                classes: vec!["a".into()],
                items: vec![item(img)],
                skipped_bad: 0,
            };
            image_spec_for(&ds).expect("spec")
        };
        let rgba = image::RgbaImage::from_pixel(8, 6, image::Rgba([10, 20, 30, 255]));
        let spec = spec_of(image::DynamicImage::ImageRgba8(rgba));
        assert_eq!((spec.channels, spec.width, spec.height), (4, 8, 6));
        assert!((spec.mean[3] - 1.0).abs() < 1e-6, "{:?}", spec.mean);
        assert_eq!(spec_of(image::DynamicImage::new_rgb8(8, 6)).channels, 3);
        assert_eq!(spec_of(image::DynamicImage::new_luma8(8, 6)).channels, 1);
    }

    #[test]
    fn background_items_carry_their_label_and_draw_fresh_windows() {
        let clip = Raw::Audio(Clip {
            samples: vec![0.1; 16000],
            sample_rate_hz: 16000,
        });
        let spec = AudioSpec::default_kws();
        let pre = Preprocess::Audio(spec.clone());
        let mut data = FeatureData::new(vec![(0, &clip)], &pre, true).expect("audio data");
        let bed: Vec<f32> = (0..32_000)
            .map(|i| ((i * 7919) % 200) as f32 / 400.0 - 0.25)
            .collect();
        let augment = AudioAugment {
            beds: Some(BedMix::default()),
            ..AudioAugment::default()
        };
        data.set_room(augment, vec![bed]);
        data.add_background(1, 3);
        assert_eq!(data.len(), 4);
        assert_eq!(
            (0..4).map(|i| data.label(i)).collect::<Vec<_>>(),
            [0, 1, 1, 1]
        );
        let mut rng = StdRng::seed_from_u64(0);
        let a = data.input(1, Some(&mut rng));
        let b = data.input(1, Some(&mut rng));
        assert_eq!(a.len(), spec.frames() * spec.n_mels);
        assert_ne!(a, b, "a fresh window at every draw");
        // Without augmentation a background item is one fixed window.
        assert_eq!(data.input(2, None), data.input(2, None));
    }
}
