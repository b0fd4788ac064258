//! The loader: each tensor goes into its parameter in the dtype it is kept in, without an f32
//! copy of a bf16 checkpoint — on the CPU as a view of the memory-mapped file (measured by the
//! loader's own accounting); bf16 matrices
//! with f32 activations (the CPU's `--dtype bf16`) stay near the f32 model; a lying
//! safetensors header is a named error before anything is allocated for it.

mod common;

use std::path::{Path, PathBuf};

use common::{Case, floats_of, max_abs_diff};

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{DType, Device, Tensor};
use nuri_model::{
    LoadOptions, WeightsError, keep_as_loaded, load_pretrained, load_pretrained_with,
    save_pretrained,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nuri-loading-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Every float parameter's path, dtype and bytes.
fn dtypes(model: &impl Module) -> Vec<(String, DType, usize)> {
    #[derive(Default)]
    struct V(Vec<String>, Vec<(String, DType, usize)>);
    impl ModuleVisitor for V {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.0.push(name.into());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.0.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let t = param.val();
            let bytes = t.shape().num_elements() * t.dtype().size();
            self.1.push((self.0.join("."), t.dtype(), bytes));
        }
    }
    let mut v = V::default();
    model.visit(&mut v);
    v.1
}

#[test]
fn a_bf16_checkpoint_loads_as_bf16_without_an_f32_copy() {
    let device = Device::flex();
    let (config, model) =
        load_pretrained(&fixtures().join("qwen2vl-tiny"), &device, DType::F32).expect("load");
    let dir = scratch_dir("bf16");
    save_pretrained(
        &keep_as_loaded(model, LoadOptions::all(DType::BF16)),
        &config,
        &dir,
    )
    .expect("export in bf16");

    let (_, model, report) =
        load_pretrained_with(&dir, &device, LoadOptions::all(DType::BF16).with_mmap(true))
            .expect("load bf16");
    let params = dtypes(&model);
    assert!(
        params.iter().all(|(_, d, _)| *d == DType::BF16),
        "{params:?}"
    );
    let bytes: usize = params.iter().map(|(_, _, b)| b).sum();
    assert_eq!(report.bytes, bytes as u64);
    // Nothing was converted: on the CPU every parameter is a view of the memory-mapped file,
    // and the loader allocated nothing for them.
    assert_eq!(report.mapped_bytes, report.bytes, "{report:?}");
    assert_eq!(report.peak_bytes, 0, "{report:?}");
    // Read in place, the values are the file's: the logits equal those of a load that copies
    // the matrices (f32 norms make the loader read and convert those).
    let (_, copied, copied_report) = load_pretrained_with(
        &dir,
        &device,
        LoadOptions {
            matrices: DType::BF16,
            rest: DType::F32,
            mmap: true,
            quantize: None,
        },
    )
    .expect("load with f32 norms");
    assert!(
        copied_report.mapped_bytes < copied_report.bytes,
        "{copied_report:?}"
    );
    let case = Case::open(&fixtures().join("cases/one_image.safetensors"));
    let input = case.input(&device);
    let a = floats_of(
        model
            .prefill(&input, None)
            .expect("prefill")
            .logits
            .cast(DType::F32),
    );
    let b = floats_of(copied.prefill(&input, None).expect("prefill").logits);
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(
        max_abs_diff(&a, &b) < 0.05 * scale,
        "mapped bf16 model diverges"
    );
    let file = std::fs::metadata(dir.join("model.safetensors"))
        .expect("file")
        .len();
    assert!(
        report.bytes <= file && file < report.bytes + 64 * 1024,
        "{report:?} vs {file}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bf16_matrices_with_f32_activations_from_a_sharded_f32_checkpoint() {
    let device = Device::flex();
    let dtypes_cpu = LoadOptions {
        matrices: DType::BF16,
        rest: DType::F32,
        mmap: true,
        quantize: None,
    };
    let (_, model, report) = load_pretrained_with(
        &fixtures().join("qwen2vl-tiny-sharded"),
        &device,
        dtypes_cpu,
    )
    .expect("load");
    assert_eq!(report.files, 3);
    let params = dtypes(&model);
    for (path, dtype, _) in &params {
        let matrix = path.ends_with("embed_tokens.weight")
            || (path.ends_with(".weight") && path.contains("proj"))
            || path.contains("merger.fc")
            || path.contains("attn.qkv.weight")
            || path.contains("mlp.fc");
        let is_bias_or_norm =
            path.ends_with(".bias") || path.contains("norm") || path.contains("patch_embed");
        if is_bias_or_norm {
            assert_eq!(*dtype, DType::F32, "{path}");
        } else if matrix {
            assert_eq!(*dtype, DType::BF16, "{path}");
        }
    }
    // The f32 tensors kept in f32 are views of the files; the matrices were converted. The
    // loader held the converted weights so far, one f32 tensor read and its bf16 copy: under
    // the converted bytes plus twice the largest tensor's f32 bytes.
    let kept_f32: usize = params
        .iter()
        .filter(|(_, d, _)| *d == DType::F32)
        .map(|(_, _, b)| b)
        .sum();
    assert_eq!(report.mapped_bytes, kept_f32 as u64, "{report:?}");
    let largest = params
        .iter()
        .map(|(_, d, b)| b * 4 / d.size())
        .max()
        .unwrap_or(0) as u64;
    let converted = report.bytes - report.mapped_bytes;
    assert!(
        report.peak_bytes <= converted + 2 * largest,
        "{report:?}, largest {largest}"
    );

    // The logits stay near the f32 reference's (bf16 keeps ~3 digits of each weight).
    for name in ["one_image", "video", "batch_padded"] {
        let case = Case::open(&fixtures().join(format!("cases/{name}.safetensors")));
        let logits = model
            .prefill(&case.input(&device), None)
            .expect("consistent")
            .logits;
        assert_eq!(logits.dtype(), DType::F32, "activations stay f32");
        let (want, _) = case.floats("logits");
        let got = floats_of(logits);
        let mask = case.ints("attention_mask").0;
        let vocab = want.len() / mask.len();
        let real: Vec<usize> = (0..want.len()).filter(|i| mask[i / vocab] == 1).collect();
        let diff = max_abs_diff(
            &real.iter().map(|&i| got[i]).collect::<Vec<_>>(),
            &real.iter().map(|&i| want[i]).collect::<Vec<_>>(),
        );
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(
            diff < 0.03 * scale,
            "{name}: bf16 matrices move logits by {diff} (scale {scale})"
        );
    }
}

#[test]
fn a_lying_safetensors_header_is_a_named_error() {
    let device = Device::flex();
    let dir = scratch_dir("header");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::copy(
        fixtures().join("qwen2vl-tiny/config.json"),
        dir.join("config.json"),
    )
    .expect("config");
    let weights = dir.join("model.safetensors");
    let cases: [(&str, Vec<u8>); 4] = [
        ("shorter than its 8-byte header length", vec![1, 2, 3]),
        ("its header claims", {
            let mut b = u64::MAX.to_le_bytes().to_vec();
            b.extend_from_slice(b"{}");
            b
        }),
        ("not JSON", {
            let mut b = 5u64.to_le_bytes().to_vec();
            b.extend_from_slice(b"{{{{{");
            b
        }),
        ("do not hold a F32 tensor", {
            let header = br#"{"lm_head.weight":{"dtype":"F32","shape":[1000000,1000000],"data_offsets":[0,16]}}"#;
            let mut b = (header.len() as u64).to_le_bytes().to_vec();
            b.extend_from_slice(header);
            b.extend_from_slice(&[0; 16]);
            b
        }),
    ];
    for (want, bytes) in cases {
        std::fs::write(&weights, bytes).expect("write");
        let err = load_pretrained(&dir, &device, DType::F32)
            .map(|_| ())
            .unwrap_err();
        assert!(matches!(err, WeightsError::Store { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(want) && text.contains("model.safetensors"),
            "{text}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
