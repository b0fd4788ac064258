//! nuri-model: every module tree of the model: the configuration tree, the vision tower and
//! its merger ([`vision`]), the Qwen2 language backbone (embedding, RMSNorm, M-RoPE,
//! grouped-query attention, SwiGLU MLP, KV cache), the multimodal model on top of them, and
//! Hugging Face checkpoint import/export. The operations the blocks are built from are
//! `nuri-kernels`'.
//!
//! The module tree follows the reference checkpoint (Hugging Face `Qwen2VLForConditionalGeneration`),
//! so field names are tensor names.

pub mod attention;
pub mod config;
pub mod decoder;
pub mod family;
pub mod generation;
pub mod hf_config;
pub mod init;
pub mod kv_cache;
pub mod linear;
pub mod load;
pub mod mask;
pub mod mlp;
pub mod multimodal;
pub mod norm;
pub mod presets;
pub mod rope;
pub mod rope_index;
pub mod vision;
pub mod weights;

pub use attention::{Attention, AttentionConfig};
pub use config::{ConfigError, LayerType, NormLayout, RopeScaling, TextConfig};
pub use decoder::{CausalLm, DecoderLayer, DecoderLayerConfig, PREFILL_CHUNK, TextModel};
pub use family::Family;
pub use generation::{Batch, PendingPrompt, Prefilled, argmax};
pub use hf_config::{hf_config_json, read_hf_config, read_json};
pub use kv_cache::KvCache;
pub use load::{LoadOptions, LoadReport, Quantize, keep_as_loaded, quantize_model};
pub use mask::{
    causal_padding_mask, position_ids_from_mask, sliding_window_mask, text_position_ids,
};
pub use mlp::{Mlp, MlpConfig};
pub use multimodal::{ModelError, MultimodalInput, NuriBody, NuriConfig, NuriModel, Prefill};
pub use norm::RmsNorm;
pub use presets::{PUBLISHED, ParameterCounts};
pub use rope::MultimodalRotary;
pub use rope_index::{FusionError, PositionRule, RopeIndex, VisionTokens, rope_index};
pub use vision::{PatchMerger, VisionConfig, VisionError, VisionTransformer, VisionVariant};
pub use weights::{
    WeightsError, load_pretrained, load_pretrained_with, load_weights, save_pretrained,
};
