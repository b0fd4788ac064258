//! The backbone's forward on the wgpu device equals the CPU device's (within 1e-3), on the
//! same weights and inputs. Runs with `--features wgpu`; on a machine without a GPU, Mesa's
//! lavapipe (`mesa-vulkan-drivers`) provides the Vulkan device.
#![cfg(feature = "wgpu")]

use burn::module::Module;
use burn::tensor::{Int, Tensor, TensorData};
use nuri::DeviceChoice;
use nuri_model::{CausalLm, TextConfig};

#[test]
fn backbone_forward_on_wgpu_equals_cpu() {
    let cpu = DeviceChoice::Cpu.device().expect("cpu");
    let gpu = DeviceChoice::Wgpu
        .device()
        .expect("built with --features wgpu");
    let config = TextConfig::tiny();
    let model = CausalLm::new(&config, &cpu).expect("valid");
    let ids: Vec<i64> = (0..16)
        .map(|i| (i * 29 + 3) % config.vocab_size as i64)
        .collect();
    let mask: Vec<i64> = [vec![0; 3], vec![1; 5], vec![1; 8]].concat();
    let run = |model: &CausalLm, device| {
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [2, 8]), device);
        let mask = Tensor::<2, Int>::from_data(TensorData::new(mask.clone(), [2, 8]), device);
        let logits = model.forward(ids, Some(mask), None, None);
        logits.into_data().try_to_vec::<f32>().expect("f32")
    };
    let on_cpu = run(&model, &cpu);
    let on_gpu = run(&model.clone().to_device(&gpu), &gpu);
    // Row 0's first three positions are padding: compare the real tokens.
    let real = |v: &[f32]| -> Vec<f32> {
        let per_pos = config.vocab_size;
        v.iter()
            .enumerate()
            .filter(|(i, _)| !(i / per_pos < 3))
            .map(|(_, x)| *x)
            .collect()
    };
    let diff = real(&on_cpu)
        .iter()
        .zip(real(&on_gpu))
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-3, "wgpu and cpu logits differ by {diff}");
}

#[test]
fn multimodal_forward_on_wgpu_equals_cpu() {
    use burn::tensor::DType;
    use nuri_model::{MultimodalInput, load_pretrained};

    let cpu = DeviceChoice::Cpu.device().expect("cpu");
    let gpu = DeviceChoice::Wgpu
        .device()
        .expect("built with --features wgpu");
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/qwen2vl-tiny");
    let (config, model) = load_pretrained(&fixture, &cpu, DType::F32).expect("fixture loads");
    let image = config.image_token_id;
    let ids = vec![
        5,
        config.vision_start_token_id,
        image,
        image,
        image,
        image,
        config.vision_end_token_id,
        7,
        9,
    ];
    let pixels: Vec<f32> = (0..16 * 1176)
        .map(|i| ((i * 7919 % 2003) as f32 / 1001.5) - 1.0)
        .collect();
    let run = |model: &nuri_model::NuriModel, device| {
        let input = MultimodalInput {
            pixel_values: Some(Tensor::from_data(
                TensorData::new(pixels.clone(), [16, 1176]),
                device,
            )),
            image_grid_thw: vec![[1, 4, 4]],
            ..MultimodalInput::text(
                Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [1, 9]), device),
                None,
            )
        };
        let logits = model
            .prefill(&input, None)
            .expect("consistent input")
            .logits;
        logits.into_data().try_to_vec::<f32>().expect("f32")
    };
    let on_cpu = run(&model, &cpu);
    let on_gpu = run(&model.clone().to_device(&gpu), &gpu);
    let diff = on_cpu
        .iter()
        .zip(&on_gpu)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        diff < 1e-3,
        "wgpu and cpu multimodal logits differ by {diff}"
    );
}

/// Every model family's fixture cases (`fixtures/families/`: Qwen2.5-VL's windowed tower and
/// timed video positions, EXAONE's sliding windows and QK-norm, HyperCLOVA X's multipliers
/// and projector) give on the wgpu device the float64 reference's logits within 1e-3.
#[test]
fn every_family_on_wgpu_equals_the_reference() {
    use burn::tensor::DType;
    use nuri_model::{MultimodalInput, load_pretrained};
    use safetensors::{Dtype, SafeTensors};

    let cpu = DeviceChoice::Cpu.device().expect("cpu");
    let gpu = DeviceChoice::Wgpu
        .device()
        .expect("built with --features wgpu");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/families");
    for family in [
        "qwen2_5_vl",
        "exaone4_5",
        "hyperclovax_vision_v2",
        "exaone4",
        "hyperclovax",
    ] {
        let dir = root.join(family);
        let (_, model) = load_pretrained(&dir.join("model"), &cpu, DType::F32).expect("loads");
        let model = model.to_device(&gpu);
        for case in ["batch_padded", "video", "image_and_video", "text_long"] {
            let path = dir.join("cases").join(format!("{case}.safetensors"));
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let st = SafeTensors::deserialize(&bytes).expect("safetensors");
            let ints = |name: &str| -> Option<(Vec<i64>, Vec<usize>)> {
                let view = st.tensor(name).ok()?;
                assert_eq!(view.dtype(), Dtype::I64);
                let values = view
                    .data()
                    .chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                    .collect();
                Some((values, view.shape().to_vec()))
            };
            let floats = |name: &str| -> Option<(Vec<f32>, Vec<usize>)> {
                let view = st.tensor(name).ok()?;
                let values = view
                    .data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                    .collect();
                Some((values, view.shape().to_vec()))
            };
            let grids = |name: &str| -> Vec<[usize; 3]> {
                ints(name).map_or(Vec::new(), |(v, _)| {
                    v.chunks(3)
                        .map(|g| [g[0] as usize, g[1] as usize, g[2] as usize])
                        .collect()
                })
            };
            let (ids, shape) = ints("input_ids").expect("ids");
            let (mask, _) = ints("attention_mask").expect("mask");
            let int2 = |v: Vec<i64>| {
                Tensor::<2, Int>::from_data(TensorData::new(v, [shape[0], shape[1]]), &gpu)
            };
            let pixels = |name: &str| {
                floats(name)
                    .map(|(v, s)| Tensor::<2>::from_data(TensorData::new(v, [s[0], s[1]]), &gpu))
            };
            let input = MultimodalInput {
                input_ids: int2(ids),
                attention_mask: Some(int2(mask.clone())),
                pixel_values: pixels("pixel_values"),
                image_grid_thw: grids("image_grid_thw"),
                pixel_values_videos: pixels("pixel_values_videos"),
                video_grid_thw: grids("video_grid_thw"),
                second_per_grid_ts: floats("second_per_grid_ts")
                    .map_or(Vec::new(), |(v, _)| v.into_iter().map(f64::from).collect()),
            };
            let got: Vec<f32> = model
                .prefill(&input, None)
                .expect("consistent fixture")
                .logits
                .into_data()
                .try_to_vec()
                .expect("f32");
            let (want, shape) = floats("logits_f64").expect("reference");
            let vocab = shape[2];
            let diff = mask
                .iter()
                .enumerate()
                .filter(|(_, m)| **m == 1)
                .flat_map(|(pos, _)| pos * vocab..(pos + 1) * vocab)
                .map(|i| (got[i] - want[i]).abs())
                .fold(0.0f32, f32::max);
            assert!(diff < 1e-3, "{family}/{case}: wgpu logits differ by {diff}");
        }
    }
}
