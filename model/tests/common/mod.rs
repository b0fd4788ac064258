//! Reading the reference fixtures (`tools/reference/`): one safetensors file per case.

#![allow(dead_code)]

use std::path::Path;

use burn::tensor::{Device, Int, Tensor, TensorData};
use nuri_model::MultimodalInput;
use safetensors::{Dtype, SafeTensors};

/// One case file's tensors.
pub struct Case {
    bytes: Vec<u8>,
}

impl Case {
    pub fn open(path: &Path) -> Self {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        Self { bytes }
    }

    pub fn tensors(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("a valid safetensors fixture")
    }

    pub fn has(&self, name: &str) -> bool {
        self.tensors().names().contains(&name)
    }

    pub fn ints(&self, name: &str) -> (Vec<i64>, Vec<usize>) {
        let tensors = self.tensors();
        let view = tensors
            .tensor(name)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(view.dtype(), Dtype::I64, "{name}");
        let values = view
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect();
        (values, view.shape().to_vec())
    }

    pub fn floats(&self, name: &str) -> (Vec<f32>, Vec<usize>) {
        let tensors = self.tensors();
        let view = tensors
            .tensor(name)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(view.dtype(), Dtype::F32, "{name}");
        let values = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
            .collect();
        (values, view.shape().to_vec())
    }

    pub fn grids(&self, name: &str) -> Vec<[usize; 3]> {
        if !self.has(name) {
            return Vec::new();
        }
        let (values, _) = self.ints(name);
        values
            .chunks(3)
            .map(|g| [g[0] as usize, g[1] as usize, g[2] as usize])
            .collect()
    }

    pub fn input(&self, device: &Device) -> MultimodalInput {
        let int2 = |name: &str| {
            let (values, shape) = self.ints(name);
            Tensor::<2, Int>::from_data(TensorData::new(values, [shape[0], shape[1]]), device)
        };
        let pixels = |name: &str| {
            self.has(name).then(|| {
                let (values, shape) = self.floats(name);
                Tensor::<2>::from_data(TensorData::new(values, [shape[0], shape[1]]), device)
            })
        };
        MultimodalInput {
            input_ids: int2("input_ids"),
            attention_mask: Some(int2("attention_mask")),
            pixel_values: pixels("pixel_values"),
            image_grid_thw: self.grids("image_grid_thw"),
            pixel_values_videos: pixels("pixel_values_videos"),
            video_grid_thw: self.grids("video_grid_thw"),
            second_per_grid_ts: if self.has("second_per_grid_ts") {
                self.floats("second_per_grid_ts")
                    .0
                    .into_iter()
                    .map(f64::from)
                    .collect()
            } else {
                Vec::new()
            },
        }
    }
}

/// The largest absolute difference between two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "sizes differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A float tensor's values on the host.
pub fn floats_of<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32")
}
