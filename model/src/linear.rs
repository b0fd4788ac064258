//! The linear layer of every block: Burn's `Linear` parameters (`weight` `[in, out]`, an
//! optional `bias`), plus, when the weight is kept quantized, its packed rows. Its forward is
//! `nuri_kernels::linear` (a weight in bf16 or in the checkpoint's `[out, in]` rows works with
//! activations in f32 and streams at memory speed when decoding on the CPU) or
//! `nuri_kernels::packed_linear` (the weight in one of `nuri_kernels::quant`'s formats).

use burn::module::{Module, Param};
use burn::tensor::{Int, Tensor};

/// A linear layer `x·W + b`.
#[derive(Module, Debug)]
pub struct Linear {
    /// `[in, out]`; an empty `[0, 0]` tensor when `packed` holds the weight.
    pub weight: Param<Tensor<2>>,
    pub bias: Option<Param<Tensor<1>>>,
    /// The checkpoint's `[out, in]` weight in a quantized format: `[out, row_bytes]` bytes
    /// (Burn `U8`), see `nuri_kernels::quant`.
    pub packed: Option<Param<Tensor<2, Int>>>,
}

impl From<burn::nn::Linear> for Linear {
    fn from(l: burn::nn::Linear) -> Self {
        Self {
            weight: l.weight,
            bias: l.bias,
            packed: None,
        }
    }
}

/// `x·W + b` for a linear layer, in `x`'s dtype whatever the weight's.
pub trait Project {
    /// # Shapes
    /// - `x`: `[..., in]` → `[..., out]`
    fn project<const D: usize>(&self, x: Tensor<D>) -> Tensor<D>;
}

impl Project for Linear {
    fn project<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let bias = self.bias.as_ref().map(|b| b.val());
        match &self.packed {
            Some(packed) => nuri_kernels::packed_linear(x, packed.val(), bias),
            None => nuri_kernels::linear(x, self.weight.val(), bias),
        }
    }
}

/// Visits every linear layer of a module with its path (the module path of its parameters,
/// without `.weight`), mutably: how a loaded model's layers take their quantized weights.
pub trait EachLinear {
    fn each_linear(&mut self, path: &str, f: &mut dyn FnMut(&str, &mut Linear));
}

/// `prefix.name`, or `name` at the root.
pub(crate) fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

impl EachLinear for Linear {
    fn each_linear(&mut self, path: &str, f: &mut dyn FnMut(&str, &mut Linear)) {
        f(path, self);
    }
}

impl<T: EachLinear> EachLinear for Option<T> {
    fn each_linear(&mut self, path: &str, f: &mut dyn FnMut(&str, &mut Linear)) {
        if let Some(m) = self {
            m.each_linear(path, f);
        }
    }
}

impl<T: EachLinear> EachLinear for Vec<T> {
    fn each_linear(&mut self, path: &str, f: &mut dyn FnMut(&str, &mut Linear)) {
        for (i, m) in self.iter_mut().enumerate() {
            m.each_linear(&join(path, &i.to_string()), f);
        }
    }
}

/// Implements [`EachLinear`] for a module by visiting the named fields (those that hold
/// linear layers, in any depth), under their field names as Burn's module paths name them.
macro_rules! each_linear {
    ($ty:ty: $($field:ident),+) => {
        impl EachLinear for $ty {
            fn each_linear(&mut self, path: &str, f: &mut dyn FnMut(&str, &mut Linear)) {
                $(self.$field.each_linear(&join(path, stringify!($field)), f);)+
            }
        }
    };
}

each_linear!(crate::multimodal::NuriModel: model, lm_head);
each_linear!(crate::multimodal::NuriBody: visual, projector, language_model);
each_linear!(crate::decoder::CausalLm: model, lm_head);
each_linear!(crate::decoder::TextModel: layers);
each_linear!(crate::decoder::DecoderLayer: self_attn, mlp);
each_linear!(crate::attention::Attention: q_proj, k_proj, v_proj, o_proj);
each_linear!(crate::mlp::Mlp: gate_proj, up_proj, down_proj);
each_linear!(crate::vision::vit::VisionTransformer: blocks, merger);
each_linear!(crate::vision::vit::VisionBlock: attn, mlp);
each_linear!(crate::vision::vit::VisionAttention: qkv, proj);
each_linear!(crate::vision::vit::VisionMlp: fc1, fc2, gate_proj, up_proj, down_proj);
each_linear!(crate::vision::projector::PatchMerger: fc1, fc2);

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::ModuleVisitor;
    use burn::tensor::Device;

    /// The walk reaches every linear layer under the path Burn's module visit gives its
    /// weight: a field left out of an `each_linear!` list would fail here.
    #[test]
    fn the_walk_reaches_every_linear_layer_by_its_module_path() {
        #[derive(Default)]
        struct Paths {
            path: Vec<String>,
            containers: Vec<String>,
            linears: Vec<String>,
        }
        impl ModuleVisitor for Paths {
            fn enter_module(&mut self, name: &str, container_type: &str) {
                self.path.push(name.to_string());
                self.containers.push(container_type.to_string());
            }
            fn exit_module(&mut self, _: &str, _: &str) {
                self.path.pop();
                self.containers.pop();
            }
            fn visit_float<const D: usize>(&mut self, _: &Param<Tensor<D>>) {
                let inside = self.containers.last().map(String::as_str);
                if inside == Some("Struct:Linear")
                    && self.path.last().is_some_and(|n| n == "weight")
                {
                    self.linears
                        .push(self.path[..self.path.len() - 1].join("."));
                }
            }
        }
        let device = Device::flex();
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/families");
        let families = [
            "qwen2_5_vl",
            "exaone4_5",
            "hyperclovax_vision_v2",
            "exaone4",
        ];
        for family in families {
            let dir = root.join(family).join("model");
            let config = crate::hf_config::read_hf_config(&dir.join("config.json")).unwrap();
            let mut model = crate::multimodal::NuriModel::new(&config, &device).unwrap();
            let mut seen = Paths::default();
            model.visit(&mut seen);
            let mut walked = Vec::new();
            model.each_linear("", &mut |path, _| walked.push(path.to_string()));
            assert!(!walked.is_empty());
            assert_eq!(walked, seen.linears, "{family}");
        }
    }
}
