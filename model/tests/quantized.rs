//! Weight-only quantization on the tiny fixture (random weights: small greedy margins, and
//! bf16 itself is 1–2% of the largest logit from f32 there): q8 decodes bf16's greedy tokens
//! on most cases, and where it does not, bf16's own margin at that step was within q8's error;
//! q4 stays near; quantizing at load holds only the packed weights (the loader's own
//! accounting); a quantized checkpoint (`nuri quantize`) saves and loads back bit for bit; an
//! AWQ checkpoint, packed here as AutoAWQ packs it (GEMM order), loads into packed rows that
//! hold exactly its values, and answers near the float model of those values.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::{DType, Device, f16};
use common::{Case, floats_of};
use nuri_kernels::quant::Scheme;
use nuri_model::{LoadOptions, NuriModel, Quantize, load_pretrained_with, save_pretrained};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

/// The exact (f32-activation) loops: AMX tiles round a prefill's activations to bf16, which
/// these comparisons of weights alone would see (the kernels' own tests cover the tiles). Set
/// by every test of this binary before its first product, so whichever test asks first, the
/// answer is the same.
fn without_amx() {
    // SAFETY: every test of this binary sets the same value before it reads it.
    unsafe { std::env::set_var("NURI_NO_AMX", "1") };
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nuri-quant-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const CASES: [&str; 4] = ["text_only", "one_image", "two_images", "video"];

fn cpu(quantize: Option<Scheme>) -> LoadOptions {
    LoadOptions {
        matrices: DType::BF16,
        rest: DType::F32,
        mmap: false,
        quantize: quantize.map(|scheme| Quantize {
            scheme,
            vision: false,
        }),
    }
}

/// Each case's last-position logits and 16 greedy tokens.
fn run(model: &NuriModel, device: &Device) -> Vec<(Vec<f32>, Vec<i64>)> {
    CASES
        .iter()
        .map(|name| {
            let case = Case::open(&fixtures().join(format!("cases/{name}.safetensors")));
            let input = case.input(device);
            let logits = floats_of(model.prefill(&input, None).expect("prefill").logits);
            let tokens = model.greedy(&input, 16).expect("greedy").concat();
            (logits, tokens)
        })
        .collect()
}

/// The logits of the next token after the (batch-1) `input` followed by `prefix`.
fn step_logits(model: &NuriModel, input: &nuri_model::MultimodalInput, prefix: &[i64]) -> Vec<f32> {
    use burn::tensor::{Int, Tensor, TensorData};
    let device = input.input_ids.device();
    let extra =
        Tensor::<2, Int>::from_data(TensorData::new(prefix.to_vec(), [1, prefix.len()]), &device);
    let mut input = input.clone();
    input.input_ids = Tensor::cat(vec![input.input_ids, extra], 1);
    input.attention_mask = input
        .attention_mask
        .map(|m| Tensor::cat(vec![m, Tensor::ones([1, prefix.len()], &device)], 1));
    let logits = model.prefill(&input, None).expect("prefill").logits;
    let [_, seq, vocab] = logits.dims();
    floats_of(logits.narrow(1, seq - 1, 1).reshape([vocab]))
}

/// The largest logit difference relative to the reference's largest logit.
fn relative(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    common::max_abs_diff(a, b) / scale
}

#[test]
fn q8_decodes_the_tokens_of_bf16_and_q4_stays_near() {
    without_amx();
    let device = Device::flex();
    let dir = fixtures().join("qwen2vl-tiny");
    let (_, dense, _) = load_pretrained_with(&dir, &device, cpu(None)).expect("bf16");
    let want = run(&dense, &device);
    for (scheme, tolerance) in [(Scheme::Q8, 0.05), (Scheme::Q4, 0.8)] {
        let (_, model, report) =
            load_pretrained_with(&dir, &device, cpu(Some(scheme))).expect("quantized");
        let got = run(&model, &device);
        let mut same = 0;
        for (name, ((gl, gt), (wl, wt))) in CASES.iter().zip(got.iter().zip(&want)) {
            let err = relative(gl, wl);
            println!(
                "{scheme:?} {name}: logits {err:.2e} of the largest, tokens equal: {}",
                gt == wt
            );
            assert!(err < tolerance, "{scheme:?} {name}: logits differ by {err}");
            same += usize::from(gt == wt);
            if scheme != Scheme::Q8 {
                continue;
            }
            // Where q8 picks another token, bf16 itself hardly prefers its own: the margin
            // of bf16's choice is within q8's error at that step.
            if let Some(d) = gt.iter().zip(wt).position(|(a, b)| a != b) {
                let case = Case::open(&fixtures().join(format!("cases/{name}.safetensors")));
                let input = case.input(&device);
                let reference = step_logits(&dense, &input, &wt[..d]);
                let quantized = step_logits(&model, &input, &wt[..d]);
                let mut sorted = reference.clone();
                sorted.sort_by(|a, b| b.total_cmp(a));
                let margin = sorted[0] - sorted[1];
                let err = common::max_abs_diff(&quantized, &reference);
                println!("  step {d}: bf16's margin {margin:.2e}, q8's error there {err:.2e}");
                assert!(
                    margin < 2.0 * err,
                    "{name}: q8 flips a decided token at step {d}"
                );
            }
        }
        if scheme == Scheme::Q8 {
            assert!(
                2 * same > CASES.len(),
                "q8's greedy tokens are bf16's on most cases"
            );
        }
        // Quantized as read: the loader held the packed weights and one tensor in flight.
        let largest = 4 * 256 * 64; // the lm_head in f32, the largest tensor read
        assert!(
            report.peak_bytes <= report.bytes + 2 * largest as u64,
            "{report:?}"
        );
    }
}

#[test]
fn a_quantized_checkpoint_saves_and_loads_back_bit_for_bit() {
    without_amx();
    let device = Device::flex();
    let (config, model, report) = load_pretrained_with(
        &fixtures().join("qwen2vl-tiny"),
        &device,
        cpu(Some(Scheme::Q4)),
    )
    .expect("q4");
    let dir = scratch_dir("saved");
    save_pretrained(&model, &config, &dir).expect("save");
    let written = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&written).unwrap();
    let q = st
        .tensor("model.layers.0.self_attn.q_proj.weight_packed")
        .expect("packed rows");
    assert_eq!(
        (q.dtype(), q.shape()),
        (Dtype::U8, &[64, Scheme::Q4.row_bytes(64)][..])
    );
    assert!(st.tensor("model.layers.0.self_attn.q_proj.weight").is_err());
    // The output layer at 8 bits, the vision tower in its float dtype.
    let head = st.tensor("lm_head.weight_packed").expect("packed head");
    assert_eq!(head.shape(), &[256, Scheme::Q8.row_bytes(64)]);
    assert!(st.tensor("visual.blocks.0.attn.qkv.weight").is_ok());
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(json["quantization_config"]["quant_method"], "nuri");
    assert_eq!(json["quantization_config"]["bits"], 4);

    let (_, back, back_report) = load_pretrained_with(&dir, &device, cpu(None)).expect("reload");
    assert_eq!(back_report.bytes, report.bytes);
    let (a, b) = (run(&model, &device), run(&back, &device));
    for ((al, at), (bl, bt)) in a.iter().zip(&b) {
        assert_eq!(al, bl);
        assert_eq!(at, bt);
    }
    // Asking for other bits than the checkpoint's is a named error.
    let err = load_pretrained_with(&dir, &device, cpu(Some(Scheme::Q8)))
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("kept in 4 bits") && err.contains("requantized to 8"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// AutoAWQ's GEMM packing: output columns `[0, 2, 4, 6, 1, 3, 5, 7]` of each group of eight
/// into the 4-bit fields 0..8 of one int32 (`awq/utils/packing_utils.py`, `AWQ_ORDER`).
fn awq_pack(values: &[u8], rows: usize, cols: usize) -> Vec<i32> {
    const ORDER: [usize; 8] = [0, 2, 4, 6, 1, 3, 5, 7];
    let mut out = vec![0i32; rows * cols / 8];
    for r in 0..rows {
        for c in 0..cols / 8 {
            let mut word = 0u32;
            for (field, &col) in ORDER.iter().enumerate() {
                word |= u32::from(values[r * cols + c * 8 + col]) << (4 * field);
            }
            out[r * cols / 8 + c] = word as i32;
        }
    }
    out
}

/// AWQ's quantization of a `[out, in]` weight over groups of `g` inputs (zero point, 4 bits):
/// `qweight` `[in, out/8]`, `qzeros` `[in/g, out/8]`, `scales` `[in/g, out]`, and the
/// dequantized `[out, in]` values.
fn awq(w: &[f32], out: usize, inp: usize, g: usize) -> (Vec<i32>, Vec<i32>, Vec<f16>, Vec<f32>) {
    let groups = inp / g;
    let mut q = vec![0u8; inp * out]; // [in, out]
    let mut z = vec![0u8; groups * out];
    let mut s = vec![f16::ZERO; groups * out];
    let mut back = vec![0f32; out * inp];
    for o in 0..out {
        for gi in 0..groups {
            let vals = &w[o * inp + gi * g..o * inp + (gi + 1) * g];
            let lo = vals.iter().fold(f32::INFINITY, |a, &v| a.min(v));
            let hi = vals.iter().fold(f32::NEG_INFINITY, |a, &v| a.max(v));
            let scale = f16::from_f32(((hi - lo) / 15.0).max(1e-5));
            let sf = scale.to_f32();
            let zero = (-lo / sf).round().clamp(0.0, 15.0);
            s[gi * out + o] = scale;
            z[gi * out + o] = zero as u8;
            for (j, &v) in vals.iter().enumerate() {
                let i = gi * g + j;
                let code = ((v / sf).round() + zero).clamp(0.0, 15.0);
                q[i * out + o] = code as u8;
                back[o * inp + i] = (code - zero) * sf;
            }
        }
    }
    (awq_pack(&q, inp, out), awq_pack(&z, groups, out), s, back)
}

#[test]
fn an_awq_checkpoint_loads_as_the_float_model_of_its_values() {
    without_amx();
    let src = fixtures().join("qwen2vl-tiny");
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut awq_files: BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)> = BTreeMap::new();
    let mut dense_files = awq_files.clone();
    let mut expected: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    let le = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    for (name, view) in st.tensors() {
        let entry = (view.dtype(), view.shape().to_vec(), view.data().to_vec());
        let quantized = name.starts_with("model.layers.") && name.ends_with("proj.weight");
        if !quantized {
            awq_files.insert(name.clone(), entry.clone());
            dense_files.insert(name, entry);
            continue;
        }
        let (out, inp) = (view.shape()[0], view.shape()[1]);
        let w: Vec<f32> = view
            .data()
            .chunks(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let (qweight, qzeros, scales, back) = awq(&w, out, inp, 64);
        expected.insert(name.clone(), back.clone());
        let base = name.strip_suffix(".weight").unwrap();
        let ints = |v: &[i32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        awq_files.insert(
            format!("{base}.qweight"),
            (Dtype::I32, vec![inp, out / 8], ints(&qweight)),
        );
        awq_files.insert(
            format!("{base}.qzeros"),
            (Dtype::I32, vec![inp / 64, out / 8], ints(&qzeros)),
        );
        let halves: Vec<u8> = scales.iter().flat_map(|h| h.to_le_bytes()).collect();
        awq_files.insert(
            format!("{base}.scales"),
            (Dtype::F16, vec![inp / 64, out], halves),
        );
        dense_files.insert(name, (Dtype::F32, vec![out, inp], le(&back)));
    }
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("config.json")).unwrap()).unwrap();
    let write = |dir: &Path,
                 files: &BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>,
                 q: Option<serde_json::Value>| {
        let views: Vec<(String, TensorView<'_>)> = files
            .iter()
            .map(|(n, (d, s, b))| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
        let mut config = config.clone();
        if let Some(q) = q {
            config["quantization_config"] = q;
        }
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    };
    let (awq_dir, dense_dir) = (scratch_dir("awq"), scratch_dir("dense"));
    let declared = serde_json::json!({
        "quant_method": "awq", "bits": 4, "group_size": 64, "zero_point": true, "version": "gemm"
    });
    write(&awq_dir, &awq_files, Some(declared));
    write(&dense_dir, &dense_files, None);

    let device = Device::flex();
    let f32s = LoadOptions::all(DType::F32);
    let (_, awq_model, _) = load_pretrained_with(&awq_dir, &device, f32s).expect("awq");
    let (_, dense, _) = load_pretrained_with(&dense_dir, &device, f32s).expect("dense");
    // Every layer's packed rows hold exactly AWQ's values (its codes, zeros and scales carried
    // over), and the model built on them answers as the float model of those values does.
    let mut awq_model = awq_model;
    let mut layers = 0;
    nuri_model::linear::EachLinear::each_linear(&mut awq_model, "", &mut |path, linear| {
        let Some(packed) = &linear.packed else {
            return;
        };
        let name = path.replace("model.language_model.", "model.") + ".weight";
        let want = &expected[&name];
        let data = packed.val().into_data();
        let k = want.len() / packed.val().dims()[0];
        let got = nuri_kernels::quant::dequantize_rows(data.as_bytes(), k, Scheme::Q4);
        assert_eq!(&got, want, "{path}");
        layers += 1;
    });
    assert_eq!(layers, expected.len());
    for ((al, _), (dl, _)) in run(&awq_model, &device).iter().zip(&run(&dense, &device)) {
        // Decoding (and prompts under 16 tokens) quantizes a 4-bit layer's activations to
        // int8, so the logits are near, not equal.
        let err = relative(al, dl);
        assert!(err < 0.05, "AWQ's logits differ from its values' by {err}");
    }
    // Another method's tensors under the same names are refused by name.
    let declared = serde_json::json!({"quant_method": "gptq", "bits": 4, "group_size": 64});
    write(&awq_dir, &awq_files, Some(declared));
    let err = load_pretrained_with(&awq_dir, &device, f32s)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("gptq") && err.contains("quant_method"),
        "{err}"
    );
    for dir in [awq_dir, dense_dir] {
        let _ = std::fs::remove_dir_all(dir);
    }
}
