//! What a run starts from: the processor and the model a config names (a preset drawn
//! fresh, a Hugging Face `config.json`, or an imported checkpoint, with LoRA adapters when
//! configured), its frozen groups and its optimizer; and the processor files copied next to
//! the exported model.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::{AdamWConfig, ModuleOptimizer};
use burn::tensor::{DType, Device};
use nuri_model::{NuriConfig, NuriModel, load_pretrained};
use nuri_processor::Processor;

use crate::TrainError;
use crate::config::TrainConfig;

/// The processor and the model (random or imported) a config names.
pub fn build(
    config: &TrainConfig,
    device: &Device,
) -> Result<(Processor, NuriModel, NuriConfig), TrainError> {
    let source = &config.model;
    if let Some(dir) = &source.checkpoint {
        let (nuri, model) = load_pretrained(dir, device, DType::F32)
            .map_err(|e| TrainError::Model(e.to_string()))?;
        let processor = Processor::from_dir(dir)?.for_model(&nuri);
        return Ok((processor, model, nuri));
    }
    let preset = source.preset.as_deref().expect("validated");
    let dir = source.tokenizer.as_ref().expect("validated");
    let processor = Processor::from_dir(dir)?;
    let nuri = match NuriConfig::preset(preset) {
        Some(nuri) => nuri,
        // A Hugging Face config.json: that architecture, drawn fresh.
        None if preset.ends_with(".json") => nuri_model::read_hf_config(Path::new(preset))
            .map_err(|e| TrainError::Model(e.to_string()))?,
        None => {
            return Err(TrainError::Model(format!(
                "unknown preset `{preset}` (known: {}, or the path of a Hugging Face config.json)",
                NuriConfig::PRESETS.join(", ")
            )));
        }
    };
    let nuri = processor.fit_config(nuri);
    // The processor cuts pictures into the patches the model embeds (a text-only model
    // takes none).
    let p = &processor.image;
    if let Some(v) = &nuri.vision
        && (p.patch_size, p.merge_size, p.temporal_patch_size)
            != (v.patch_size, v.spatial_merge_size, v.temporal_patch_size)
    {
        return Err(TrainError::Model(format!(
            "preset `{preset}` has patch {} / merge {} / temporal {}, but the processor in {} cuts patch {} / merge {} / temporal {} (set them in its preprocessor_config.json)",
            v.patch_size,
            v.spatial_merge_size,
            v.temporal_patch_size,
            dir.display(),
            p.patch_size,
            p.merge_size,
            p.temporal_patch_size
        )));
    }
    let model = NuriModel::new(&nuri, device).map_err(|e| TrainError::Model(e.to_string()))?;
    let processor = processor.for_model(&nuri);
    Ok((processor, model, nuri))
}

/// The run's processor and model, its initial weights drawn from `config.seed` (with LoRA
/// adapters when configured). The backend's generator is global, so seeding and drawing
/// happen under one lock: other runs in the same process (parallel tests) would otherwise
/// draw from it in between. Burn initializes parameters lazily, so they are touched here.
pub fn init_model(
    config: &TrainConfig,
    device: &Device,
) -> Result<(Processor, NuriModel, NuriConfig), TrainError> {
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = INIT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    device.seed(config.seed);
    let (processor, mut model, nuri) = build(config, device)?;
    model.init_params_now();
    if let Some(lora) = &config.lora {
        let targets = burn::module::ParamGroup::from_any_predicates(lora.targets.clone());
        model.model.language_model = model
            .model
            .language_model
            .apply_lora(burn::module::Lora::new(lora.rank, lora.alpha).set_param_group(targets));
        model.lm_head = model.lm_head.map(Module::no_grad);
        model.init_params_now();
    }
    Ok((processor, model, nuri))
}

/// Freezes the groups whose learning rate is 0 (no gradients are computed for them).
pub(crate) fn freeze(mut model: NuriModel, config: &TrainConfig) -> NuriModel {
    let o = &config.optim;
    if let Some(visual) = model.model.visual.as_mut() {
        if o.lr_vision == 0.0 {
            visual.patch_embed = visual.patch_embed.clone().no_grad();
            visual.blocks = visual.blocks.clone().no_grad();
        }
        if o.lr_merger == 0.0 {
            visual.merger = visual.merger.clone().no_grad();
        }
    }
    if o.lr_merger == 0.0 {
        model.model.projector = model.model.projector.map(Module::no_grad);
    }
    if o.lr == 0.0 {
        model.model.language_model = model.model.language_model.no_grad();
        model.lm_head = model.lm_head.map(Module::no_grad);
    }
    model
}

/// The run's optimizer: [`adamw`] with its `[optim]` section.
pub(crate) fn optimizer(config: &TrainConfig) -> ModuleOptimizer {
    adamw(&config.optim)
}

/// AdamW with `o`'s betas, epsilon and (decoupled) weight decay; the learning rate is given
/// per step and group.
pub fn adamw(o: &crate::config::OptimConfig) -> ModuleOptimizer {
    AdamWConfig::new()
        .with_beta_1(o.beta1 as f32)
        .with_beta_2(o.beta2 as f32)
        .with_epsilon(o.eps as f32)
        .with_weight_decay(o.weight_decay as f32)
        .init()
}

pub(crate) fn processor_dir(config: &TrainConfig) -> PathBuf {
    config
        .model
        .checkpoint
        .clone()
        .or_else(|| config.model.tokenizer.clone())
        .expect("validated")
}

/// Copies the tokenizer, chat template, processor configs and generation config (whose
/// `eos_token_id` ends generation) next to exported weights, so the directory is a complete
/// checkpoint; returns how many files it copied.
pub fn copy_processor_files(from: &Path, to: &Path) -> Result<usize, TrainError> {
    let mut copied = 0;
    for file in [
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "chat_template.json",
        "processor_config.json",
        "preprocessor_config.json",
        "video_preprocessor_config.json",
        "generation_config.json",
    ] {
        let src = from.join(file);
        if src.is_file() && src != to.join(file) {
            std::fs::copy(&src, to.join(file)).map_err(|source| TrainError::Io {
                path: src.clone(),
                source,
            })?;
            copied += 1;
        }
    }
    Ok(copied)
}
