//! Grouped-query self-attention as in Qwen2 (`Qwen2Attention`): q/k/v projections with bias,
//! the output projection without; rotary embedding on queries and keys; `num_key_value_heads`
//! key/value heads each shared by `num_attention_heads / num_key_value_heads` query heads.
//! The families vary it: EXAONE 4 normalizes each query and key head (QK-norm, before RoPE)
//! and skips RoPE in its global layers; Llama-style `attention_bias` (HyperCLOVA X) puts a
//! bias on all four projections; µP's `attention_multiplier` replaces `1 / sqrt(head_dim)`.

use crate::linear::Linear;
use burn::config::Config;
use burn::module::Module;

use crate::linear::Project;
use burn::tensor::{Bool, Device, Tensor};
use nuri_kernels::{attend, attend_grouped};

use crate::init::linear;
use crate::kv_cache::LayerCache;
use crate::norm::{RmsNorm, RmsNormConfig};
use crate::rope::RotaryTables;

/// The shape of one attention block.
#[derive(Config, Debug, PartialEq)]
pub struct AttentionConfig {
    /// Model width (input and output).
    pub hidden_size: usize,
    /// Number of query heads.
    pub num_heads: usize,
    /// Number of key/value heads (grouped-query attention when fewer than query heads).
    pub num_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Whether the q/k/v projections have a bias (Qwen2's do; its output projection has
    /// none).
    #[config(default = true)]
    pub qkv_bias: bool,
    /// Whether the output projection has a bias.
    #[config(default = false)]
    pub o_bias: bool,
    /// QK-norm: the RMSNorm epsilon of the per-head query and key norms, when there are.
    #[config(default = "None")]
    pub qk_norm: Option<f64>,
    /// The attention logits' scale when it is not `1 / sqrt(head_dim)`.
    #[config(default = "None")]
    pub scale: Option<f64>,
}

impl AttentionConfig {
    /// A randomly initialized attention block of this shape.
    pub fn init(&self, device: &Device) -> Attention {
        let (d, hd) = (self.hidden_size, self.head_dim);
        let (h, kvh) = (self.num_heads, self.num_kv_heads);
        let norm = |eps: f64| RmsNormConfig::new(hd).with_epsilon(eps).init(device);
        Attention {
            q_proj: linear(d, h * hd, self.qkv_bias, device),
            k_proj: linear(d, kvh * hd, self.qkv_bias, device),
            v_proj: linear(d, kvh * hd, self.qkv_bias, device),
            o_proj: linear(h * hd, d, self.o_bias, device),
            q_norm: self.qk_norm.map(norm),
            k_norm: self.qk_norm.map(norm),
            num_heads: h,
            num_kv_heads: kvh,
            head_dim: hd,
            // The kernels scale by 1 / sqrt(head_dim); another scale multiplies the queries.
            query_scale: self.scale.map_or(1.0, |s| s * (hd as f64).sqrt()),
        }
    }
}

/// Multi-head self-attention with grouped key/value heads.
#[derive(Module, Debug)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    /// QK-norm over each query head (EXAONE 4).
    pub q_norm: Option<RmsNorm>,
    /// QK-norm over each key head.
    pub k_norm: Option<RmsNorm>,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// Queries are multiplied by this before the kernels' `1 / sqrt(head_dim)` (1 unless
    /// the checkpoint sets its own attention scale).
    pub query_scale: f64,
}

impl Attention {
    /// Attends the new tokens `x` to themselves and to what `cache` holds.
    ///
    /// `mask` is `true` where attention is forbidden (see
    /// [`causal_padding_mask`](crate::mask::causal_padding_mask)); without one, attention is
    /// causal over the cached and new tokens. Without `rotary` (EXAONE 4's global layers)
    /// queries and keys are not rotated.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]`
    /// - `rotary`: tables for the `seq` new positions
    /// - `mask`: `[batch, 1, seq, cached + seq]` (one table per row, for every head)
    /// - returns `[batch, seq, hidden]`
    pub fn forward(
        &self,
        x: Tensor<3>,
        rotary: Option<&RotaryTables>,
        mask: Option<Tensor<4, Bool>>,
        cache: Option<&mut LayerCache>,
    ) -> Tensor<3> {
        let [b, s, _] = x.dims();
        let (h, kvh, hd) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let split_heads = |t: Tensor<3>, heads: usize| {
            t.reshape([b, s, heads, hd]).swap_dims(1, 2) // [b, heads, s, hd]
        };
        let prepare = |t: Tensor<4>, norm: &Option<RmsNorm>| {
            let t = match norm {
                Some(norm) => norm.forward(t),
                None => t,
            };
            match rotary {
                Some(rotary) => rotary.apply(t),
                None => t,
            }
        };
        let q = prepare(split_heads(self.q_proj.project(x.clone()), h), &self.q_norm);
        let q = if self.query_scale == 1.0 {
            q
        } else {
            q * self.query_scale
        };
        let k = prepare(
            split_heads(self.k_proj.project(x.clone()), kvh),
            &self.k_norm,
        );
        let v = split_heads(self.v_proj.project(x), kvh);
        let (k, v) = match cache {
            Some(cache) => cache.append(k, v), // [b, kvh, t, hd]
            None => (k, v),
        };
        let t = k.dims()[2];
        let n_rep = h / kvh;
        let out = if s == 1 && n_rep > 1 {
            // One new token (decoding): each key/value head's query heads become rows of one
            // query block, so the cached keys and values are read where they lie, never
            // repeated per query head.
            let q = q.reshape([b, kvh, n_rep, hd]); // [b, kvh, n_rep, hd]
            let mask = mask.map(|m| m.expand([b, kvh, n_rep, t]));
            attend(q, k, v, mask, false).reshape([b, h, 1, hd]) // [b, h, 1, hd]
        } else {
            // Grouped keys and a per-row mask, read as they are where the kernel can.
            attend_grouped(q, k, v, mask, s > 1) // [b, h, s, hd]
        };
        let out = out.swap_dims(1, 2).reshape([b, s, h * hd]); // [b, s, h * hd]
        self.o_proj.project(out)
    }
}
