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

pub use nuri_kernels::on_compute_pool;
