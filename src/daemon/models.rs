//! The daemon's live models: per model its version store, its sample store and the slot
//! its pipelines read from (swapped by the trainer).

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::inference::Classifier;
use crate::pipeline::worker::LoadedModel;
use crate::registry::ModelPackage;
use crate::registry::versions::Versions;
use crate::samples::SampleStore;
use crate::settings::Settings;

/// Build a ready-to-run model from a package, its convolutions the faster of ours and
/// tract's on this machine ([`Classifier::load_fastest`]).
pub fn load_model(pkg: &ModelPackage) -> anyhow::Result<LoadedModel> {
    let (classifier, choice) = Classifier::load_fastest(&pkg.onnx_path())?;
    Ok(LoadedModel {
        name: pkg.manifest.name.clone(),
        version: pkg.manifest.version,
        classes: pkg.manifest.classes.clone(),
        background: pkg.manifest.background.clone(),
        change: pkg.change_locator()?,
        preprocess: pkg.manifest.preprocess.clone(),
        kernel: choice.kernel,
        classifier,
    })
}

/// One live model: its version store, its samples, and the slot its pipelines read from.
pub struct ModelSlot {
    pub versions: Versions,
    pub store: SampleStore,
    pub live: Arc<ArcSwap<LoadedModel>>,
}

/// Open (or reuse) the live model of a package folder.
pub fn open_model(
    models: &mut BTreeMap<String, Arc<ModelSlot>>,
    settings: &Settings,
    shipped: &std::path::Path,
) -> anyhow::Result<String> {
    let pkg = ModelPackage::load(shipped)?;
    let name = pkg.manifest.name.clone();
    if !models.contains_key(&name) {
        let versions = Versions::new(
            &settings.state_dir,
            &name,
            shipped,
            settings.adapt.keep_versions,
        )?;
        let current = versions.open_current()?;
        if let Some(w) = &current.warning {
            tracing::error!(model = %name, "{w}");
        }
        let live = Arc::new(ArcSwap::from_pointee(load_model(&current.package)?));
        let store = SampleStore::open(&settings.state_dir, &name, settings.adapt.sample_quota)?;
        tracing::info!(model = %name, version = current.version, classes = current.package.manifest.classes.len(), "model loaded");
        models.insert(
            name.clone(),
            Arc::new(ModelSlot {
                versions,
                store,
                live,
            }),
        );
    }
    Ok(name)
}
