//! The recipe of an on-device adaptation: how long and how the fine-tune trains, what it
//! keeps of the imprint, and how the user's samples are augmented. One place decides it:
//! [`Recipe::resolve`] takes the kind of model (image, audio, or one camera view's), the
//! daemon's `[adapt]` settings and the overrides a benchmark asks for, so the daemon's
//! learner and `fewshot-bench` cannot drift apart.
//!
//! Every adaptation fine-tunes with plain cross-entropy (`lsskd::Method::Ce`): the
//! auxiliary heads stay as imprinted, inference never uses them. LSSKD is how the shipped
//! models are trained (`lsskd-edge train`); on the device, a cross-entropy step costs half
//! an LSSKD one and kept more of the shipped classes (BENCHMARKS.md "Few-shot vision: the
//! sample augmentation and the fine-tune's method", "Audio's new words on other accents: a
//! longer fine-tune").

use serde::Serialize;

use crate::augment::{AudioAugment, ImageAugment};
use crate::features::Modality;
use crate::registry::Manifest;
use crate::settings::AdaptSettings;

/// Which recipe a model takes: its modality's, or, for a model of one camera view (a
/// manifest with a `change_reference`, `models/scenes`), the view's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    Image,
    Audio,
    View,
}

impl ModelKind {
    pub fn of(m: &Manifest) -> ModelKind {
        match (m.change_reference.is_some(), m.preprocess.modality()) {
            (true, _) => ModelKind::View,
            (false, Modality::Image) => ModelKind::Image,
            (false, Modality::Audio) => ModelKind::Audio,
        }
    }
}

/// How one adaptation trains (see the module documentation).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recipe {
    /// Fine-tune epochs; 0: imprint only.
    pub epochs: usize,
    pub batch_size: usize,
    /// Peak learning rate (SGD, Nesterov momentum, warm-up then cosine decay).
    pub lr: f64,
    /// The most the fine-tune may take, seconds: it runs its epochs' steps, all of them,
    /// or fails with the reason when this machine's speed says it cannot within this.
    pub budget_secs: Option<u64>,
    /// Stages that train, counted from the output side (with the head); the stem and the
    /// earlier stages are frozen, weights and BatchNorm statistics.
    pub trained_stages: usize,
    /// Replay exemplars: weight of the pre-adaptation prediction in their targets.
    pub anchor_weight: f32,
    /// Replay exemplars: weight of the pull of their embedding towards the pre-adaptation one.
    pub anchor_embedding_weight: f32,
    /// Augmentation of the user's image samples (the replay keeps the package's).
    pub sample_augment: ImageAugment,
    /// Augmentation of the user's audio samples (the replay keeps the package's).
    pub sample_audio_augment: AudioAugment,
    /// Weight of the fine-tuned parameters in the result; the rest is the imprinted
    /// model's (weight-space interpolation of the two, as WiSE-FT does for zero-shot and
    /// fine-tuned models). 1: the fine-tune as trained.
    pub mix: f32,
    /// Added to the new labels' logits in the fine-tuned model. A few samples teach a
    /// label as those samples sound; queries unlike them then fall to the shipped classes,
    /// which were trained on many more. 0: none.
    pub new_label_offset: f32,
    pub seed: u64,
}

/// `adapt.budget_secs` by default: the recipes take 5–10 s on the 2-core x86 reference
/// machine; a Pi Zero 2 W or Pi 3 (Cortex-A53, 1–1.2 GHz, one 128-bit multiply-add a
/// cycle: 8–10 GFLOP/s a core against about 190 with AVX-512 here) is some 20–25× slower,
/// about 4 minutes for audio's; twice that is the limit.
pub const DEFAULT_LIMIT_SECS: u64 = 600;

/// What a caller may change in the model's recipe (the flags of `fewshot-bench` and
/// `view-bench`; the daemon takes `epochs` and `budget_secs` from `[adapt]`). `None`: the
/// recipe's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    pub epochs: Option<usize>,
    pub lr: Option<f64>,
    pub budget_secs: Option<u64>,
    pub trained_stages: Option<usize>,
    pub mix: Option<f32>,
    pub new_label_offset: Option<f32>,
    pub anchor_weight: Option<f32>,
    pub anchor_embedding_weight: Option<f32>,
    /// Image samples: random-crop padding (pixels), rotation range (degrees), scale range.
    pub sample_crop: Option<usize>,
    pub sample_rotate: Option<f32>,
    pub sample_scale: Option<f32>,
    /// Audio samples: speed range, time shift (ms), largest time and frequency masks.
    pub sample_speed: Option<f32>,
    pub sample_shift_ms: Option<f32>,
    pub sample_time_mask: Option<usize>,
    pub sample_freq_mask: Option<usize>,
}

impl Recipe {
    /// *(choice, measured: BENCHMARKS.md "Few-shot on unseen speakers and real drums" and
    /// "Promoted versions on the full validation split")* The recipe for a model of
    /// `kind`.
    ///
    /// Image and audio both fine-tune with plain cross-entropy, batch 16, the last stage and the head only,
    /// replay exemplars anchored to the model before adapting (weight 0.5 on their
    /// prediction, 1 on their embedding), all of their steps (`adapt.budget_secs` only
    /// limits the time: 5–10 s here).
    ///
    /// Images: 15 epochs at 0.02; the user's samples are shifted by up to 4 pixels,
    /// rotated by up to 20° and scaled by up to 20 %, never mirrored (BENCHMARKS.md
    /// "Few-shot vision: the sample augmentation and the fine-tune's method": on 5-way
    /// 5-shot digits the stronger augmentation took novel accuracy from 0.882 to 0.910,
    /// and cross-entropy kept more of the shipped classes than the LSSKD fine-tune did,
    /// drop 0.009 against 0.012).
    ///
    /// Audio: 30 epochs at 0.1, keeping 85 % of the fine-tune against 15 % of the imprinted
    /// model (`mix` 0.85), and +1.0 on the new labels' logits. With one accent's samples
    /// the plain recipe learnt the new words for that accent only (0.850 on other accents
    /// against 0.927 imprinted); interpolating towards the imprint carries the imprint's
    /// generality over but also its habit of taking shipped words (at 0.7 one promoted
    /// version in ten lost 0.025 of them, more than `max_old_drop`; at 0.85 at most
    /// 0.0125). On other accents most of the fine-tune's errors were new words taken for
    /// shipped ones, hence the offset. The longer cross-entropy schedule (240 steps in the
    /// seconds 120 LSSKD steps took) took new words on other accents from 0.936 to 0.951
    /// over six seeds, every seed at or above imprinting alone, shipped words 0.993 →
    /// 0.992 (BENCHMARKS.md "Audio's new words on other accents: a longer fine-tune").
    ///
    /// A view: the image recipe training the head only (`trained_stages` 0). The samples
    /// teach states the model already knows, of one view; on the 12 validation views of
    /// scene-states, training the last stage too lost up to 0.09 on some of them and left
    /// the worst at 0.745, the head alone left none under 0.80 and the mean a little higher
    /// (0.861 against 0.855; BENCHMARKS.md "Camera scenes").
    pub fn for_model(kind: ModelKind) -> Recipe {
        let common = Recipe {
            epochs: 15,
            batch_size: 16,
            lr: 0.02,
            budget_secs: Some(DEFAULT_LIMIT_SECS),
            trained_stages: 1,
            anchor_weight: 0.5,
            anchor_embedding_weight: 1.0,
            sample_augment: ImageAugment {
                crop_padding: 4,
                hflip: false,
                rotate_deg: 20.0,
                scale: 0.2,
            },
            sample_audio_augment: AudioAugment::default(),
            mix: 1.0,
            new_label_offset: 0.0,
            seed: 0,
        };
        match kind {
            ModelKind::Image => common,
            ModelKind::View => Recipe {
                trained_stages: 0,
                ..common
            },
            ModelKind::Audio => Recipe {
                epochs: 30,
                lr: 0.1,
                mix: 0.85,
                new_label_offset: 1.0,
                ..common
            },
        }
    }

    /// The recipe one adaptation runs: the model's, with the daemon's `[adapt]`
    /// settings (`epochs` when set, `budget_secs`) and then `overrides` on top;
    /// `imprint_only` sets no fine-tune at all.
    pub fn resolve(
        kind: ModelKind,
        settings: &AdaptSettings,
        overrides: &Overrides,
        imprint_only: bool,
        seed: u64,
    ) -> Recipe {
        let r = Recipe::for_model(kind);
        let o = overrides;
        let image = &r.sample_augment;
        let audio = &r.sample_audio_augment;
        Recipe {
            epochs: match imprint_only {
                true => 0,
                false => o.epochs.or(settings.epochs).unwrap_or(r.epochs),
            },
            lr: o.lr.unwrap_or(r.lr),
            budget_secs: Some(o.budget_secs.unwrap_or(settings.budget_secs)),
            trained_stages: o.trained_stages.unwrap_or(r.trained_stages),
            mix: o.mix.unwrap_or(r.mix),
            new_label_offset: o.new_label_offset.unwrap_or(r.new_label_offset),
            anchor_weight: o.anchor_weight.unwrap_or(r.anchor_weight),
            anchor_embedding_weight: o
                .anchor_embedding_weight
                .unwrap_or(r.anchor_embedding_weight),
            sample_augment: ImageAugment {
                crop_padding: o.sample_crop.unwrap_or(image.crop_padding),
                rotate_deg: o.sample_rotate.unwrap_or(image.rotate_deg),
                scale: o.sample_scale.unwrap_or(image.scale),
                ..image.clone()
            },
            sample_audio_augment: AudioAugment {
                speed: o.sample_speed.unwrap_or(audio.speed),
                shift_ms: o.sample_shift_ms.unwrap_or(audio.shift_ms),
                time_mask: o.sample_time_mask.unwrap_or(audio.time_mask),
                freq_mask: o.sample_freq_mask.unwrap_or(audio.freq_mask),
                ..audio.clone()
            },
            seed,
            ..r
        }
    }

    /// Whether the adaptation fine-tunes (else it only imprints).
    pub fn fine_tunes(&self) -> bool {
        self.epochs > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemon_settings_and_then_the_overrides_change_the_models_recipe() {
        let mut settings = AdaptSettings::defaults();
        let none = Overrides::default();
        let audio = Recipe::resolve(ModelKind::Audio, &settings, &none, false, 7);
        assert_eq!(audio.epochs, 30, "unset: the recipe's epochs");
        assert_eq!(audio.budget_secs, Some(settings.budget_secs));
        assert_eq!(audio.seed, 7);
        assert_eq!(
            Recipe::resolve(ModelKind::Image, &settings, &none, false, 0).epochs,
            15
        );
        settings.epochs = Some(3);
        settings.budget_secs = 40;
        let r = Recipe::resolve(ModelKind::Audio, &settings, &none, false, 0);
        assert_eq!((r.epochs, r.budget_secs), (3, Some(40)));
        let o = Overrides {
            epochs: Some(5),
            lr: Some(0.3),
            sample_crop: Some(1),
            ..Overrides::default()
        };
        let r = Recipe::resolve(ModelKind::Image, &settings, &o, false, 0);
        assert_eq!((r.epochs, r.lr, r.sample_augment.crop_padding), (5, 0.3, 1));
        assert!(
            !r.sample_augment.hflip,
            "the user's images are never mirrored"
        );
        let r = Recipe::resolve(ModelKind::Image, &settings, &o, true, 0);
        assert!(!r.fine_tunes(), "imprint only");
    }

    #[test]
    fn a_model_of_one_view_fine_tunes_its_head_only() {
        let settings = AdaptSettings::defaults();
        let none = Overrides::default();
        let view = Recipe::resolve(ModelKind::View, &settings, &none, false, 0);
        let image = Recipe::resolve(ModelKind::Image, &settings, &none, false, 0);
        assert_eq!((view.trained_stages, image.trained_stages), (0, 1));
        assert_eq!(view.epochs, image.epochs);
        let o = Overrides {
            trained_stages: Some(1),
            ..Overrides::default()
        };
        assert_eq!(
            Recipe::resolve(ModelKind::View, &settings, &o, false, 0).trained_stages,
            1
        );
    }
}
