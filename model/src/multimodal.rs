//! The multimodal model (`Qwen2VLForConditionalGeneration` and the families built like it):
//! the vision tower and merger (and HyperCLOVA X's projector), the language model, and the
//! fusion between them — visual tokens replace the embeddings of the image / video
//! placeholders in order, and positions follow [`rope_index`]. A text-only family (EXAONE
//! 4.0, HyperCLOVA X) is the same model without a tower.
//!
//! The module tree is the one transformers 5 holds in memory for Qwen2-VL: `model.visual.*`,
//! `model.language_model.*`, `lm_head.*` (each family's names map onto it in `weights.rs`).

use crate::linear::Linear;
use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use thiserror::Error;

use crate::config::{ConfigError, TextConfig};
use crate::decoder::{TextModel, lm_logits};
use crate::family::Family;
use crate::init::linear;
use crate::kv_cache::KvCache;
use crate::linear::Project;
use crate::rope_index::{FusionError, PositionRule, VisionTokens, rope_index};
use crate::vision::{VisionConfig, VisionError, VisionTransformer, VisionVariant};

/// Why a multimodal forward could not run.
#[derive(Debug, Error, PartialEq)]
pub enum ModelError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Vision(#[from] VisionError),
    #[error(transparent)]
    Fusion(#[from] FusionError),
    #[error("this model ({family}) has no vision tower, but the input has {kind} pixels")]
    NoVision {
        family: &'static str,
        kind: &'static str,
    },
    #[error(
        "the input has token id {id}, but the model's vocabulary has {vocab} tokens \
         (a tokenizer from another checkpoint?)"
    )]
    TokenOutOfVocabulary { id: i64, vocab: usize },
}

/// The whole model's configuration: the family, the language model, the vision tower (none
/// for a text-only family) and the special tokens that tie them together.
#[derive(Config, Debug, PartialEq)]
pub struct NuriConfig {
    pub text: TextConfig,
    /// `None` for a text-only family.
    pub vision: Option<VisionConfig>,
    /// `<|image_pad|>`: one per merged image token.
    pub image_token_id: i64,
    /// `<|video_pad|>`: one per merged video token.
    pub video_token_id: i64,
    /// `<|vision_start|>`, before each visual block.
    pub vision_start_token_id: i64,
    /// `<|vision_end|>`, after each visual block.
    pub vision_end_token_id: i64,
    /// The checkpoint family (module names, positions, `config.json` layout).
    #[config(default = "Family::Qwen2Vl")]
    pub family: Family,
}

impl NuriConfig {
    /// The test model: `TextConfig::tiny` (vocab 256) with `VisionConfig::tiny`, special
    /// tokens at the top of the vocabulary.
    pub fn tiny() -> Self {
        let text = TextConfig {
            vocab_size: 256,
            ..TextConfig::tiny()
        };
        Self::new(text, 252, 253, 250, 251).with_vision(Some(VisionConfig::tiny()))
    }

    /// The quickstart's model (about 1M parameters before the vocabulary): a 4-layer,
    /// 128-wide language model over a 2-block, 64-wide ViT with 8-pixel patches (a 64×64
    /// picture is 64 patches, 16 merged tokens). `rope_theta` is 1 (Qwen2-VL's is 10⁶):
    /// every rotary pair then turns by one radian per position, so the 4 columns and rows of
    /// a picture (and the 4 time steps of a clip) are far apart in angle. With 16
    /// frequencies split 4/6/6, the width stream otherwise gets the lowest ones, which barely
    /// turn over a 4-token-wide picture: trained on the position questions alone (500 steps
    /// of 16, question before the picture), 10 stayed at chance (26% of 128 validation
    /// answers) and 1 reached 98%. The prompts are a few dozen tokens, so the aliasing of
    /// longer text distances does not matter here. Vocabulary size and special ids come from
    /// the tokenizer (`Processor::fit_config`).
    pub fn quickstart() -> Self {
        let text = TextConfig::new(1024, 128, 384, 4, 4, 2, vec![4, 6, 6])
            .with_rope_theta(1.0)
            .with_tie_word_embeddings(true)
            .with_max_position_embeddings(4096);
        let vision = VisionConfig::quickstart();
        Self::new(text, 1022, 1023, 1020, 1021).with_vision(Some(vision))
    }

    /// A ~100M-parameter model for benchmarks: a 12-layer, 768-wide language model (32k
    /// vocabulary, tied) over a 12-block, 384-wide ViT with Qwen2-VL's 14-pixel patches.
    pub fn small_100m() -> Self {
        let text = TextConfig::new(32_000, 768, 2048, 12, 12, 4, vec![8, 12, 12])
            .with_tie_word_embeddings(true);
        let vision = VisionConfig::new(12, 384, 6, 4, 768);
        Self::new(text, 31_998, 31_999, 31_996, 31_997).with_vision(Some(vision))
    }

    /// Our presets by name: `tiny`, `quickstart`, `small-100m`.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "tiny" => Some(Self::tiny()),
            "quickstart" => Some(Self::quickstart()),
            "small-100m" => Some(Self::small_100m()),
            _ => None,
        }
    }

    /// The names `preset` knows.
    pub const PRESETS: [&'static str; 3] = ["tiny", "quickstart", "small-100m"];

    /// Qwen2-VL-2B-Instruct (its `config.json`).
    pub fn qwen2_vl_2b() -> Self {
        Self::new(
            TextConfig::qwen2_vl_2b(),
            151_655,
            151_656,
            151_652,
            151_653,
        )
        .with_vision(Some(VisionConfig::qwen2_vl(1536)))
    }

    /// How placeholders are recognized and numbered.
    pub fn vision_tokens(&self) -> VisionTokens {
        let vision = self.vision.as_ref();
        VisionTokens {
            image_token_id: self.image_token_id,
            video_token_id: self.video_token_id,
            spatial_merge_size: vision.map_or(2, |v| v.spatial_merge_size),
            rule: position_rule(self.family, vision),
        }
    }

    /// The vision tower's configuration; an error naming the family when it has none.
    pub fn vision(&self) -> Result<&VisionConfig, ModelError> {
        self.vision.as_ref().ok_or(ModelError::NoVision {
            family: self.family.model_type(),
            kind: "image",
        })
    }
}

/// How `family` numbers visual tokens.
fn position_rule(family: Family, vision: Option<&VisionConfig>) -> PositionRule {
    match (family.mrope(), vision) {
        (false, _) => PositionRule::Linear,
        (true, Some(v)) if v.variant == VisionVariant::Qwen2_5Vl => PositionRule::MRopeTimed {
            tokens_per_second: v.tokens_per_second,
        },
        (true, _) => PositionRule::MRope,
    }
}

/// The vision tower and the language model, under the reference's `model.` prefix.
#[derive(Module, Debug)]
pub struct NuriBody {
    /// `None` for a text-only family.
    pub visual: Option<VisionTransformer>,
    /// HyperCLOVA X Vision's linear map from the merger's width to the language model's.
    pub projector: Option<Linear>,
    pub language_model: TextModel,
}

/// Vision encoder + merger + language model + head.
#[derive(Module, Debug)]
pub struct NuriModel {
    pub model: NuriBody,
    /// `None` when tied to the token embedding.
    pub lm_head: Option<Linear>,
    pub image_token_id: i64,
    pub video_token_id: i64,
    pub spatial_merge_size: usize,
    /// µP: logits are multiplied by this (1 elsewhere).
    pub logits_scaling: f64,
    /// How visual tokens are numbered.
    #[module(skip)]
    pub position_rule: PositionRule,
}

/// One batch of model inputs, as the processor produces them.
#[derive(Debug, Clone)]
pub struct MultimodalInput {
    /// `[batch, seq]`
    pub input_ids: Tensor<2, Int>,
    /// `[batch, seq]`, 1 = token, 0 = padding.
    pub attention_mask: Option<Tensor<2, Int>>,
    /// `[image patches, C·T·P·P]`, every image's patches in order.
    pub pixel_values: Option<Tensor<2>>,
    /// `(t, h, w)` patch grid per image.
    pub image_grid_thw: Vec<[usize; 3]>,
    /// `[video patches, C·T·P·P]`.
    pub pixel_values_videos: Option<Tensor<2>>,
    /// `(t, h, w)` patch grid per video.
    pub video_grid_thw: Vec<[usize; 3]>,
    /// Seconds per temporal patch of each video (`temporal_patch_size / fps`; Qwen2.5-VL's
    /// absolute time positions). Missing entries count as 1 s, as in the reference.
    pub second_per_grid_ts: Vec<f64>,
}

impl MultimodalInput {
    /// A text-only batch.
    pub fn text(input_ids: Tensor<2, Int>, attention_mask: Option<Tensor<2, Int>>) -> Self {
        Self {
            input_ids,
            attention_mask,
            pixel_values: None,
            image_grid_thw: Vec::new(),
            pixel_values_videos: None,
            video_grid_thw: Vec::new(),
            second_per_grid_ts: Vec::new(),
        }
    }
}

/// What a prefill returns.
#[derive(Debug, Clone)]
pub struct Prefill {
    /// `[batch, seq, vocab]`
    pub logits: Tensor<3>,
    /// `[3, batch, seq]`
    pub position_ids: Tensor<3, Int>,
    /// Per row: decoding continues at position `cached_len + delta`.
    pub rope_deltas: Vec<i64>,
}

impl NuriModel {
    /// A randomly initialized model.
    pub fn new(config: &NuriConfig, device: &Device) -> Result<Self, ModelError> {
        let text = &config.text;
        let vision = config.vision.as_ref();
        let visual = vision
            .map(|v| VisionTransformer::new(v, device))
            .transpose()?;
        let projector = match vision {
            Some(v) if config.family.has_projector() => {
                Some(linear(v.hidden_size, text.hidden_size, true, device))
            }
            _ => None,
        };
        Ok(Self {
            model: NuriBody {
                visual,
                projector,
                language_model: TextModel::new(text, device)?,
            },
            lm_head: (!text.tie_word_embeddings)
                .then(|| linear(text.hidden_size, text.vocab_size, false, device)),
            image_token_id: config.image_token_id,
            video_token_id: config.video_token_id,
            spatial_merge_size: vision.map_or(2, |v| v.spatial_merge_size),
            logits_scaling: text.logits_scaling,
            position_rule: config.vision_tokens().rule,
        })
    }

    /// Draws every parameter now: Burn initializes them lazily at first use, from a global
    /// generator, so a seeded model must be drawn before anything else uses that generator.
    pub fn init_params_now(&self) {
        struct Touch;
        impl burn::module::ModuleVisitor for Touch {
            fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
                let _ = param.val();
            }
        }
        self.visit(&mut Touch);
    }

    /// A fresh KV cache for this model (sliding-window layers keep only their window).
    pub fn new_cache(&self) -> KvCache {
        self.model.language_model.new_cache()
    }

    fn vision_tokens(&self) -> VisionTokens {
        VisionTokens {
            image_token_id: self.image_token_id,
            video_token_id: self.video_token_id,
            spatial_merge_size: self.spatial_merge_size,
            rule: self.position_rule,
        }
    }

    /// The vision tower, or an error naming the modality when the model has none.
    pub fn visual(&self, kind: &'static str) -> Result<&VisionTransformer, ModelError> {
        self.model.visual.as_ref().ok_or(ModelError::NoVision {
            family: "a text-only model",
            kind,
        })
    }

    /// Visual tokens in the language model's width: the tower and merger, then the
    /// projector where the family has one.
    ///
    /// # Shapes
    /// - `pixels`: `[n_patches, C·T·P·P]` → `[n_patches / merge², hidden]`
    pub fn encode_visual(
        &self,
        kind: &'static str,
        pixels: Tensor<2>,
        grids: &[[usize; 3]],
    ) -> Result<Tensor<2>, ModelError> {
        let merged = self.visual(kind)?.forward(pixels, grids)?;
        Ok(match &self.model.projector {
            Some(projector) => projector.project(merged),
            None => merged,
        })
    }

    /// Visual tokens for one modality, if it has pixels.
    fn encode(
        &self,
        kind: &'static str,
        pixels: &Option<Tensor<2>>,
        grids: &[[usize; 3]],
    ) -> Result<Option<Tensor<2>>, ModelError> {
        match pixels {
            Some(pixels) => Ok(Some(self.encode_visual(kind, pixels.clone(), grids)?)),
            None => Ok(None),
        }
    }

    /// Token embeddings with the visual tokens spliced in at their placeholders.
    ///
    /// # Shapes
    /// - returns `[batch, seq, hidden]`
    fn fused_embeddings(
        &self,
        input: &MultimodalInput,
        ids: &[i64],
    ) -> Result<Tensor<3>, ModelError> {
        let [b, s] = input.input_ids.dims();
        let embeds = self.model.language_model.embed(input.input_ids.clone()); // [b, s, d]
        let [_, _, d] = embeds.dims();
        let mut sources = vec![embeds.reshape([b * s, d])]; // [b*s, d], then visual rows
        let mut gather: Vec<i64> = (0..(b * s) as i64).collect();
        let mut next_row = (b * s) as i64;
        for (kind, token, pixels, grids) in [
            (
                "image",
                self.image_token_id,
                &input.pixel_values,
                &input.image_grid_thw,
            ),
            (
                "video",
                self.video_token_id,
                &input.pixel_values_videos,
                &input.video_grid_thw,
            ),
        ] {
            let slots: Vec<usize> = (0..ids.len()).filter(|&i| ids[i] == token).collect();
            let features = match self.encode(kind, pixels, grids)? {
                Some(features) => features,
                None if slots.is_empty() => continue,
                None => return Err(FusionError::MissingPixels { kind }.into()),
            };
            let count = features.dims()[0];
            if count != slots.len() {
                return Err(FusionError::TokenCount {
                    kind,
                    tokens: slots.len(),
                    features: count,
                }
                .into());
            }
            for slot in slots {
                gather[slot] = next_row;
                next_row += 1;
            }
            sources.push(features);
        }
        if sources.len() == 1 {
            return Ok(sources.remove(0).reshape([b, s, d]));
        }
        let device = input.input_ids.device();
        let gather = Tensor::<1, Int>::from_data(TensorData::new(gather, [b * s]), &device);
        // Row i of the result is row gather[i] of [text embeddings; image rows; video rows].
        Ok(Tensor::cat(sources, 0).select(0, gather).reshape([b, s, d]))
    }

    /// Runs the whole prompt: vision tower, fusion, M-RoPE positions, language model. With a
    /// cache, it is filled for decoding.
    pub fn prefill(
        &self,
        input: &MultimodalInput,
        cache: Option<&mut KvCache>,
    ) -> Result<Prefill, ModelError> {
        let (hidden, position_ids, rope_deltas) = self.hidden_states(input, cache)?;
        Ok(Prefill {
            logits: self.logits(hidden),
            position_ids,
            rope_deltas,
        })
    }

    /// What [`prefill`](Self::prefill) computes before the head: the last hidden states
    /// (`[batch, seq, hidden]`, after the final norm), the positions and the rope deltas.
    /// Training takes logits only where there are labels.
    #[allow(clippy::type_complexity)]
    pub fn hidden_states(
        &self,
        input: &MultimodalInput,
        cache: Option<&mut KvCache>,
    ) -> Result<(Tensor<3>, Tensor<3, Int>, Vec<i64>), ModelError> {
        let (embeds, position_ids, rope_deltas) = self.prompt_embeddings(input)?;
        let hidden = self.model.language_model.forward_embeds(
            embeds,
            position_ids.clone(),
            input.attention_mask.clone(),
            cache,
        );
        Ok((hidden, position_ids, rope_deltas))
    }

    /// The language model's input for a prompt: the token embeddings with the visual tokens
    /// spliced in (the vision tower runs here), the M-RoPE positions (`[3, batch, seq]`) and
    /// each row's rope delta.
    #[allow(clippy::type_complexity)]
    pub(crate) fn prompt_embeddings(
        &self,
        input: &MultimodalInput,
    ) -> Result<(Tensor<3>, Tensor<3, Int>, Vec<i64>), ModelError> {
        let [b, s] = input.input_ids.dims();
        let device = input.input_ids.device();
        let ids = int_vec(input.input_ids.clone());
        let vocab = self.model.language_model.embed_tokens.weight.dims()[0];
        if let Some(&id) = ids.iter().find(|&&id| id < 0 || id as usize >= vocab) {
            return Err(ModelError::TokenOutOfVocabulary { id, vocab });
        }
        let mask = input.attention_mask.clone().map(int_vec);
        let index = rope_index(
            &ids,
            mask.as_deref(),
            [b, s],
            &input.image_grid_thw,
            &input.video_grid_thw,
            &input.second_per_grid_ts,
            self.vision_tokens(),
        )?;
        let embeds = self.fused_embeddings(input, &ids)?;
        let position_ids =
            Tensor::<3, Int>::from_data(TensorData::new(index.position_ids, [3, b, s]), &device);
        Ok((embeds, position_ids, index.rope_deltas))
    }

    /// # Shapes
    /// - `hidden`: `[batch, seq, hidden]` → `[batch, seq, vocab]`
    pub fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        lm_logits(
            hidden,
            self.lm_head.as_ref(),
            &self.model.language_model.embed_tokens,
            self.logits_scaling,
        )
    }
}

/// An int tensor's values on the host, whatever the backend's int width.
pub(crate) fn int_vec<const D: usize>(t: Tensor<D, Int>) -> Vec<i64> {
    t.into_data()
        .try_to_vec_as::<i64>()
        .expect("an int tensor converts to i64")
}
