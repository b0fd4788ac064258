//! The `nuri` crate: the command line and what it shares with the examples and tests.

pub mod alloc;
pub mod bench;
pub mod check;
pub mod device;
pub mod generate;
pub mod preprocess;
pub mod quickstart;
pub mod shapes;
pub mod tokenizer_train;

pub use device::{DeviceChoice, DeviceError};
