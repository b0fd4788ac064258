//! What a run shows and writes as it goes: a progress bar on a terminal (indicatif: step,
//! loss, learning rate, gradient norm, tokens/s, ETA) or plain lines every
//! [`PLAIN_LINE_EVERY`] steps otherwise, and one JSON line per step in `metrics.jsonl`.

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::TrainError;
use crate::checkpoint::TrainState;
use crate::config::TrainConfig;

/// Steps between plain progress lines when stderr is not a terminal.
pub const PLAIN_LINE_EVERY: usize = 10;

/// The run's clock and its progress display.
pub struct Progress {
    /// The bar, when stderr is a terminal.
    bar: Option<ProgressBar>,
    started: Instant,
    /// Training seconds before this process (a resumed run's).
    seconds_before: f64,
    start_step: usize,
    start_tokens: u64,
    total_steps: usize,
    /// The time budget (`max_minutes`), in seconds.
    budget: Option<f64>,
}

impl Progress {
    /// Starts the clock at `state` (a fresh or a resumed run).
    pub fn new(config: &TrainConfig, state: &TrainState) -> Self {
        let budget = config.max_minutes.map(|m| m * 60.0);
        let bar = std::io::stderr().is_terminal().then(|| {
            // A timed run counts seconds of its budget; otherwise steps.
            let (len, pos, unit) = match budget {
                Some(b) => (b as u64, state.train_seconds as u64, " s"),
                None => (config.steps as u64, state.step as u64, ""),
            };
            let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
            let template = format!("{{msg}} {{wide_bar}} {{pos}}/{{len}}{unit} ETA {{eta}}");
            bar.set_style(ProgressStyle::with_template(&template).expect("a valid template"));
            bar.set_position(pos);
            bar
        });
        Self {
            bar,
            started: Instant::now(),
            seconds_before: state.train_seconds,
            start_step: state.step,
            start_tokens: state.tokens_seen,
            total_steps: config.steps,
            budget,
        }
    }

    /// The time budget in seconds, if the run has one.
    pub fn budget(&self) -> Option<f64> {
        self.budget
    }

    /// Whether the time budget is spent.
    pub fn out_of_time(&self, state: &TrainState) -> bool {
        self.budget.is_some_and(|b| state.train_seconds >= b)
    }

    /// Brings `state.train_seconds` up to now.
    pub fn tick(&self, state: &mut TrainState) {
        state.train_seconds = self.seconds_before + self.started.elapsed().as_secs_f64();
    }

    /// Tokens per second in this process so far.
    pub fn tokens_per_s(&self, state: &TrainState) -> f64 {
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-9);
        (state.tokens_seen - self.start_tokens) as f64 / elapsed
    }

    /// Seconds left, by the steps' pace and the budget.
    fn eta(&self, state: &TrainState) -> f64 {
        let done = (state.step - self.start_step).max(1) as f64;
        let elapsed = self.started.elapsed().as_secs_f64();
        let eta = elapsed / done * self.total_steps.saturating_sub(state.step) as f64;
        match self.budget {
            Some(b) => eta.min((b - state.train_seconds).max(0.0)),
            None => eta,
        }
    }

    /// Shows a step: on the bar, or as a plain line every [`PLAIN_LINE_EVERY`] steps and
    /// at the last.
    pub fn show(
        &self,
        state: &TrainState,
        loss: f64,
        lr: f64,
        grad_norm: f64,
        last: bool,
        log: &mut dyn FnMut(&str),
    ) {
        let tokens_per_s = self.tokens_per_s(state);
        let numbers =
            format!("loss {loss:.4} lr {lr:.2e} |g| {grad_norm:.3} {tokens_per_s:.0} tok/s");
        match &self.bar {
            Some(bar) => {
                bar.set_message(format!("step {} {numbers}", state.step));
                bar.set_position(match self.budget {
                    Some(_) => state.train_seconds as u64,
                    None => state.step as u64,
                });
            }
            None if state.step.is_multiple_of(PLAIN_LINE_EVERY) || last => {
                let progress = match self.budget {
                    Some(b) => format!("step {} ({:.0}/{b:.0} s)", state.step, state.train_seconds),
                    None => format!("step {}/{}", state.step, self.total_steps),
                };
                log(&format!("{progress} {numbers} ETA {:.0}s", self.eta(state)));
            }
            None => {}
        }
    }

    /// A line every run shows (above the bar, when there is one).
    pub fn println(&self, line: &str, log: &mut dyn FnMut(&str)) {
        match &self.bar {
            Some(bar) => bar.suspend(|| log(line)),
            None => log(line),
        }
    }

    /// A line shown only without the bar (checkpoint notices would crowd it).
    pub fn quiet_line(&self, line: &str, log: &mut dyn FnMut(&str)) {
        if self.bar.is_none() {
            log(line);
        }
    }

    /// Leaves the bar as it ended.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.abandon();
        }
    }
}

/// `metrics.jsonl`, opened for appending.
pub struct Metrics {
    file: File,
    path: PathBuf,
}

impl Metrics {
    pub fn open(path: &Path) -> Result<Self, TrainError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| TrainError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Appends one record as a line.
    pub fn append(&mut self, record: &serde_json::Value) -> Result<(), TrainError> {
        writeln!(self.file, "{record}").map_err(|source| TrainError::Io {
            path: self.path.clone(),
            source,
        })
    }
}
