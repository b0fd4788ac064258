//! Videos: which frames to sample and how large to make them, as `qwen_vl_utils` does.
//! (Decoding frames from files comes next.)

pub mod sampling;

pub use sampling::{
    FrameSampling, SamplingError, frame_indices, smart_nframes, video_pixel_bounds,
};
