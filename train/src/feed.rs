//! A run's data: the training samples (loaded once, with bad lines reported), the
//! validation samples, and the loader thread that prepares the current epoch's batches from
//! where the run stands.

use std::sync::Arc;
use std::sync::mpsc::Receiver;

use nuri_processor::Processor;

use crate::TrainError;
use crate::checkpoint::TrainState;
use crate::collate::{Loaded, TurnMarks, spawn_loader};
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
    pub fail_fast: bool,
    /// Bad samples met, over the whole run.
    pub bad_total: u64,
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
        let rx = Self::loader(config, processor, &marks, &samples, &lengths, state);
        Ok(Self {
            samples,
            lengths,
            val,
            marks,
            rx,
            fail_fast,
            bad_total: state.bad_samples.max(bad.len() as u64),
        })
    }

    /// The loader of `state.epoch`'s plan, from its `state.batch_in_epoch`-th batch.
    pub fn loader(
        config: &TrainConfig,
        processor: &Arc<Processor>,
        marks: &TurnMarks,
        samples: &Arc<Vec<Sample>>,
        lengths: &[usize],
        state: &TrainState,
    ) -> Receiver<Loaded> {
        let plan = epoch_plan(
            lengths,
            config.batch_size,
            config.data.bucket_batches,
            config.seed,
            state.epoch,
        );
        spawn_loader(
            processor.clone(),
            marks.clone(),
            samples.clone(),
            plan,
            state.batch_in_epoch,
            config.data.workers,
            config.data.last_turn_only,
        )
    }
}
