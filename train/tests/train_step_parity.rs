//! The training step equals PyTorch's (transformers' Qwen2-VL, fp32, eager attention) on the
//! tiny fixture model (`tools/reference/make_train_step_fixture.py`): the loss and every
//! parameter's gradient of one forward/backward over a padded two-row batch with images,
//! within a relative 1e-4, and the losses of 10 AdamW steps on that batch.

#[path = "../../model/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, Param};
use burn::optim::GradientsParams;
use burn::tensor::Gradients;
use burn::tensor::{DType, Device, Tensor};
use common::{Case, max_abs_diff};
use nuri_model::{NuriModel, load_pretrained, save_pretrained};
use nuri_train::config::OptimConfig;
use nuri_train::loss::labelled_loss;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

/// Each parameter replaced by its gradient (zeros where it got none), so that the export
/// writes the gradients under the checkpoint's names and layout.
struct ToGradient<'a>(&'a Gradients);

impl ModuleMapper for ToGradient<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, value, _) = param.consume();
        let grad = value
            .grad(self.0)
            .unwrap_or_else(|| value.clone().inner().zeros_like());
        Param::initialized(id, grad)
    }
}

fn loss(model: &NuriModel, case: &Case, labels: &[i64], device: &Device) -> Tensor<1> {
    let input = case.input(device);
    let (hidden, _, _) = model.hidden_states(&input, None).expect("a forward pass");
    labelled_loss(model, hidden, labels, device).0
}

#[test]
fn one_step_and_ten_adamw_steps_equal_pytorch() {
    let dir = fixtures().join("train_step");
    let steps: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("steps.json")).expect("steps.json"))
            .expect("json");
    let case = Case::open(&fixtures().join(format!(
        "cases/{}.safetensors",
        steps["case"].as_str().expect("case")
    )));
    let labels = Case::open(&dir.join("labels.safetensors")).ints("labels").0;
    let device = Device::flex().autodiff();
    let (config, mut model) =
        load_pretrained(&fixtures().join("qwen2vl-tiny"), &device, DType::F32).expect("model");

    // One forward/backward: the loss and every gradient.
    let l = loss(&model, &case, &labels, &device);
    let value = f64::from(l.clone().into_scalar::<f32>());
    let want = steps["loss"].as_f64().expect("loss");
    assert!(
        (value - want).abs() <= 1e-4 * want.abs(),
        "loss {value} vs {want}"
    );
    let grads = l.backward();
    let as_grads = model.clone().map(&mut ToGradient(&grads));
    let out = std::env::temp_dir().join(format!("nuri-train-step-{}", std::process::id()));
    save_pretrained(&as_grads, &config, &out).expect("export");
    let ours = Case::open(&out.join("model.safetensors"));
    let theirs = Case::open(&dir.join("grads.safetensors"));
    let names: Vec<String> = theirs
        .tensors()
        .names()
        .into_iter()
        .map(String::from)
        .collect();
    let mut report = Vec::new();
    let mut worst = 0.0f32;
    for name in &names {
        let (a, b) = (ours.floats(name).0, theirs.floats(name).0);
        assert_eq!(a.len(), b.len(), "{name}");
        let scale = b.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let diff = max_abs_diff(&a, &b);
        let rel = if scale > 0.0 { diff / scale } else { diff };
        worst = worst.max(rel);
        if rel > 1e-4 {
            report.push(format!(
                "{name}: max diff {diff:.3e} of max |grad| {scale:.3e}"
            ));
        }
    }
    assert_eq!(names.len(), 58);
    assert!(
        report.is_empty(),
        "gradients differ:\n{}",
        report.join("\n")
    );
    eprintln!("worst relative gradient error {worst:.2e}");
    let _ = std::fs::remove_dir_all(&out);

    // Ten AdamW steps on the same batch, with the run's optimizer.
    let adamw = &steps["adamw"];
    let o = OptimConfig {
        beta1: adamw["beta1"].as_f64().expect("beta1"),
        beta2: adamw["beta2"].as_f64().expect("beta2"),
        eps: adamw["eps"].as_f64().expect("eps"),
        weight_decay: adamw["weight_decay"].as_f64().expect("weight decay"),
        ..OptimConfig::default()
    };
    let lr = adamw["lr"].as_f64().expect("lr");
    let mut optim = nuri_train::setup::adamw(&o);
    let mut losses = Vec::new();
    for _ in 0..10 {
        let l = loss(&model, &case, &labels, &device);
        losses.push(f64::from(l.clone().into_scalar::<f32>()));
        let grads = GradientsParams::from_grads(l.backward(), &model);
        model = optim.step(lr, model, grads);
    }
    let want: Vec<f64> = steps["losses"]
        .as_array()
        .expect("losses")
        .iter()
        .map(|v| v.as_f64().expect("a loss"))
        .collect();
    let worst_loss = losses
        .iter()
        .zip(&want)
        .fold(0.0f64, |m, (g, w)| m.max((g - w).abs() / w.abs()));
    eprintln!("losses {losses:?}; worst relative difference {worst_loss:.2e}");
    assert_eq!(losses.len(), want.len());
    for (i, (got, want)) in losses.iter().zip(&want).enumerate() {
        assert!(
            (got - want).abs() <= 1e-4 * want.abs(),
            "step {i}: loss {got} vs {want} (all: {losses:?} vs {want:?})"
        );
    }
}
