//! The `nuri` crate: the command line and what it shares with the examples and tests.

pub mod alloc;
pub mod bench;
pub mod check;
pub mod cli;
pub mod device;
pub mod eval;
pub mod generate;
pub mod logging;
pub mod preprocess;
pub mod quickstart;
pub mod serve;
pub mod shapes;
pub mod tokenizer_train;

pub use device::{DeviceChoice, DeviceError};

/// Runs `f` on a worker of rayon's global pool (the threads that Burn's CPU kernels and the
/// fused operations use) and waits for it. The calling thread then sleeps instead of
/// competing with the pool's threads for the cores: on 2 cores the quickstart training step
/// ran ~8% faster (`nuri bench --preset quickstart --only train`, alternating rounds).
///
/// With a single worker it runs `f` here instead: a worker blocked on a channel (the trainer
/// waiting for its data loader) would leave the pool no thread for other work.
pub fn on_compute_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_num_threads() < 2 {
        return f();
    }
    rayon::scope(|_| f())
}
