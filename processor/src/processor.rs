//! The processor: conversations (chat template + tokenizer) and their images and videos to the
//! tensors the model takes, as transformers' `Qwen2VLProcessor` (images) and `qwen_vl_utils`
//! followed by the processor (videos) produce them: input ids with each visual pad repeated
//! once per merged visual token, the attention mask of a padded batch, pixel values and
//! grids, and M-RoPE position ids.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use nuri_media::image::ImageProcessorConfig;
use nuri_media::image::decode::DEFAULT_DECODE_LIMIT;
use nuri_model::{MultimodalInput, PositionRule, VisionTokens, rope_index};
use serde_json::Value as Json;

use crate::media::planned_grids;
use crate::messages::{MediaItem, media_items};
use crate::template::ChatTemplate;
use crate::tokenizer::TextTokenizer;
use crate::{ProcessorError, read_json};

/// Which end of a shorter sequence padding goes: left for generation (every row's last token
/// lines up), right for training.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaddingSide {
    Left,
    Right,
}

/// A processed batch. Sequences are `[batch, seq_len]`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessorOutput {
    pub batch: usize,
    pub seq_len: usize,
    pub input_ids: Vec<i64>,
    /// 1 for tokens, 0 for padding.
    pub attention_mask: Vec<i64>,
    /// `[3, batch, seq_len]` M-RoPE position ids (temporal, height, width).
    pub position_ids: Vec<i64>,
    /// Per row: where decoding continues relative to the sequence length.
    pub rope_deltas: Vec<i64>,
    /// `[image patches, C·T·P·P]`, every image of the batch in order.
    pub pixel_values: Vec<f32>,
    pub image_grid_thw: Vec<[usize; 3]>,
    /// `[video patches, C·T·P·P]`.
    pub pixel_values_videos: Vec<f32>,
    pub video_grid_thw: Vec<[usize; 3]>,
    /// Per video: the frames sampled and the rate they stand for.
    pub video_frame_indices: Vec<Vec<usize>>,
    pub video_sample_fps: Vec<f64>,
    /// Per video: seconds per temporal patch, `temporal_patch_size / fps` (Qwen2.5-VL's
    /// absolute time positions).
    pub second_per_grid_ts: Vec<f64>,
}

impl ProcessorOutput {
    /// A batch of `batch` rows with nothing in it yet.
    pub fn empty(batch: usize) -> Self {
        Self {
            batch,
            seq_len: 0,
            input_ids: Vec::new(),
            attention_mask: Vec::new(),
            position_ids: Vec::new(),
            rope_deltas: Vec::new(),
            pixel_values: Vec::new(),
            image_grid_thw: Vec::new(),
            pixel_values_videos: Vec::new(),
            video_grid_thw: Vec::new(),
            video_frame_indices: Vec::new(),
            video_sample_fps: Vec::new(),
            second_per_grid_ts: Vec::new(),
        }
    }

    /// Row `r`'s input ids.
    pub fn row(&self, r: usize) -> &[i64] {
        &self.input_ids[r * self.seq_len..(r + 1) * self.seq_len]
    }

    /// The model's input tensors on `device`.
    pub fn to_model_input(&self, device: &Device) -> MultimodalInput {
        let ids = |v: &[i64]| {
            Tensor::<2, Int>::from_data(
                TensorData::new(v.to_vec(), [self.batch, self.seq_len]),
                device,
            )
        };
        // One row per patch: the grids say how many.
        let pixels = |v: &[f32], grids: &[[usize; 3]]| {
            let rows: usize = grids.iter().map(|g| g.iter().product::<usize>()).sum();
            (rows > 0).then(|| {
                Tensor::<2>::from_data(TensorData::new(v.to_vec(), [rows, v.len() / rows]), device)
            })
        };
        MultimodalInput {
            input_ids: ids(&self.input_ids),
            attention_mask: Some(ids(&self.attention_mask)),
            pixel_values: pixels(&self.pixel_values, &self.image_grid_thw),
            image_grid_thw: self.image_grid_thw.clone(),
            pixel_values_videos: pixels(&self.pixel_values_videos, &self.video_grid_thw),
            video_grid_thw: self.video_grid_thw.clone(),
            second_per_grid_ts: self.second_per_grid_ts.clone(),
        }
    }
}

/// Chat template, tokenizer and media processors of one checkpoint.
#[derive(Debug)]
pub struct Processor {
    pub tokenizer: TextTokenizer,
    pub template: ChatTemplate,
    pub image: ImageProcessorConfig,
    /// Mean, std, patch and merge sizes for video frames.
    pub video: ImageProcessorConfig,
    /// The checkpoint's per-frame pixel bounds for videos, when it sets them.
    pub video_min_pixels: Option<usize>,
    pub video_max_pixels: Option<usize>,
    /// Relative media paths are resolved against this folder.
    pub media_root: PathBuf,
    /// Largest decoded image, animation canvas or video frame accepted, in pixels; refused
    /// from the header, before decoding.
    pub decode_limit: usize,
    /// Most visual tokens the images and videos of one conversation (one row of a batch)
    /// may make, counted from their declared sizes and sampled frame counts before any pixel
    /// is decoded ([`ProcessorError::MediaTokens`]); `None`: no limit.
    pub max_media_tokens: Option<usize>,
    /// How the model this processor feeds numbers visual tokens (Qwen2-VL's M-RoPE unless
    /// set from the model's config).
    pub position_rule: PositionRule,
    /// The model family, which decides the shape of media parts the template is given.
    pub family: nuri_model::Family,
    /// Keyword arguments every rendering of the chat template gets (as
    /// `apply_chat_template(..., **kwargs)`: `enable_thinking`, `add_vision_id`, ...).
    pub template_kwargs: serde_json::Map<String, Json>,
}

/// A per-frame pixel bound a video processor config sets (`min_pixels` or
/// `size.shortest_edge`, `max_pixels` or `size.longest_edge`).
fn bound(json: &Json, flat: &str, nested: &str) -> Option<usize> {
    json.get(flat)
        .or_else(|| json.get("size").and_then(|s| s.get(nested)))
        .and_then(Json::as_u64)
        .map(|v| v as usize)
}

impl Processor {
    /// A processor with the reference defaults around `tokenizer`, using `template` or
    /// Qwen2-VL's.
    pub fn new(tokenizer: TextTokenizer, template: Option<ChatTemplate>) -> Self {
        Self {
            tokenizer,
            template: template.unwrap_or_else(ChatTemplate::qwen2_vl),
            image: ImageProcessorConfig::default(),
            video: ImageProcessorConfig::default(),
            video_min_pixels: None,
            video_max_pixels: None,
            media_root: PathBuf::from("."),
            decode_limit: DEFAULT_DECODE_LIMIT,
            max_media_tokens: None,
            position_rule: PositionRule::MRope,
            family: nuri_model::Family::Qwen2Vl,
            template_kwargs: serde_json::Map::new(),
        }
    }

    /// Loads a checkpoint directory's `tokenizer.json` (+ `tokenizer_config.json`), chat
    /// template, and image/video processor settings (`preprocessor_config.json`,
    /// `video_preprocessor_config.json`, or the objects of a transformers 5
    /// `processor_config.json`). Missing processor settings keep the reference defaults.
    pub fn from_dir(dir: &Path) -> Result<Self, ProcessorError> {
        let tokenizer = TextTokenizer::from_dir(dir)?;
        let template = ChatTemplate::from_dir(dir)?;
        let mut processor = Self::new(tokenizer, template);
        let combined_path = dir.join("processor_config.json");
        let combined = read_json(&combined_path)?;
        let section = |file: &str, key: &str| -> Result<Option<(Json, PathBuf)>, ProcessorError> {
            let path = dir.join(file);
            if let Some(json) = read_json(&path)? {
                return Ok(Some((json, path)));
            }
            Ok(combined
                .as_ref()
                .and_then(|c| c.get(key))
                .filter(|v| v.is_object())
                .map(|v| (v.clone(), combined_path.clone())))
        };
        if let Some((json, path)) = section("preprocessor_config.json", "image_processor")? {
            processor.image = ImageProcessorConfig::from_json(&json, &path)?;
        }
        processor.video = processor.image.clone();
        if let Some((json, path)) = section("video_preprocessor_config.json", "video_processor")? {
            processor.video = ImageProcessorConfig::from_json(&json, &path)?;
            processor.video_min_pixels = bound(&json, "min_pixels", "shortest_edge");
            processor.video_max_pixels = bound(&json, "max_pixels", "longest_edge");
        }
        processor.media_root = dir.to_path_buf();
        Ok(processor)
    }

    /// `config` with the vocabulary size and the vision token ids of this processor's
    /// tokenizer (for a model of our own presets trained with it).
    pub fn fit_config(&self, mut config: nuri_model::NuriConfig) -> nuri_model::NuriConfig {
        let special = &self.tokenizer.special;
        config.text.vocab_size = self.tokenizer.vocab_size();
        config.image_token_id = i64::from(special.image_pad);
        config.video_token_id = i64::from(special.video_pad);
        config.vision_start_token_id = special.vision_start.map_or(-1, i64::from);
        config.vision_end_token_id = special.vision_end.map_or(-1, i64::from);
        config
    }

    /// This processor set up for `config`'s model: its family (how media parts reach the
    /// chat template), its placeholder tokens (the ids the config names, when the vocabulary
    /// has them) and how it numbers positions.
    pub fn for_model(mut self, config: &nuri_model::NuriConfig) -> Self {
        self.family = config.family;
        self.position_rule = config.vision_tokens().rule;
        self.tokenizer.use_placeholder(false, config.image_token_id);
        self.tokenizer.use_placeholder(true, config.video_token_id);
        self
    }

    /// Checks that this processor's tokenizer belongs to the model of `config` (after
    /// [`for_model`](Self::for_model)): a vision model's `image_token_id` / `video_token_id`
    /// must be the tokenizer's placeholders, or every picture would be refused later with
    /// "0 image blocks appear in the prompt". `dir` names the checkpoint in the message.
    pub fn check_model(
        &self,
        config: &nuri_model::NuriConfig,
        dir: &std::path::Path,
    ) -> Result<(), ProcessorError> {
        if !config.family.has_vision() {
            return Ok(());
        }
        let special = &self.tokenizer.special;
        for (field, id, have, token) in [
            (
                "image_token_id",
                config.image_token_id,
                special.image_pad,
                &special.image_token,
            ),
            (
                "video_token_id",
                config.video_token_id,
                special.video_pad,
                &special.video_token,
            ),
        ] {
            if id != i64::from(have) {
                return Err(ProcessorError::Config {
                    path: dir.join("config.json"),
                    message: format!(
                        "{field} is {id}, which is not a token of the tokenizer beside it (whose {token} is {have}): the tokenizer and the weights are from different checkpoints"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Caps the pixels of every image and of every video frame at `max` (lowering the
    /// minimum to it when needed).
    pub fn limit_pixels(&mut self, max: usize) {
        self.image.max_pixels = max;
        self.image.min_pixels = self.image.min_pixels.min(max);
        self.video_max_pixels = Some(max);
        self.video_min_pixels = Some(self.image.min_pixels);
    }

    /// Resolves relative media paths against `root` from now on.
    pub fn with_media_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.media_root = root.into();
        self
    }

    /// The chat template's text for one conversation (pads not yet expanded).
    pub fn render(
        &self,
        messages: &Json,
        add_generation_prompt: bool,
    ) -> Result<String, ProcessorError> {
        self.render_with(messages, add_generation_prompt, &serde_json::Map::new())
    }

    /// [`Processor::render`] with keyword arguments for this rendering only (a request's
    /// `chat_template_kwargs`), over [`Processor::template_kwargs`].
    pub fn render_with(
        &self,
        messages: &Json,
        add_generation_prompt: bool,
        kwargs: &serde_json::Map<String, Json>,
    ) -> Result<String, ProcessorError> {
        let mut extra = self.tokenizer.template_tokens.clone();
        extra.insert("add_vision_id".into(), Json::Bool(false));
        extra.extend(self.template_kwargs.clone());
        extra.extend(kwargs.clone());
        let messages = crate::messages::canonical_parts(messages, self.family);
        let messages = crate::messages::parts_for_template(&messages, self.family)?;
        self.template
            .render(&messages, add_generation_prompt, &extra)
            .map_err(|e| e.in_conversation(None))
    }

    /// Renders, loads the media of and tokenizes a batch of conversations.
    pub fn process(
        &self,
        conversations: &[Json],
        add_generation_prompt: bool,
        padding: PaddingSide,
    ) -> Result<ProcessorOutput, ProcessorError> {
        self.process_with(conversations, &[], add_generation_prompt, padding)
    }

    /// [`Processor::process`] with each conversation's own template keyword arguments
    /// (`kwargs[i]` for conversation `i`; none past the end of `kwargs`).
    pub fn process_with(
        &self,
        conversations: &[Json],
        kwargs: &[serde_json::Map<String, Json>],
        add_generation_prompt: bool,
        padding: PaddingSide,
    ) -> Result<ProcessorOutput, ProcessorError> {
        let none = serde_json::Map::new();
        let mut texts = Vec::with_capacity(conversations.len());
        let mut media = Vec::new();
        for (i, conversation) in conversations.iter().enumerate() {
            let in_conv = |e: ProcessorError| e.in_conversation(Some(i));
            let canonical = crate::messages::canonical_parts(conversation, self.family);
            media.extend(media_items(&canonical, &self.media_root).map_err(in_conv)?);
            let kwargs = kwargs.get(i).unwrap_or(&none);
            texts.push(
                self.render_with(conversation, add_generation_prompt, kwargs)
                    .map_err(in_conv)?,
            );
        }
        self.process_texts(&texts, &media, padding)
    }

    /// Tokenizes already-rendered `texts` whose `<|image_pad|>` / `<|video_pad|>` placeholders
    /// refer, in order across the batch, to `media`. The media's headers are read and the
    /// rows tokenized first; pixels are decoded only once the pixel bounds, the decode limit
    /// and [`Processor::max_media_tokens`] are met.
    pub fn process_texts(
        &self,
        texts: &[String],
        media: &[MediaItem],
        padding: PaddingSide,
    ) -> Result<ProcessorOutput, ProcessorError> {
        if let Some(item) = media.first()
            && !self.family.has_vision()
        {
            return Err(ProcessorError::TextOnly {
                family: self.family.model_type(),
                kind: match item {
                    MediaItem::Image { .. } => "an image",
                    MediaItem::Video { .. } => "a video",
                },
            });
        }
        let mut out = ProcessorOutput::empty(texts.len());
        let planned = self.plan_media(media)?;
        planned_grids(&planned, &mut out);
        let texts = self.fill_video_durations(texts, &planned);
        let rows = self.expand_and_encode(&texts, &out)?;
        self.check_media_tokens(&rows)?;
        self.decode_media(planned, &mut out)?;
        pad_rows(
            &rows,
            i64::from(self.tokenizer.special.pad),
            padding,
            &mut out,
        );
        let temporal = self.video.temporal_patch_size as f64;
        out.second_per_grid_ts = out
            .video_sample_fps
            .iter()
            .map(|fps| temporal / fps)
            .collect();
        let special = &self.tokenizer.special;
        let index = rope_index(
            &out.input_ids,
            Some(&out.attention_mask),
            [out.batch, out.seq_len],
            &out.image_grid_thw,
            &out.video_grid_thw,
            &out.second_per_grid_ts,
            VisionTokens {
                image_token_id: i64::from(special.image_pad),
                video_token_id: i64::from(special.video_pad),
                spatial_merge_size: self.image.merge_size,
                rule: self.position_rule,
            },
        )
        .map_err(ProcessorError::Fusion)?;
        out.position_ids = index.position_ids;
        out.rope_deltas = index.rope_deltas;
        Ok(out)
    }

    /// HyperCLOVA X's processor writes each video's duration in seconds (frames / rate,
    /// rounded to 2 decimals, as Python prints a float) where the text has
    /// `<|video_duration|>`, videos in order across the batch; other families' texts are
    /// returned as they are.
    fn fill_video_durations(
        &self,
        texts: &[String],
        planned: &[crate::media::Planned<'_>],
    ) -> Vec<String> {
        const TOKEN: &str = "<|video_duration|>";
        if !matches!(
            self.family,
            nuri_model::Family::HyperClovaXVisionV2 | nuri_model::Family::HyperClovaX
        ) || !texts.iter().any(|t| t.contains(TOKEN))
        {
            return texts.to_vec();
        }
        let mut durations = planned.iter().filter_map(|p| match p {
            crate::media::Planned::Video { plan, .. } => {
                let seconds = plan.info.total_frames as f64 / plan.info.fps.max(f64::MIN_POSITIVE);
                let rounded = (seconds * 100.0).round() / 100.0;
                Some(if rounded.fract() == 0.0 {
                    format!("{rounded:.1}")
                } else {
                    format!("{rounded}")
                })
            }
            _ => None,
        });
        texts
            .iter()
            .map(|text| {
                let mut out = String::with_capacity(text.len());
                let mut rest = text.as_str();
                while let Some(at) = rest.find(TOKEN) {
                    out.push_str(&rest[..at]);
                    match durations.next() {
                        Some(d) => out.push_str(&d),
                        None => out.push_str(TOKEN),
                    }
                    rest = &rest[at + TOKEN.len()..];
                }
                out.push_str(rest);
                out
            })
            .collect()
    }

    /// Each text with every visual pad repeated once per merged visual token of its grid
    /// (grids consumed in order; every grid must be used), tokenized.
    fn expand_and_encode(
        &self,
        texts: &[String],
        out: &ProcessorOutput,
    ) -> Result<Vec<Vec<u32>>, ProcessorError> {
        let merge = self.image.merge_size * self.image.merge_size;
        let vmerge = self.video.merge_size * self.video.merge_size;
        let special = &self.tokenizer.special;
        let (image_pad, video_pad) = (special.image_token.as_str(), special.video_token.as_str());
        let (mut next_image, mut next_video) = (0, 0);
        let mut rows = Vec::with_capacity(texts.len());
        for text in texts {
            let mut expanded = String::with_capacity(text.len());
            let mut rest = text.as_str();
            loop {
                let image_at = rest.find(image_pad);
                let video_at = rest.find(video_pad);
                let (at, pad, grids, next, per) = match (image_at, video_at) {
                    (None, None) => break,
                    (Some(i), v) if v.is_none_or(|v| i < v) => {
                        (i, image_pad, &out.image_grid_thw, &mut next_image, merge)
                    }
                    (_, Some(v)) => (v, video_pad, &out.video_grid_thw, &mut next_video, vmerge),
                    _ => unreachable!("one of the two is some"),
                };
                let grid = grids.get(*next).ok_or(ProcessorError::Fusion(
                    nuri_model::FusionError::TooFewGrids {
                        kind: if pad == image_pad { "image" } else { "video" },
                        grids: grids.len(),
                    },
                ))?;
                *next += 1;
                expanded.push_str(&rest[..at]);
                expanded.push_str(&pad.repeat(grid.iter().product::<usize>() / per));
                rest = &rest[at + pad.len()..];
            }
            expanded.push_str(rest);
            rows.push(self.tokenizer.encode(&expanded)?);
        }
        for (kind, used, given) in [
            ("image", next_image, out.image_grid_thw.len()),
            ("video", next_video, out.video_grid_thw.len()),
        ] {
            if used != given {
                return Err(ProcessorError::Fusion(
                    nuri_model::FusionError::UnusedGrids {
                        kind,
                        grids: given,
                        used,
                    },
                ));
            }
        }
        Ok(rows)
    }
}

/// Appends `rows` to `out`, padded with `pad` to the longest on the given side, with their
/// attention masks.
fn pad_rows(rows: &[Vec<u32>], pad: i64, padding: PaddingSide, out: &mut ProcessorOutput) {
    let seq_len = rows.iter().map(Vec::len).max().unwrap_or(0);
    for row in rows {
        let fill = seq_len - row.len();
        let ids = row.iter().map(|&t| i64::from(t));
        let (ids, mask): (Vec<i64>, Vec<i64>) = match padding {
            PaddingSide::Left => std::iter::repeat_n((pad, 0), fill)
                .chain(ids.map(|t| (t, 1)))
                .unzip(),
            PaddingSide::Right => ids
                .map(|t| (t, 1))
                .chain(std::iter::repeat_n((pad, 0), fill))
                .unzip(),
        };
        out.input_ids.extend(ids);
        out.attention_mask.extend(mask);
    }
    out.seq_len = seq_len;
}
