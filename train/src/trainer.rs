//! The training loop, top to bottom: build or import the model, load the data, resume from
//! the newest whole checkpoint, then for each optimizer step accumulate gradients over
//! micro-batches, clip by the global norm, step each parameter group at its scheduled
//! learning rate, log, evaluate and checkpoint.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use nuri_encoders::rowops::cross_entropy;
use nuri_infer::Processor;
use nuri_model::{NuriConfig, NuriModel, load_pretrained, save_pretrained};
use serde_json::json;

use crate::TrainError;
use crate::checkpoint::{self, TrainState};
use crate::collate::{Batch, IGNORE, TurnMarks, collate, shard, spawn_loader};
use crate::config::{BadSamplePolicy, TrainConfig};
use crate::data::{BadSample, epoch_plan, load_jsonl};
use crate::eval::validate;
use crate::optim::{GROUPS, Group, clip_global_norm, cosine, group_params, lr_factor};

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub steps: usize,
    pub first_loss: f64,
    pub last_loss: f64,
    pub tokens_per_second: f64,
    pub bad_samples: u64,
    pub final_dir: PathBuf,
    /// The checkpoint the run resumed from, if any.
    pub resumed_from: Option<PathBuf>,
}

/// Mean cross-entropy of next-token predictions over the labelled tokens, from the last
/// hidden states: only the positions that predict a label go through the head and the
/// log-softmax (in supervised fine-tuning the answers are a small share of the tokens, and
/// the head is the widest matmul of a model with a large vocabulary).
///
/// # Shapes
/// - `hidden`: `[batch, seq, hidden]`; `labels`: `batch × seq` values (row-major)
pub fn labelled_loss(
    model: &NuriModel,
    hidden: Tensor<3>,
    labels: &[i64],
    device: &Device,
) -> (Tensor<1>, usize) {
    let [b, s, d] = hidden.dims();
    // Position t predicts token t + 1.
    let (mut rows, mut targets) = (Vec::new(), Vec::new());
    for r in 0..b {
        for t in 1..s {
            let l = labels[r * s + t];
            if l != IGNORE {
                rows.push((r * s + t - 1) as i64);
                targets.push(l);
            }
        }
    }
    let count = rows.len();
    if count == 0 {
        // Nothing to learn from; a zero that still depends on the model.
        return (hidden.sum().mul_scalar(0.0), 0);
    }
    let picked = if count == b * (s - 1) {
        // Every position is labelled (pre-training): no gather.
        hidden.slice([0..b, 0..s - 1, 0..d]).reshape([1, count, d])
    } else {
        let rows = Tensor::<1, Int>::from_data(TensorData::new(rows, [count]), device);
        hidden
            .reshape([b * s, d])
            .select(0, rows)
            .reshape([1, count, d])
    };
    let logits = model.logits(picked).cast(DType::F32); // [1, n, vocab]
    let vocab = logits.dims()[2];
    let targets = Tensor::<1, Int>::from_data(TensorData::new(targets, [count]), device);
    let loss = cross_entropy(logits.reshape([count, vocab]), targets)
        .sum()
        .div_scalar(count as f64);
    (loss, count)
}

/// The processor and the model (random or imported) a config names.
pub fn build(
    config: &TrainConfig,
    device: &Device,
) -> Result<(Processor, NuriModel, NuriConfig), TrainError> {
    let source = &config.model;
    if let Some(dir) = &source.checkpoint {
        let processor = Processor::from_dir(dir)?;
        let (nuri, model) = load_pretrained(dir, device, DType::F32)
            .map_err(|e| TrainError::Model(e.to_string()))?;
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
    // The processor cuts pictures into the patches the model embeds.
    let (p, v) = (&processor.image, &nuri.vision);
    if (p.patch_size, p.merge_size, p.temporal_patch_size)
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
fn freeze(mut model: NuriModel, config: &TrainConfig) -> NuriModel {
    let o = &config.optim;
    if o.lr_vision == 0.0 {
        model.model.visual.patch_embed = model.model.visual.patch_embed.no_grad();
        model.model.visual.blocks = model.model.visual.blocks.no_grad();
    }
    if o.lr_merger == 0.0 {
        model.model.visual.merger = model.model.visual.merger.no_grad();
    }
    if o.lr == 0.0 {
        model.model.language_model = model.model.language_model.no_grad();
        model.lm_head = model.lm_head.map(Module::no_grad);
    }
    model
}

fn optimizer(config: &TrainConfig) -> ModuleOptimizer {
    let o = &config.optim;
    AdamWConfig::new()
        .with_beta_1(o.beta1 as f32)
        .with_beta_2(o.beta2 as f32)
        .with_epsilon(o.eps as f32)
        .with_weight_decay(o.weight_decay as f32)
        .init()
}

/// Casts every float parameter, keeping its id; under autodiff the cast is part of the graph,
/// so gradients reach the original (fp32) parameters.
struct CastTo(DType);

impl burn::module::ModuleMapper for CastTo {
    fn map_float<const D: usize>(
        &mut self,
        param: burn::module::Param<Tensor<D>>,
    ) -> burn::module::Param<Tensor<D>> {
        let dtype = self.0;
        param.map(|t| t.cast(dtype))
    }
}

/// Loss of one batch (no update); with `bf16`, the forward runs on a bf16 cast of the
/// weights and the loss is taken in fp32.
fn batch_loss_in(
    model: &NuriModel,
    batch: &Batch,
    device: &Device,
    bf16: bool,
) -> Result<(Tensor<1>, usize), TrainError> {
    let input = batch.input.to_model_input(device);
    let cast;
    let model = if bf16 {
        cast = model.clone().map(&mut CastTo(DType::BF16));
        &cast
    } else {
        model
    };
    let (hidden, _, _) = model
        .hidden_states(&input, None)
        .map_err(|e| TrainError::Model(e.to_string()))?;
    Ok(labelled_loss(model, hidden, &batch.labels, device))
}

/// Loss of one batch in fp32 (no update).
pub(crate) fn batch_loss(
    model: &NuriModel,
    batch: &Batch,
    device: &Device,
) -> Result<(Tensor<1>, usize), TrainError> {
    batch_loss_in(model, batch, device, false)
}

/// Runs (or resumes) a training run. `log` receives progress lines.
/// `devices` are the devices to train on, data parallel (one shard of each batch per
/// device); the first holds the model and the optimizer.
pub fn train(
    config: &TrainConfig,
    devices: &[Device],
    resume: bool,
    log: &mut dyn FnMut(&str),
) -> Result<RunSummary, TrainError> {
    let out = &config.out_dir;
    let ckpt_dir = out.join("checkpoints");
    std::fs::create_dir_all(out).map_err(|source| TrainError::Io {
        path: out.clone(),
        source,
    })?;
    std::fs::write(
        out.join("config.json"),
        serde_json::to_string_pretty(config).expect("serializable"),
    )
    .map_err(|source| TrainError::Io {
        path: out.join("config.json"),
        source,
    })?;

    let Some(first) = devices.first() else {
        return Err(TrainError::Model("no device to train on".into()));
    };
    let with_grad = |d: &Device| {
        let d = d.clone().autodiff();
        if config.gradient_checkpointing {
            d.gradient_checkpointing()
        } else {
            d
        }
    };
    let device = with_grad(first);
    let devices: Vec<Device> = devices.iter().map(with_grad).collect();
    let (mut processor, model, nuri) = init_model(config, &device)?;
    if let Some(max) = config.data.max_pixels {
        // Images and every video frame.
        processor.image.max_pixels = max;
        processor.image.min_pixels = processor.image.min_pixels.min(max);
        processor.video_max_pixels = Some(max);
        processor.video_min_pixels = Some(processor.image.min_pixels);
    }
    let mut optim = optimizer(config);
    let mut model = model;
    let mut state = TrainState {
        step: 0,
        epoch: 0,
        batch_in_epoch: 0,
        samples_seen: 0,
        tokens_seen: 0,
        bad_samples: 0,
        train_seconds: 0.0,
    };
    let mut resumed_from = None;
    if resume && !checkpoint::list(&ckpt_dir).is_empty() {
        let restored = checkpoint::load_latest(&ckpt_dir, model, optim)?;
        for (path, why) in &restored.skipped {
            log(&format!(
                "skipping corrupt checkpoint {}: {why}",
                path.display()
            ));
        }
        log(&format!(
            "resuming from {} (step {})",
            restored.path.display(),
            restored.state.step
        ));
        model = restored.model;
        optim = restored.optim;
        state = restored.state;
        truncate_metrics(&out.join("metrics.jsonl"), state.step)?;
        resumed_from = Some(restored.path);
    } else if resume {
        log("no checkpoint to resume from; starting fresh");
    }
    let model_groups: Vec<(Group, Vec<burn::module::ParamId>)> = GROUPS
        .iter()
        .filter(|g| g.peak_lr(&config.optim) > 0.0)
        .map(|&g| (g, group_params(&model, g)))
        .collect();
    model = freeze(model, config);

    // Data.
    let fail_fast = config.data.on_bad_sample == BadSamplePolicy::Fail;
    let (samples, bad) = load_jsonl(
        &config.data.train,
        config.data.media_root.as_deref(),
        fail_fast,
    )?;
    for b in &bad {
        log(&format!("bad sample skipped: {b}"));
    }
    let mut bad_total = state.bad_samples.max(bad.len() as u64);
    if samples.is_empty() {
        return Err(TrainError::NoData(config.data.train.clone()));
    }
    let val = match &config.data.val {
        Some(path) => load_jsonl(path, config.data.media_root.as_deref(), fail_fast)?.0,
        None => Vec::new(),
    };
    let lengths: Vec<usize> = samples.iter().map(|s| s.length_hint).collect();
    let samples = Arc::new(samples);
    let marks = TurnMarks::of(&processor)?;
    let processor = Arc::new(processor);
    let plan_for = |epoch: u64| {
        epoch_plan(
            &lengths,
            config.batch_size,
            config.data.bucket_batches,
            config.seed,
            epoch,
        )
    };
    let loader = |epoch: u64, start: usize| {
        spawn_loader(
            processor.clone(),
            marks.clone(),
            samples.clone(),
            plan_for(epoch),
            start,
            config.data.workers,
            config.data.last_turn_only,
        )
    };
    let mut rx = loader(state.epoch, state.batch_in_epoch);
    let pad = i64::from(processor.tokenizer.special.pad);

    let metrics_path = out.join("metrics.jsonl");
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .map_err(|source| TrainError::Io {
            path: metrics_path.clone(),
            source,
        })?;
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let start_step = state.step;
    let start_tokens = state.tokens_seen;
    let (mut first_loss, mut last_loss) = (None, f64::NAN);

    let budget = config.max_minutes.map(|m| m * 60.0);
    let seconds_before = state.train_seconds;
    let out_of_time = |state: &TrainState| budget.is_some_and(|b| state.train_seconds >= b);
    while state.step < config.steps && !out_of_time(&state) {
        let mut accumulators: Vec<GradientsAccumulator<NuriModel>> = model_groups
            .iter()
            .map(|_| GradientsAccumulator::new())
            .collect();
        let mut step_loss = 0.0;
        for _ in 0..config.grad_accum {
            // The next batch with at least one good sample; a new epoch when one runs out.
            let items = loop {
                match rx.recv() {
                    Ok(loaded) => {
                        state.batch_in_epoch = loaded.index + 1;
                        for b in &loaded.bad {
                            handle_bad(b, fail_fast, log)?;
                        }
                        bad_total += loaded.bad.len() as u64;
                        if !loaded.items.is_empty() {
                            break loaded.items;
                        }
                    }
                    Err(_) => {
                        state.epoch += 1;
                        state.batch_in_epoch = 0;
                        rx = loader(state.epoch, 0);
                    }
                }
            };
            // Data parallel: one shard of the batch per device; each device's gradients
            // are moved to the first device and summed there.
            let batches: Vec<Batch> = shard(items, devices.len())
                .into_iter()
                .map(|s| collate(s, pad))
                .collect();
            for batch in &batches {
                state.samples_seen += batch.input.batch as u64;
                state.tokens_seen += batch
                    .input
                    .attention_mask
                    .iter()
                    .filter(|&&m| m == 1)
                    .count() as u64;
            }
            let forks: Vec<NuriModel> = devices[1..batches.len()]
                .iter()
                .map(|d| model.clone().fork(d))
                .collect();
            let replicas: Vec<(&NuriModel, &Device)> = std::iter::once((&model, &device))
                .chain(forks.iter().zip(&devices[1..]))
                .collect();
            let total_targets: usize = batches
                .iter()
                .map(|b| {
                    b.labels
                        .chunks(b.input.seq_len)
                        .map(|r| r[1..].iter().filter(|&&l| l != IGNORE).count())
                        .sum::<usize>()
                })
                .sum();
            let single = batches.len() == 1;
            let run = |batch: &Batch, (replica, dev): (&NuriModel, &Device)| {
                let (mean, count) = batch_loss_in(
                    replica,
                    batch,
                    dev,
                    config.precision == crate::config::Precision::Bf16,
                )?;
                let loss = if single {
                    mean.div_scalar(config.grad_accum as f64)
                } else {
                    // Each shard's share of the micro-batch's mean over labelled tokens.
                    mean.mul_scalar(
                        count as f64 / (total_targets.max(1) * config.grad_accum) as f64,
                    )
                };
                let value = f64::from(loss.clone().into_scalar::<f32>());
                let mut grads = loss.backward();
                let groups: Vec<GradientsParams> = model_groups
                    .iter()
                    .map(|(_, ids)| {
                        GradientsParams::from_params(&mut grads, replica, ids)
                            .to_device(&device, replica)
                    })
                    .collect();
                Ok::<_, TrainError>((value, groups))
            };
            let results: Vec<Result<(f64, Vec<GradientsParams>), TrainError>> = if single {
                vec![run(&batches[0], replicas[0])]
            } else {
                std::thread::scope(|scope| {
                    let handles: Vec<_> = batches
                        .iter()
                        .zip(replicas.iter().copied())
                        .map(|(b, r)| scope.spawn(move || run(b, r)))
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| h.join().expect("a device thread panicked"))
                        .collect()
                })
            };
            for result in results {
                let (value, groups) = result?;
                if !value.is_finite() {
                    return Err(TrainError::NonFinite {
                        step: state.step + 1,
                        loss: value,
                    });
                }
                step_loss += value;
                for (grads, acc) in groups.into_iter().zip(accumulators.iter_mut()) {
                    acc.accumulate(&model, grads);
                }
            }
        }
        let mut group_grads: Vec<GradientsParams> =
            accumulators.iter_mut().map(|a| a.grads()).collect();
        let grad_norm = clip_global_norm(&model, &mut group_grads, config.optim.max_grad_norm);
        if !grad_norm.is_finite() {
            return Err(TrainError::NonFinite {
                step: state.step + 1,
                loss: grad_norm,
            });
        }
        let mut factor = lr_factor(
            state.step,
            config.steps,
            config.optim.warmup_steps,
            config.optim.min_lr_ratio,
        );
        if let Some(b) = budget
            && state.step >= config.optim.warmup_steps
        {
            // Timed: the decay also follows the share of the budget spent.
            let by_time = cosine(state.train_seconds / b, config.optim.min_lr_ratio);
            factor = factor.min(by_time);
        }
        for ((group, _), grads) in model_groups.iter().zip(group_grads) {
            model = optim.step(group.peak_lr(&config.optim) * factor, model, grads);
        }
        state.step += 1;
        state.bad_samples = bad_total;
        first_loss.get_or_insert(step_loss);
        last_loss = step_loss;

        let elapsed = started.elapsed().as_secs_f64();
        state.train_seconds = seconds_before + elapsed;
        let tokens_per_s = (state.tokens_seen - start_tokens) as f64 / elapsed.max(1e-9);
        let done = state.step - start_step;
        let mut eta = elapsed / done as f64 * (config.steps - state.step) as f64;
        if let Some(b) = budget {
            eta = eta.min((b - state.train_seconds).max(0.0));
        }
        let last = state.step == config.steps || out_of_time(&state);
        let lr = config.optim.lr * factor;
        let mut record = json!({
            "step": state.step, "loss": step_loss, "lr": lr, "grad_norm": grad_norm,
            "tokens_per_s": tokens_per_s, "epoch": state.epoch, "samples": state.samples_seen,
            "seconds": state.train_seconds,
        });
        if config.eval_every > 0
            && (state.step.is_multiple_of(config.eval_every) || last)
            && let Some(v) = validate(&model, &processor, &marks, &val, config, &device, 8)?
        {
            record["val_loss"] = json!(v.loss);
            record["val_exact_match"] = json!(v.exact_match);
            log(&format!(
                "step {}: validation loss {:.4}, exact match {:.1}% of {}",
                state.step,
                v.loss,
                100.0 * v.exact_match,
                v.conversations
            ));
        }
        writeln!(metrics, "{record}").map_err(|source| TrainError::Io {
            path: metrics_path.clone(),
            source,
        })?;
        let progress = match budget {
            Some(b) => format!(
                "step {} ({:.0}/{:.0} s)",
                state.step, state.train_seconds, b
            ),
            None => format!("step {}/{}", state.step, config.steps),
        };
        let line = format!(
            "{progress} loss {step_loss:.4} lr {lr:.2e} |g| {grad_norm:.3} {tokens_per_s:.0} tok/s ETA {eta:.0}s"
        );
        if tty {
            eprint!("\r{line}  ");
        } else if state.step.is_multiple_of(10) || last {
            log(&line);
        }
        if state.step.is_multiple_of(config.checkpoint_every) || last {
            let path = checkpoint::save(
                &ckpt_dir,
                &model,
                &optim,
                &state,
                config,
                config.keep_checkpoints,
            )?;
            if !tty {
                log(&format!("checkpoint {}", path.display()));
            }
        }
    }
    if tty {
        eprintln!();
    }
    let final_dir = out.join("final");
    // LoRA adapters are folded into the weights they adapt.
    save_pretrained(&model.valid().materialize(), &nuri, &final_dir)
        .map_err(|e| TrainError::Model(e.to_string()))?;
    copy_processor_files(&processor_dir(config), &final_dir)?;
    let elapsed = started.elapsed().as_secs_f64();
    Ok(RunSummary {
        steps: state.step,
        first_loss: first_loss.unwrap_or(f64::NAN),
        last_loss,
        tokens_per_second: (state.tokens_seen - start_tokens) as f64 / elapsed.max(1e-9),
        bad_samples: bad_total,
        final_dir,
        resumed_from,
    })
}

/// Drops the metrics a killed run wrote after its last checkpoint, so a resumed run's
/// `metrics.jsonl` reads as one run.
fn truncate_metrics(path: &Path, last_step: usize) -> Result<(), TrainError> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s as usize <= last_step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(path, kept).map_err(|source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn handle_bad(b: &BadSample, fail_fast: bool, log: &mut dyn FnMut(&str)) -> Result<(), TrainError> {
    if fail_fast {
        return Err(TrainError::BadSample(b.to_string()));
    }
    log(&format!("bad sample skipped: {b}"));
    Ok(())
}

fn processor_dir(config: &TrainConfig) -> PathBuf {
    config
        .model
        .checkpoint
        .clone()
        .or_else(|| config.model.tokenizer.clone())
        .expect("validated")
}

/// Copies the tokenizer, chat template and processor configs next to exported weights, so
/// the directory is a complete checkpoint.
fn copy_processor_files(from: &Path, to: &Path) -> Result<(), TrainError> {
    for file in [
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "chat_template.json",
        "processor_config.json",
        "preprocessor_config.json",
        "video_preprocessor_config.json",
    ] {
        let src = from.join(file);
        if src.is_file() && src != to.join(file) {
            std::fs::copy(&src, to.join(file)).map_err(|source| TrainError::Io {
                path: src.clone(),
                source,
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use burn::tensor::activation::log_softmax;
    use nuri_model::MultimodalInput;

    use super::*;

    /// The loss over the labelled rows equals the mean over the labelled positions of the
    /// full logits' log-softmax.
    #[test]
    fn labelled_loss_is_the_cross_entropy_of_the_labelled_positions() {
        let device = Device::flex();
        device.seed(3);
        let model = NuriModel::new(&NuriConfig::tiny(), &device).expect("a model");
        let (b, s) = (2, 6);
        let ids: Vec<i64> = (0..(b * s) as i64).map(|i| (i * 37) % 200).collect();
        let input = MultimodalInput::text(
            Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [b, s]), &device),
            None,
        );
        let logp = log_softmax(model.prefill(&input, None).expect("runs").logits, 2)
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32");
        let v = NuriConfig::tiny().text.vocab_size;
        // Some positions ignored (a gather of rows), then every one (a slice).
        let mut some = ids.clone();
        for (i, l) in some.iter_mut().enumerate() {
            if i % 3 == 0 {
                *l = IGNORE;
            }
        }
        for labels in [some, ids] {
            let (hidden, _, _) = model.hidden_states(&input, None).expect("runs");
            let (loss, count) = labelled_loss(&model, hidden, &labels, &device);
            let (mut sum, mut n) = (0.0f64, 0);
            for r in 0..b {
                for t in 1..s {
                    let l = labels[r * s + t];
                    if l != IGNORE {
                        sum -= logp[(r * s + t - 1) * v + l as usize] as f64;
                        n += 1;
                    }
                }
            }
            assert_eq!(count, n);
            let loss = loss.into_scalar::<f32>() as f64;
            let want = sum / n as f64;
            assert!((loss - want).abs() < 1e-5, "{loss} vs {want}");
        }
        // No labels: zero, from zero tokens.
        let (hidden, _, _) = model.hidden_states(&input, None).expect("runs");
        let (loss, count) = labelled_loss(&model, hidden, &vec![IGNORE; b * s], &device);
        assert_eq!((loss.into_scalar::<f32>(), count), (0.0, 0));
    }
}
