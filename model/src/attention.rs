//! Grouped-query self-attention as in Qwen2 (`Qwen2Attention`): q/k/v projections with bias,
//! the output projection without; rotary embedding on queries and keys; `num_key_value_heads`
//! key/value heads each shared by `num_attention_heads / num_key_value_heads` query heads.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::{Bool, Device, Tensor};
use nuri_encoders::attend::attend;

use crate::config::TextConfig;
use crate::kv_cache::LayerCache;
use crate::mlp::linear;
use crate::rope::RotaryTables;

/// Multi-head self-attention with grouped key/value heads.
#[derive(Module, Debug)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
}

impl Attention {
    /// A randomly initialized attention block of the config's shape.
    pub fn new(config: &TextConfig, device: &Device) -> Self {
        let d = config.hidden_size;
        let hd = config.head_dim();
        let (h, kvh) = (config.num_attention_heads, config.num_key_value_heads);
        Self {
            q_proj: linear(d, h * hd, true, device),
            k_proj: linear(d, kvh * hd, true, device),
            v_proj: linear(d, kvh * hd, true, device),
            o_proj: linear(h * hd, d, false, device),
            num_heads: h,
            num_kv_heads: kvh,
            head_dim: hd,
        }
    }

    /// Attends the new tokens `x` to themselves and to what `cache` holds.
    ///
    /// `mask` is `true` where attention is forbidden (see
    /// [`causal_padding_mask`](crate::mask::causal_padding_mask)); without one, attention is
    /// causal over the cached and new tokens.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]`
    /// - `rotary`: tables for the `seq` new positions
    /// - `mask`: `[batch, 1, seq, cached + seq]`
    /// - returns `[batch, seq, hidden]`
    pub fn forward(
        &self,
        x: Tensor<3>,
        rotary: &RotaryTables,
        mask: Option<Tensor<4, Bool>>,
        cache: Option<&mut LayerCache>,
    ) -> Tensor<3> {
        let [b, s, _] = x.dims();
        let (h, kvh, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let split_heads = |t: Tensor<3>, heads: usize| {
            t.reshape([b, s, heads, hd]).swap_dims(1, 2) // [b, heads, s, hd]
        };
        let q = rotary.apply(split_heads(self.q_proj.forward(x.clone()), h));
        let k = rotary.apply(split_heads(self.k_proj.forward(x.clone()), kvh));
        let v = split_heads(self.v_proj.forward(x), kvh);
        let (k, v) = match cache {
            Some(cache) => cache.append(k, v), // [b, kvh, t, hd]
            None => (k, v),
        };
        let t = k.dims()[2];
        let k = repeat_kv(k, h / kvh); // [b, h, t, hd]
        let v = repeat_kv(v, h / kvh);
        let causal = mask.is_none() && s > 1;
        let mask = mask.map(|m| m.expand([b, h, s, t]));
        let out = attend(q, k, v, mask, causal); // [b, h, s, hd]
        let out = out.swap_dims(1, 2).reshape([b, s, h * hd]); // [b, s, h * hd]
        self.o_proj.forward(out)
    }
}

/// Repeats each key/value head `n_rep` times in place (`k0 k0 k1 k1`, as the reference's
/// `repeat_kv`), so that query head `i` meets key/value head `i / n_rep`.
///
/// # Shapes
/// - `x`: `[batch, kv_heads, seq, head_dim]` → `[batch, kv_heads * n_rep, seq, head_dim]`
fn repeat_kv(x: Tensor<4>, n_rep: usize) -> Tensor<4> {
    if n_rep == 1 {
        return x;
    }
    let [b, kvh, t, hd] = x.dims();
    x.unsqueeze_dim::<5>(2) // [b, kvh, 1, t, hd]
        .expand([b, kvh, n_rep, t, hd])
        .reshape([b, kvh * n_rep, t, hd])
}
