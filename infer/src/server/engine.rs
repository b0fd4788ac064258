//! The engine: one thread owns the model and serves every admitted request step by step
//! (continuous batching). Each turn it takes what arrived, admits waiting requests while
//! the batch has room (`max_batch` rows, and `max_batch_tokens` of KV cache reserved for
//! prompts plus their longest answers), runs one chunk of the prompt being prefilled, then
//! samples each running row and runs one decoding step for all of them. A row leaves as
//! soon as it is done or its client has gone away; a new one joins after its prefill. A
//! panic is caught: the requests in flight get an error, and the engine starts again.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use burn::tensor::Device;
use nuri_model::{Batch, NuriModel, PREFILL_CHUNK, PendingPrompt, Prefilled};
use nuri_processor::{Processor, ProcessorOutput};
use tokio::sync::mpsc;

use super::request::ApiError;
use crate::generate::{Generated, Row};
use crate::reasoning::{Markers, decode_keeping_markers};
use crate::sampling::SamplingParams;

/// What the engine tells a waiting request.
pub(super) enum Event {
    Piece(String),
    Done(Generated),
    Error(ApiError),
}

/// Counts a request from the moment it is accepted until the engine starts it (the queue
/// that `queue_limit` bounds); dropping it leaves the queue.
pub(super) struct QueueSlot(pub(super) Arc<AtomicUsize>);

impl Drop for QueueSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A request, processed (tokens counted, media decoded) and ready for the model.
pub(super) struct Job {
    /// One row.
    pub input: ProcessorOutput,
    /// `max_new_tokens` already clamped to what the context leaves.
    pub params: SamplingParams,
    pub prompt: Vec<u32>,
    pub events: mpsc::UnboundedSender<Event>,
    pub slot: QueueSlot,
    /// Test hook: the engine panics when it starts this request.
    pub panic: bool,
    /// The model's thinking markers' ids and whether the prompt opened a block (for the
    /// thinking budget).
    pub thinking: Option<([u32; 2], bool)>,
}

impl Job {
    /// Positions of KV cache this request may need: its prompt and its longest answer.
    fn reserved(&self) -> usize {
        self.prompt.len() + self.params.max_new_tokens
    }
}

/// What `/health` reads of the engine.
#[derive(Debug)]
pub(super) struct EngineStatus {
    started: Instant,
    /// Milliseconds after `started` at which the engine last began a turn.
    beat: AtomicU64,
    /// Whether the engine had work at its last turn.
    pub busy: AtomicBool,
    pub running: AtomicUsize,
    pub waiting: AtomicUsize,
    /// KV-cache positions held now (rows × positions, prompt in prefill included).
    pub batch_tokens: AtomicUsize,
    pub peak_batch_tokens: AtomicUsize,
    pub restarts: AtomicUsize,
    /// Set when shutdown starts: new requests get 503.
    pub draining: AtomicBool,
    /// Set at the shutdown deadline: every request in flight ends with an error.
    pub abort: AtomicBool,
    pub stopped: AtomicBool,
}

impl EngineStatus {
    pub(super) fn new() -> Self {
        Self {
            started: Instant::now(),
            beat: AtomicU64::new(0),
            busy: AtomicBool::new(false),
            running: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            batch_tokens: AtomicUsize::new(0),
            peak_batch_tokens: AtomicUsize::new(0),
            restarts: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            abort: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
        }
    }

    fn beat(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.beat.store(ms, Ordering::SeqCst);
    }

    /// Time since the engine last began a turn.
    pub(super) fn since_beat(&self) -> Duration {
        let now = self.started.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.beat.load(Ordering::SeqCst)))
    }
}

/// The limits the engine admits by.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub max_batch: usize,
    pub max_batch_tokens: usize,
}

/// A running request.
struct Active {
    row: Row,
    events: mpsc::UnboundedSender<Event>,
    prompt_tokens: usize,
    reserved: usize,
}

pub(super) struct Engine {
    model: NuriModel,
    processor: Arc<Processor>,
    device: Device,
    limits: Limits,
    rx: std_mpsc::Receiver<Job>,
    status: Arc<EngineStatus>,
    waiting: VecDeque<Job>,
    prefill: Option<(PendingPrompt, Active)>,
    batch: Option<Batch>,
    active: Vec<Active>,
    /// Each active row's logits for its next token.
    logits: Vec<Vec<f32>>,
    /// The tokenizer's thinking markers, kept in the decoded text for the reasoning split.
    markers: Option<(Markers, [u32; 2])>,
}

impl Engine {
    pub(super) fn new(
        model: NuriModel,
        processor: Arc<Processor>,
        device: Device,
        limits: Limits,
        rx: std_mpsc::Receiver<Job>,
        status: Arc<EngineStatus>,
    ) -> Self {
        let markers = crate::reasoning::tokenizer_markers(&processor.tokenizer);
        Self {
            markers,
            model,
            processor,
            device,
            limits,
            rx,
            status,
            waiting: VecDeque::new(),
            prefill: None,
            batch: None,
            active: Vec::new(),
            logits: Vec::new(),
        }
    }

    /// Serves until the server is gone or the shutdown deadline has passed; after a panic,
    /// fails what was in flight and serves again.
    pub(super) fn run(mut self) {
        loop {
            match catch_unwind(AssertUnwindSafe(|| self.serve())) {
                Ok(()) => break,
                Err(panic) => {
                    let why = panic
                        .downcast_ref::<String>()
                        .map(String::as_str)
                        .or_else(|| panic.downcast_ref::<&str>().copied())
                        .unwrap_or("a panic");
                    tracing::error!(
                        "the engine panicked ({why}); failing its requests and restarting"
                    );
                    // Counted before the failed requests hear of it, so that a client
                    // asking `/health` after its 500 sees the restart.
                    self.status.restarts.fetch_add(1, Ordering::SeqCst);
                    self.fail_all(&ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "engine_error",
                        "the engine failed while answering this request",
                    ));
                }
            }
        }
        self.status.stopped.store(true, Ordering::SeqCst);
    }

    fn serve(&mut self) {
        while self.receive() {
            // On rayon's pool, so that the step's parallel loops are the pool's own work
            // (see `on_compute_pool`); waiting for requests stays on this thread.
            nuri_kernels::on_compute_pool(|| {
                self.admit();
                self.advance_prefill();
                self.step();
            });
            self.publish();
        }
    }

    /// Ends every request in flight with `error` and empties the batch.
    fn fail_all(&mut self, error: &ApiError) {
        let send = |events: &mpsc::UnboundedSender<Event>| {
            let _ = events.send(Event::Error(error.clone()));
        };
        self.waiting.drain(..).for_each(|j| send(&j.events));
        while let Ok(job) = self.rx.try_recv() {
            send(&job.events);
        }
        if let Some((_, a)) = self.prefill.take() {
            send(&a.events);
        }
        self.active.drain(..).for_each(|a| send(&a.events));
        self.batch = None;
        self.logits.clear();
        self.publish();
    }

    /// Takes what has arrived (waiting for it when idle); `false` when the engine must
    /// stop: the server is gone and nothing is left, or the shutdown deadline has passed.
    fn receive(&mut self) -> bool {
        self.status.beat();
        if self.status.abort.load(Ordering::SeqCst) {
            self.fail_all(&ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the server is shutting down and ended this request at its deadline",
            ));
            return false;
        }
        let idle = self.active.is_empty() && self.prefill.is_none() && self.waiting.is_empty();
        self.status.busy.store(!idle, Ordering::SeqCst);
        if idle {
            match self.rx.recv_timeout(Duration::from_millis(100)) {
                Ok(job) => self.waiting.push_back(job),
                Err(std_mpsc::RecvTimeoutError::Timeout) => return true,
                Err(std_mpsc::RecvTimeoutError::Disconnected) => return false,
            }
        }
        while let Ok(job) = self.rx.try_recv() {
            self.waiting.push_back(job);
        }
        // A request whose client went away is dropped before any work.
        self.waiting.retain(|j| !j.events.is_closed());
        true
    }

    /// Starts the next waiting request when the batch has room for it: one prefill at a
    /// time; at most `max_batch` rows; and, unless the batch is empty, rows × the longest
    /// reservation (prompt + answer) within `max_batch_tokens`.
    fn admit(&mut self) {
        while self.prefill.is_none() {
            let Some(job) = self.waiting.front() else {
                return;
            };
            let rows = self.active.len() + 1;
            let longest = self
                .active
                .iter()
                .map(|a| a.reserved)
                .chain([job.reserved()])
                .max()
                .unwrap_or(0);
            if !self.active.is_empty()
                && (rows > self.limits.max_batch || rows * longest > self.limits.max_batch_tokens)
            {
                return;
            }
            let job = self.waiting.pop_front().expect("a waiting job");
            let Job {
                input,
                params,
                prompt,
                events,
                slot,
                panic,
                thinking,
            } = job;
            drop(slot);
            let (reserved, prompt_tokens) = (prompt.len() + params.max_new_tokens, prompt.len());
            let mut row = Row::new(params, prompt);
            if let Some((markers, inside)) = thinking {
                row.think(markers, inside);
            }
            let active = Active {
                prompt_tokens,
                row,
                events,
                reserved,
            };
            match self.model.begin_prompt(&input.to_model_input(&self.device)) {
                Ok(pending) => {
                    self.prefill = Some((pending, active));
                    if panic {
                        panic!("a test asked the engine to panic");
                    }
                }
                Err(e) => {
                    let _ = active.events.send(Event::Error(ApiError::bad(
                        "invalid_request",
                        format!("the model cannot take this prompt: {e}"),
                    )));
                }
            }
        }
    }

    /// Runs one chunk of the prompt being prefilled; a finished prompt joins the batch.
    fn advance_prefill(&mut self) {
        let Some((pending, active)) = self.prefill.take() else {
            return;
        };
        if active.events.is_closed() {
            return;
        }
        match self.model.prefill_chunk(pending, PREFILL_CHUNK) {
            Prefilled::Pending(pending) => self.prefill = Some((*pending, active)),
            Prefilled::Ready(batch, logits) => {
                match &mut self.batch {
                    Some(running) => running.merge(batch),
                    None => self.batch = Some(batch),
                }
                self.logits.extend(logits);
                self.active.push(active);
            }
        }
    }

    /// Samples every running row; rows that are done (or whose client left) leave, and
    /// the rest take one decoding step together.
    fn step(&mut self) {
        if self.active.is_empty() {
            return;
        }
        let tokenizer = &self.processor.tokenizer;
        let eos = &tokenizer.special.eos;
        // The thinking markers stay in the text, for the reasoning split (`chat.rs`).
        let markers = self.markers.as_ref();
        let decode = |ids: &[u32]| decode_keeping_markers(tokenizer, ids, markers);
        let mut keep = Vec::with_capacity(self.active.len());
        let mut feed = Vec::with_capacity(self.active.len());
        for (i, a) in self.active.iter_mut().enumerate() {
            if a.events.is_closed() {
                continue;
            }
            let events = &a.events;
            let next = a.row.next(&self.logits[i], eos, &decode, &mut |piece| {
                let _ = events.send(Event::Piece(piece.to_string()));
            });
            if let Some(token) = next {
                keep.push(i);
                feed.push(token);
            }
        }
        let rows = std::mem::take(&mut self.active);
        let total = rows.len();
        let mut kept = keep.iter().peekable();
        for (i, a) in rows.into_iter().enumerate() {
            if kept.peek() == Some(&&i) {
                kept.next();
                self.active.push(a);
            } else if !a.events.is_closed() {
                let _ = a
                    .events
                    .send(Event::Done(a.row.into_generated(a.prompt_tokens)));
            }
        }
        let Some(batch) = self.batch.as_mut() else {
            return;
        };
        if keep.is_empty() {
            self.batch = None;
            self.logits.clear();
            return;
        }
        if keep.len() < total {
            batch.retain(&keep);
        }
        self.logits = self.model.decode(batch, &feed);
    }

    /// Publishes the engine's counts for `/health`.
    fn publish(&self) {
        let s = &self.status;
        let prefilling = self.prefill.as_ref().map_or(0, |(p, _)| p.cached());
        let held = self.batch.as_ref().map_or(0, |b| b.rows() * b.seq_len()) + prefilling;
        s.running.store(
            self.active.len() + usize::from(self.prefill.is_some()),
            Ordering::SeqCst,
        );
        s.waiting.store(self.waiting.len(), Ordering::SeqCst);
        s.batch_tokens.store(held, Ordering::SeqCst);
        s.peak_batch_tokens.fetch_max(held, Ordering::SeqCst);
    }
}
