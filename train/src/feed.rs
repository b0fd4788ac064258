//! A run's data: the training samples (loaded once, with bad lines reported), the
//! validation samples, and the loader thread that prepares the current epoch's batches from
//! where the run stands.

use std::sync::Arc;
use std::sync::mpsc::Receiver;

use nuri_processor::Processor;

use crate::TrainError;
use crate::checkpoint::TrainState;
use crate::collate::{EncodeOptions, Loaded, TurnMarks, spawn_loader};
use crate::config::{BadSamplePolicy, TrainConfig};
use crate::data::{Sample, epoch_plan, load_jsonl};

/// The training data: the samples, the loader thread of the current epoch, and the
/// validation samples.
pub(crate) struct Data {
    pub samples: Arc<Vec<Sample>>,
    pub lengths: Vec<usize>,
    pub val: Vec<Sample>,
    pub marks: TurnMarks,
    pub rx: Receiver<Loaded>,
    /// Batches in the current epoch's plan (the loader ends early only if it died).
    pub plan_len: usize,
    pub fail_fast: bool,
    /// Lines of the file that are not samples (reported as it was read).
    pub load_bad: u64,
}

impl Data {
    /// Loads the train and validation files and starts the loader where `state` left off.
    pub fn load(
        config: &TrainConfig,
        processor: &Arc<Processor>,
        state: &TrainState,
        log: &mut dyn FnMut(&str),
    ) -> Result<Self, TrainError> {
        let fail_fast = config.data.on_bad_sample == BadSamplePolicy::Fail;
        let root = config.data.media_root.as_deref();
        let (samples, bad) = load_jsonl(&config.data.train, root, fail_fast)?;
        for b in &bad {
            log(&format!("bad sample skipped: {b}"));
        }
        if samples.is_empty() {
            return Err(TrainError::NoData(config.data.train.clone()));
        }
        let val = match &config.data.val {
            Some(path) => load_jsonl(path, root, fail_fast)?.0,
            None => Vec::new(),
        };
        let lengths: Vec<usize> = samples.iter().map(|s| s.length_hint).collect();
        let samples = Arc::new(samples);
        let marks = TurnMarks::of(processor)?;
        let (rx, plan_len) = loader(config, processor, &marks, &samples, &lengths, state);
        Ok(Self {
            samples,
            lengths,
            val,
            marks,
            rx,
            plan_len,
            fail_fast,
            load_bad: bad.len() as u64,
        })
    }

    /// Starts the loader of `state.epoch`'s plan, from its `state.batch_in_epoch`-th batch.
    pub fn restart(
        &mut self,
        config: &TrainConfig,
        processor: &Arc<Processor>,
        state: &TrainState,
    ) {
        let (marks, samples, lengths) = (&self.marks, &self.samples, &self.lengths);
        (self.rx, self.plan_len) = loader(config, processor, marks, samples, lengths, state);
    }

    /// Bad samples so far, each line once: the file's and those that failed when processed.
    pub fn bad_count(&self, state: &TrainState) -> u64 {
        self.load_bad + state.failed_samples.len() as u64
    }
}

/// The loader of `state.epoch`'s plan, from its `state.batch_in_epoch`-th batch, and the
/// plan's length in batches.
fn loader(
    config: &TrainConfig,
    processor: &Arc<Processor>,
    marks: &TurnMarks,
    samples: &Arc<Vec<Sample>>,
    lengths: &[usize],
    state: &TrainState,
) -> (Receiver<Loaded>, usize) {
    let plan = epoch_plan(
        lengths,
        config.batch_size,
        config.data.bucket_batches,
        config.seed,
        state.epoch,
    );
    let plan_len = plan.len();
    let rx = spawn_loader(
        processor.clone(),
        marks.clone(),
        samples.clone(),
        plan,
        state.batch_in_epoch,
        config.data.workers,
        EncodeOptions::of(&config.data),
    );
    (rx, plan_len)
}
