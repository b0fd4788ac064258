//! What the phases run on: random pictures and text of a preset's shapes, and the parameter
//! counts the FLOP estimates use.

use anyhow::{Result, bail};
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use nuri_model::{MultimodalInput, NuriConfig};

/// Parameter counts the FLOP estimates use.
pub(super) struct Sizes {
    /// Language model matmul parameters per token (layers + lm_head).
    pub lm: f64,
    /// Vision tower matmul parameters per patch (blocks + patch embedding; merger per 4).
    pub vit: f64,
}

pub(super) fn sizes(config: &NuriConfig) -> Sizes {
    let t = &config.text;
    let (h, i, l) = (
        t.hidden_size as f64,
        t.intermediate_size as f64,
        t.num_hidden_layers as f64,
    );
    let kv = (t.num_key_value_heads * t.head_dim()) as f64;
    let per_layer = h * h * 2.0 + 2.0 * h * kv + 3.0 * h * i;
    let lm = l * per_layer + h * t.vocab_size as f64;
    let vit = config.vision.as_ref().map_or(0.0, |v| {
        let e = v.embed_dim as f64;
        let block = 4.0 * e * e + 2.0 * e * v.mlp_hidden() as f64;
        let merged = v.merged_dim() as f64;
        let merger = (merged * merged + merged * v.hidden_size as f64)
            / (v.spatial_merge_size * v.spatial_merge_size) as f64;
        v.depth as f64 * block + v.patch_dim() as f64 * e + merger
    });
    Sizes { lm, vit }
}

/// Random patches for `images` square images of side `side` under `config`'s vision tower.
///
/// # Shapes
/// - returns `[images · patches, C·T·P·P]` and one `(1, h, w)` grid per image
pub(super) fn random_images(
    config: &NuriConfig,
    images: usize,
    side: usize,
    device: &Device,
) -> Result<(Tensor<2>, Vec<[usize; 3]>)> {
    let v = config.vision()?;
    let factor = v.patch_size * v.spatial_merge_size;
    if !side.is_multiple_of(factor) {
        bail!("image side {side} is not a multiple of patch × merge = {factor} for this preset");
    }
    let g = side / v.patch_size;
    let patches = images * g * g;
    let pixels = Tensor::random(
        [patches, v.patch_dim()],
        Distribution::Normal(0.0, 1.0),
        device,
    );
    Ok((pixels, vec![[1, g, g]; images]))
}

/// A batch of `batch` rows, each `<|vision_start|>`, one image's pads, `<|vision_end|>`,
/// then `text` random text tokens.
pub(super) fn image_text_batch(
    config: &NuriConfig,
    batch: usize,
    side: usize,
    text: usize,
    device: &Device,
) -> Result<(MultimodalInput, usize)> {
    let (pixels, grids) = random_images(config, batch, side, device)?;
    let m = config.vision()?.spatial_merge_size;
    let pads = grids[0][1] * grids[0][2] / (m * m);
    let words = text_ids(config, batch * text);
    let mut ids = Vec::new();
    for row in words.chunks(text) {
        ids.push(config.vision_start_token_id);
        ids.extend(std::iter::repeat_n(config.image_token_id, pads));
        ids.push(config.vision_end_token_id);
        ids.extend_from_slice(row);
    }
    let seq = pads + 2 + text;
    let input_ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [batch, seq]), device);
    let mut input = MultimodalInput::text(input_ids, None);
    input.pixel_values = Some(pixels);
    input.image_grid_thw = grids;
    Ok((input, seq))
}

/// `n` deterministic text token ids, below every special token (as bench_torch.py makes
/// them: `(i · 7919 + 13) mod text vocabulary`).
pub(super) fn text_ids(config: &NuriConfig, n: usize) -> Vec<i64> {
    let lowest_special = [
        config.image_token_id,
        config.video_token_id,
        config.vision_start_token_id,
        config.vision_end_token_id,
    ]
    .into_iter()
    .min()
    .unwrap_or(1)
    .max(1) as usize;
    let vocab = config.text.vocab_size.min(lowest_special);
    (0..n).map(|i| ((i * 7919 + 13) % vocab) as i64).collect()
}

pub(super) fn random_text(
    config: &NuriConfig,
    batch: usize,
    len: usize,
    device: &Device,
) -> Tensor<2, Int> {
    Tensor::from_data(
        TensorData::new(text_ids(config, batch * len), [batch, len]),
        device,
    )
}
