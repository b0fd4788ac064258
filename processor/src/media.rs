//! The processor's media in two passes. The first reads what each image and video declares
//! (an image's header, a video's frame count, rate and size), checks the pixel bounds and
//! works out every patch grid, so the rows can be tokenized and their visual tokens counted
//! ([`Processor::max_media_tokens`]) before any pixel is decoded; the second decodes,
//! resizes and patchifies.

use std::borrow::Cow;

use nuri_media::image::{ImageProcessorConfig, check_decode_size, decode_rgb, image_size};
use nuri_media::read_regular_file;
use nuri_media::video::{
    FrameSource, VideoOptions, VideoPlan, decode_video, open_video, plan_video,
};
use serde_json::Value as Json;

use crate::ProcessorError;
use crate::messages::{MediaItem, MediaSource};
use crate::processor::{Processor, ProcessorOutput};
use crate::tokenizer::TextTokenizer;

/// An image or video whose grid is known and whose pixels are not decoded yet.
pub(crate) enum Planned<'a> {
    Image {
        /// The encoded file (read once, decoded in the second pass).
        bytes: Cow<'a, [u8]>,
        name: String,
        /// The processor's settings with the item's own pixel bounds.
        config: ImageProcessorConfig,
        grid_thw: [usize; 3],
    },
    Video {
        source: Box<dyn FrameSource>,
        plan: VideoPlan,
    },
}

impl Processor {
    /// How each video of `conversation` will be sampled (frames, their size, the grid), from
    /// the files' headers alone: what processing it would decide, without decoding a frame.
    pub fn video_plans(&self, conversation: &Json) -> Result<Vec<VideoPlan>, ProcessorError> {
        let canonical = crate::messages::canonical_parts(conversation, self.family);
        let media = crate::messages::media_items(&canonical, &self.media_root)?;
        Ok(self
            .plan_media(&media)?
            .into_iter()
            .filter_map(|item| match item {
                Planned::Video { plan, .. } => Some(plan),
                Planned::Image { .. } => None,
            })
            .collect())
    }

    /// First pass over `media`: headers only.
    pub(crate) fn plan_media<'a>(
        &self,
        media: &'a [MediaItem],
    ) -> Result<Vec<Planned<'a>>, ProcessorError> {
        media.iter().map(|item| self.plan_item(item)).collect()
    }

    fn plan_item<'a>(&self, item: &'a MediaItem) -> Result<Planned<'a>, ProcessorError> {
        match item {
            MediaItem::Image {
                source,
                min_pixels,
                max_pixels,
                label,
            } => {
                let (bytes, name) = match source {
                    MediaSource::Path(path) => (
                        Cow::Owned(read_regular_file(path)?),
                        path.display().to_string(),
                    ),
                    MediaSource::Bytes(bytes) => (
                        Cow::Borrowed(bytes.as_slice()),
                        format!("{label} (data URL)"),
                    ),
                };
                let config = ImageProcessorConfig {
                    min_pixels: min_pixels.unwrap_or(self.image.min_pixels),
                    max_pixels: max_pixels.unwrap_or(self.image.max_pixels),
                    ..self.image.clone()
                };
                // Bounds first: they name the item (the label), not the file.
                config.check_bounds(label)?;
                let (width, height) = image_size(&bytes, &name)?;
                check_decode_size(width, height, self.decode_limit, &name)?;
                let grid_thw = config.image_grid(width, height, &name)?;
                Ok(Planned::Image {
                    bytes,
                    name,
                    config,
                    grid_thw,
                })
            }
            MediaItem::Video {
                source,
                options,
                label,
            } => {
                let options = VideoOptions {
                    min_pixels: options.min_pixels.or(self.video_min_pixels),
                    max_pixels: options.max_pixels.or(self.video_max_pixels),
                    decode_limit: self.decode_limit,
                    ..options.clone()
                };
                // Before the file is opened.
                options.check(label)?;
                let mut source = open_video(source, options.folder_fps, options.decode_limit)?;
                let plan = plan_video(&self.video, source.as_mut(), &options)?;
                Ok(Planned::Video { source, plan })
            }
        }
    }

    /// Second pass: decodes and patchifies the planned media in order into `out`'s pixel
    /// rows (the grids are already there).
    pub(crate) fn decode_media(
        &self,
        planned: Vec<Planned<'_>>,
        out: &mut ProcessorOutput,
    ) -> Result<(), ProcessorError> {
        for item in planned {
            match item {
                Planned::Image {
                    bytes,
                    name,
                    config,
                    grid_thw,
                } => {
                    let rgb = decode_rgb(&bytes, &name, self.decode_limit)?;
                    drop(bytes);
                    let patches = config.preprocess(&rgb, &name)?;
                    debug_assert_eq!(patches.grid_thw, grid_thw, "the planned grid");
                    out.pixel_values.extend_from_slice(&patches.pixel_values);
                }
                Planned::Video { mut source, plan } => {
                    let video = decode_video(&self.video, source.as_mut(), plan)?;
                    out.pixel_values_videos
                        .extend_from_slice(&video.patches.pixel_values);
                    out.video_frame_indices.push(video.frame_indices);
                    out.video_sample_fps.push(video.sample_fps);
                }
            }
        }
        Ok(())
    }

    /// Refuses a row whose visual tokens (its expanded image and video pads) exceed
    /// [`Processor::max_media_tokens`].
    pub(crate) fn check_media_tokens(&self, rows: &[Vec<u32>]) -> Result<(), ProcessorError> {
        let Some(limit) = self.max_media_tokens else {
            return Ok(());
        };
        for (r, row) in rows.iter().enumerate() {
            let tokens = media_tokens(&self.tokenizer, row);
            if tokens > limit {
                let error = ProcessorError::MediaTokens { tokens, limit };
                return Err(error.in_conversation((rows.len() > 1).then_some(r)));
            }
        }
        Ok(())
    }
}

/// Image and video pad tokens in a tokenized row.
fn media_tokens(tokenizer: &TextTokenizer, row: &[u32]) -> usize {
    let special = &tokenizer.special;
    row.iter()
        .filter(|&&t| t == special.image_pad || t == special.video_pad)
        .count()
}

/// The grids of the planned media, images and videos apart, in order.
pub(crate) fn planned_grids(planned: &[Planned<'_>], out: &mut ProcessorOutput) {
    for item in planned {
        match item {
            Planned::Image { grid_thw, .. } => out.image_grid_thw.push(*grid_thw),
            Planned::Video { plan, .. } => out.video_grid_thw.push(plan.grid_thw),
        }
    }
}
