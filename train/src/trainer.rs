//! The training loop. [`train`] builds a [`Trainer`] (the model built or imported, the data
//! loaded, the newest whole checkpoint resumed) and runs its optimizer steps until the step
//! count or the time budget is spent; each step reads top to bottom in [`Trainer::step`]:
//! next batches, one micro-step each (forward and backward, data parallel across devices,
//! gradients accumulated), the optimizer step (clip by the global norm, each parameter group
//! at its scheduled learning rate), then the record (metrics, validation, progress) and the
//! checkpoint.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::module::{Module, ParamId};
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::Device;
use nuri_model::{NuriConfig, NuriModel, save_pretrained};
use nuri_processor::Processor;
use serde_json::json;

use crate::TrainError;
use crate::checkpoint::{self, TrainState};
use crate::collate::{Batch, Encoded, IGNORE, collate, shard};
use crate::config::{Precision, TrainConfig};
use crate::eval::validate;
use crate::feed::Data;
use crate::loss::batch_loss;
use crate::optim::{GROUPS, Group, clip_global_norm, cosine, group_params, lr_factor};
use crate::report::{Metrics, Progress};
use crate::setup::{copy_processor_files, freeze, init_model, optimizer, processor_dir};

/// Validation batches evaluated at each `eval_every`.
const VALIDATION_BATCHES: usize = 8;

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

/// Runs (or resumes) a training run. `log` receives progress lines.
/// `devices` are the devices to train on, data parallel (one shard of each batch per
/// device); the first holds the model and the optimizer.
pub fn train(
    config: &TrainConfig,
    devices: &[Device],
    resume: bool,
    log: &mut dyn FnMut(&str),
) -> Result<RunSummary, TrainError> {
    let mut trainer = Trainer::start(config, devices, resume, log)?;
    while !trainer.done() {
        trainer = trainer.step(log)?;
    }
    trainer.finish()
}

/// A run in progress.
pub struct Trainer<'a> {
    config: &'a TrainConfig,
    /// The devices, with autodiff; the first holds the model and the optimizer.
    devices: Vec<Device>,
    processor: Arc<Processor>,
    nuri: NuriConfig,
    model: NuriModel,
    optim: ModuleOptimizer,
    /// The parameter groups that learn (learning rate above 0) and their parameters.
    groups: Vec<(Group, Vec<ParamId>)>,
    state: TrainState,
    data: Data,
    metrics: Metrics,
    progress: Progress,
    resumed_from: Option<PathBuf>,
    first_loss: Option<f64>,
    last_loss: f64,
}

impl<'a> Trainer<'a> {
    /// Prepares the run directory, the model and the data; resumes from the newest whole
    /// checkpoint when asked.
    pub fn start(
        config: &'a TrainConfig,
        devices: &[Device],
        resume: bool,
        log: &mut dyn FnMut(&str),
    ) -> Result<Self, TrainError> {
        let out = &config.out_dir;
        create_run_dir(config)?;
        if devices.is_empty() {
            return Err(TrainError::Model("no device to train on".into()));
        }
        let devices: Vec<Device> = devices.iter().map(|d| with_grad(d, config)).collect();
        let (mut processor, mut model, nuri) = init_model(config, &devices[0])?;
        if let Some(max) = config.data.max_pixels {
            processor.limit_pixels(max);
        }
        let mut optim = optimizer(config);
        let mut state = TrainState::default();
        let mut resumed_from = None;
        let ckpt_dir = out.join("checkpoints");
        if resume && !checkpoint::list(&ckpt_dir).is_empty() {
            let restored = checkpoint::load_latest(&ckpt_dir, model, optim)?;
            for (path, why) in &restored.skipped {
                log(&format!(
                    "skipping corrupt checkpoint, set aside as {}: {why}",
                    path.display()
                ));
            }
            log(&format!(
                "resuming from {} (step {})",
                restored.path.display(),
                restored.state.step
            ));
            (model, optim, state) = (restored.model, restored.optim, restored.state);
            truncate_metrics(&out.join("metrics.jsonl"), state.step)?;
            resumed_from = Some(restored.path);
        } else if resume {
            log("no checkpoint to resume from; starting fresh");
        }
        let groups = GROUPS
            .iter()
            .filter(|g| g.peak_lr(&config.optim) > 0.0)
            .map(|&g| (g, group_params(&model, g)))
            .collect();
        let model = freeze(model, config);
        let processor = Arc::new(processor);
        let data = Data::load(config, &processor, &state, log)?;
        Ok(Self {
            metrics: Metrics::open(&out.join("metrics.jsonl"))?,
            progress: Progress::new(config, &state),
            config,
            devices,
            processor,
            nuri,
            model,
            optim,
            groups,
            state,
            data,
            resumed_from,
            first_loss: None,
            last_loss: f64::NAN,
        })
    }

    /// Whether the step count or the time budget is spent.
    pub fn done(&self) -> bool {
        self.state.step >= self.config.steps || self.progress.out_of_time(&self.state)
    }

    /// One optimizer step over `grad_accum` batches, then its record and checkpoint. (It
    /// takes the trainer by value so that the optimizer gets the only handle on the weights
    /// and can update them in place.)
    pub fn step(mut self, log: &mut dyn FnMut(&str)) -> Result<Self, TrainError> {
        let mut accumulators: Vec<GradientsAccumulator<NuriModel>> = self
            .groups
            .iter()
            .map(|_| GradientsAccumulator::new())
            .collect();
        let mut loss = 0.0;
        for _ in 0..self.config.grad_accum {
            let items = self.next_items(log)?;
            loss += self.micro_step(items, &mut accumulators)?;
        }
        let (grads, grad_norm, lr_factor) = self.clipped_grads(accumulators)?;
        for ((group, _), grads) in self.groups.iter().zip(grads) {
            let lr = group.peak_lr(&self.config.optim) * lr_factor;
            self.model = self.optim.step(lr, self.model, grads);
        }
        self.state.step += 1;
        self.state.bad_samples = self.data.bad_count(&self.state);
        self.first_loss.get_or_insert(loss);
        self.last_loss = loss;
        self.progress.tick(&mut self.state);
        self.record(loss, grad_norm, lr_factor, log)?;
        self.checkpoint(log)?;
        Ok(self)
    }

    /// The next batch with at least one good sample; a new epoch when one runs out. A bad
    /// sample is reported (or stops the run) the first time it fails; when every sample has
    /// failed the run ends with an error instead of looping.
    fn next_items(&mut self, log: &mut dyn FnMut(&str)) -> Result<Vec<Encoded>, TrainError> {
        loop {
            let Ok(loaded) = self.data.rx.recv() else {
                self.next_epoch()?;
                continue;
            };
            self.state.batch_in_epoch = loaded.index + 1;
            for (index, b) in &loaded.bad {
                if self.data.fail_fast {
                    return Err(TrainError::BadSample(b.to_string()));
                }
                if self.state.failed_samples.insert(*index) {
                    log(&format!("bad sample skipped: {b}"));
                }
            }
            if !loaded.items.is_empty() {
                return Ok(loaded.items);
            }
            let samples = self.data.samples.len();
            if self.state.failed_samples.len() >= samples {
                let last = loaded.bad.last().map(|(_, b)| b.to_string());
                return Err(TrainError::NoUsableSample {
                    path: self.config.data.train.clone(),
                    samples,
                    last: last.unwrap_or_default(),
                });
            }
        }
    }

    /// Moves the loader on to the next epoch, once the current one's plan is consumed.
    fn next_epoch(&mut self) -> Result<(), TrainError> {
        if self.state.batch_in_epoch < self.data.plan_len {
            return Err(TrainError::Loader(format!(
                "stopped after batch {} of {} in epoch {}",
                self.state.batch_in_epoch, self.data.plan_len, self.state.epoch
            )));
        }
        self.state.epoch += 1;
        self.state.batch_in_epoch = 0;
        self.data.restart(self.config, &self.processor, &self.state);
        Ok(())
    }

    /// Forward and backward over one batch, data parallel: one shard per device, each
    /// device's gradients moved to the first device and added to `accumulators` (one per
    /// parameter group). Returns the batch's share of the step's loss.
    fn micro_step(
        &mut self,
        items: Vec<Encoded>,
        accumulators: &mut [GradientsAccumulator<NuriModel>],
    ) -> Result<f64, TrainError> {
        let pad = i64::from(self.processor.tokenizer.special.pad);
        let batches: Vec<Batch> = shard(items, self.devices.len())
            .into_iter()
            .map(|s| collate(s, pad))
            .collect();
        for batch in &batches {
            self.state.samples_seen += batch.input.batch as u64;
            self.state.tokens_seen += batch
                .input
                .attention_mask
                .iter()
                .filter(|&&m| m == 1)
                .count() as u64;
        }
        let forks: Vec<NuriModel> = self.devices[1..batches.len()]
            .iter()
            .map(|d| self.model.clone().fork(d))
            .collect();
        let replicas: Vec<(&NuriModel, &Device)> = std::iter::once(&self.model)
            .chain(&forks)
            .zip(&self.devices)
            .collect();
        let total_targets: usize = batches.iter().map(predicted_labels).sum();
        let (config, groups, first) = (self.config, &self.groups, &self.devices[0]);
        let single = batches.len() == 1;
        let run = |batch: &Batch, (replica, device): (&NuriModel, &Device)| {
            let bf16 = config.precision == Precision::Bf16;
            let (mean, count) = batch_loss(replica, batch, device, bf16)?;
            let loss = if single {
                mean.div_scalar(config.grad_accum as f64)
            } else {
                // Each shard's share of the micro-batch's mean over labelled tokens.
                mean.mul_scalar(count as f64 / (total_targets.max(1) * config.grad_accum) as f64)
            };
            let value = f64::from(loss.clone().into_scalar::<f32>());
            let mut grads = loss.backward();
            let per_group: Vec<GradientsParams> = groups
                .iter()
                .map(|(_, ids)| {
                    GradientsParams::from_params(&mut grads, replica, ids).to_device(first, replica)
                })
                .collect();
            Ok::<_, TrainError>((value, per_group))
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
        let mut loss = 0.0;
        for result in results {
            let (value, per_group) = result?;
            self.check_finite(value)?;
            loss += value;
            for (grads, acc) in per_group.into_iter().zip(accumulators.iter_mut()) {
                acc.accumulate(&self.model, grads);
            }
        }
        Ok(loss)
    }

    /// Each group's accumulated gradients, clipped by their global norm; the norm before
    /// clipping; and the learning-rate schedule's factor for this step.
    fn clipped_grads(
        &self,
        mut accumulators: Vec<GradientsAccumulator<NuriModel>>,
    ) -> Result<(Vec<GradientsParams>, f64, f64), TrainError> {
        let config = self.config;
        let optim = &config.optim;
        let mut grads: Vec<GradientsParams> = accumulators.iter_mut().map(|a| a.grads()).collect();
        let grad_norm = clip_global_norm(&self.model, &mut grads, optim.max_grad_norm);
        self.check_finite(grad_norm)?;
        let step = self.state.step;
        let mut factor = lr_factor(step, config.steps, optim.warmup_steps, optim.min_lr_ratio);
        if let Some(budget) = self.progress.budget()
            && step >= optim.warmup_steps
        {
            // Timed: the decay also follows the share of the budget spent.
            let by_time = cosine(self.state.train_seconds / budget, optim.min_lr_ratio);
            factor = factor.min(by_time);
        }
        Ok((grads, grad_norm, factor))
    }

    /// Stops the run on a non-finite loss or gradient norm (the last checkpoint is intact).
    fn check_finite(&self, value: f64) -> Result<(), TrainError> {
        if value.is_finite() {
            Ok(())
        } else {
            Err(TrainError::NonFinite {
                step: self.state.step + 1,
                loss: value,
            })
        }
    }

    /// Appends the step to `metrics.jsonl` (with validation when due) and shows progress.
    fn record(
        &mut self,
        loss: f64,
        grad_norm: f64,
        lr_factor: f64,
        log: &mut dyn FnMut(&str),
    ) -> Result<(), TrainError> {
        let (config, state) = (self.config, &self.state);
        let last = self.done();
        let lr = config.optim.lr * lr_factor;
        let tokens_per_s = self.progress.tokens_per_s(state);
        let mut record = json!({
            "step": state.step, "loss": loss, "lr": lr, "grad_norm": grad_norm,
            "tokens_per_s": tokens_per_s, "epoch": state.epoch, "samples": state.samples_seen,
            "seconds": state.train_seconds,
        });
        if config.eval_every > 0
            && (state.step.is_multiple_of(config.eval_every) || last)
            && let Some(v) = validate(
                &self.model,
                &self.processor,
                &self.data.marks,
                &self.data.val,
                config,
                &self.devices[0],
                VALIDATION_BATCHES,
            )?
        {
            record["val_loss"] = json!(v.loss);
            record["val_exact_match"] = json!(v.exact_match);
            self.progress.println(
                &format!(
                    "step {}: validation loss {:.4}, exact match {:.1}% of {}",
                    state.step,
                    v.loss,
                    100.0 * v.exact_match,
                    v.conversations
                ),
                log,
            );
        }
        self.metrics.append(&record)?;
        self.progress.show(state, loss, lr, grad_norm, last, log);
        Ok(())
    }

    /// Writes a checkpoint every `checkpoint_every` steps and at the end.
    fn checkpoint(&mut self, log: &mut dyn FnMut(&str)) -> Result<(), TrainError> {
        let config = self.config;
        if !(self.state.step.is_multiple_of(config.checkpoint_every) || self.done()) {
            return Ok(());
        }
        let path = checkpoint::save(
            &config.out_dir.join("checkpoints"),
            &self.model,
            &self.optim,
            &self.state,
            config,
            config.keep_checkpoints,
        )?;
        self.progress
            .quiet_line(&format!("checkpoint {}", path.display()), log);
        Ok(())
    }

    /// Exports the model in the Hugging Face layout (LoRA adapters folded into the weights
    /// they adapt) with the processor's files, and reports the run.
    pub fn finish(self) -> Result<RunSummary, TrainError> {
        self.progress.finish();
        let final_dir = self.config.out_dir.join("final");
        save_pretrained(&self.model.valid().materialize(), &self.nuri, &final_dir)
            .map_err(|e| TrainError::Model(e.to_string()))?;
        copy_processor_files(&processor_dir(self.config), &final_dir)?;
        Ok(RunSummary {
            steps: self.state.step,
            first_loss: self.first_loss.unwrap_or(f64::NAN),
            last_loss: self.last_loss,
            tokens_per_second: self.progress.tokens_per_s(&self.state),
            bad_samples: self.data.bad_count(&self.state),
            final_dir,
            resumed_from: self.resumed_from,
        })
    }
}

/// `device` with autodiff (and gradient checkpointing when configured).
fn with_grad(device: &Device, config: &TrainConfig) -> Device {
    let device = device.clone().autodiff();
    if config.gradient_checkpointing {
        device.gradient_checkpointing()
    } else {
        device
    }
}

/// Creates the run directory and saves the effective config in it.
fn create_run_dir(config: &TrainConfig) -> Result<(), TrainError> {
    let out = &config.out_dir;
    let io = |path: PathBuf| move |source| TrainError::Io { path, source };
    std::fs::create_dir_all(out).map_err(io(out.clone()))?;
    let path = out.join("config.json");
    let json = serde_json::to_string_pretty(config).expect("serializable");
    std::fs::write(&path, json).map_err(io(path.clone()))
}

/// Labels a batch's positions predict (every labelled token but a row's first).
fn predicted_labels(batch: &Batch) -> usize {
    batch
        .labels
        .chunks(batch.input.seq_len)
        .map(|r| r[1..].iter().filter(|&&l| l != IGNORE).count())
        .sum()
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
