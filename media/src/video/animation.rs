//! Animated GIF, APNG and WebP as videos: the first pass reads their headers only
//! (`headers.rs`); the second decodes frames — GIF through `gif_canvas.rs`, APNG and WebP
//! through the `image` crate — composited as the `image` crate composites them, alpha over
//! white.

use std::io::BufReader;
use std::path::PathBuf;

use image::{AnimationDecoder, ImageDecoder, ImageFormat};

use super::decode::{FrameSource, Step, VideoInfo, deliver};
use super::gif_canvas::GifCanvas;
use super::headers::{apng_info, gif_info, webp_info};
use crate::file::open_regular_file;
use crate::image::check_decode_size;
use crate::image::decode::over_white;
use crate::{MediaError, RgbImage};

/// Buffers the `image` crate's animation decoders hold at once, each at most a canvas of
/// RGBA: the previous frame, the current one and its composite.
const DECODER_BUFFERS: u64 = 3;

/// An animated GIF, APNG or WebP.
pub(crate) struct Animation {
    pub(crate) path: PathBuf,
    pub(crate) name: String,
    pub(crate) format: ImageFormat,
    /// Most pixels of the canvas and of any one frame.
    pub(crate) limit: usize,
}

impl Animation {
    fn reader(&self) -> Result<BufReader<std::fs::File>, MediaError> {
        Ok(BufReader::new(open_regular_file(&self.path)?))
    }

    /// Caps what the decoder may allocate, should a frame be larger than its header said.
    fn limits(&self) -> image::Limits {
        let mut limits = image::Limits::no_limits();
        limits.max_alloc = Some(DECODER_BUFFERS * 4 * self.limit as u64);
        limits
    }

    /// The canvas size and the `image` crate's composited frames of an APNG or WebP.
    fn image_frames(&self) -> Result<(usize, usize, image::Frames<'static>), MediaError> {
        let error = |e: image::ImageError| MediaError::Video {
            source_name: self.name.clone(),
            message: e.to_string(),
        };
        let reader = self.reader()?;
        let (size, frames) = if self.format == ImageFormat::Png {
            let mut decoder = image::codecs::png::PngDecoder::new(reader).map_err(error)?;
            decoder.set_limits(self.limits()).map_err(error)?;
            (
                decoder.dimensions(),
                decoder.apng().map_err(error)?.into_frames(),
            )
        } else {
            let mut decoder = image::codecs::webp::WebPDecoder::new(reader).map_err(error)?;
            decoder.set_limits(self.limits()).map_err(error)?;
            (decoder.dimensions(), decoder.into_frames())
        };
        let (width, height) = (size.0 as usize, size.1 as usize);
        check_decode_size(width, height, self.limit, &self.name)?;
        Ok((width, height, frames))
    }
}

impl FrameSource for Animation {
    fn name(&self) -> &str {
        &self.name
    }

    /// Headers only: no frame is decoded (a still PNG or WebP is refused here).
    fn probe(&mut self) -> Result<VideoInfo, MediaError> {
        let mut reader = self.reader()?;
        match self.format {
            ImageFormat::Gif => gif_info(reader, &self.name, self.limit),
            ImageFormat::Png => apng_info(&mut reader, &self.name, self.limit),
            _ => webp_info(&mut reader, &self.name, self.limit),
        }
    }

    /// Every frame up to the last wanted one is decoded (frames build on each other); only
    /// the wanted ones are converted to RGB.
    fn read_frames(
        &mut self,
        wanted: &[usize],
        sink: &mut dyn FnMut(usize, RgbImage) -> Result<(), MediaError>,
    ) -> Result<(), MediaError> {
        if self.format == ImageFormat::Gif {
            let mut canvas = GifCanvas::new(self.reader()?, &self.name, self.limit)?;
            return deliver(&self.name, wanted, sink, &mut |keep| canvas.step(keep));
        }
        let (width, height, mut frames) = self.image_frames()?;
        let mut index = 0;
        deliver(&self.name, wanted, sink, &mut |keep| {
            let Some(frame) = frames.next() else {
                return Ok(Step::End);
            };
            let frame = frame.map_err(|e| MediaError::Video {
                source_name: self.name.clone(),
                message: format!("frame {index}: {e}"),
            })?;
            index += 1;
            if !keep {
                return Ok(Step::Skipped);
            }
            let data = frame
                .into_buffer()
                .pixels()
                .flat_map(|p| over_white(p.0))
                .collect();
            Ok(Step::Frame(RgbImage {
                width,
                height,
                data,
            }))
        })
    }
}

#[cfg(test)]
/// A GIF declaring a `width × height` canvas holding `frames` 1×1 frames, `delay`
/// hundredths of a second apart (23 bytes a frame).
pub(crate) fn tiny_gif(width: u16, height: u16, frames: usize, delay: u16) -> Vec<u8> {
    let mut gif = b"GIF89a".to_vec();
    gif.extend(width.to_le_bytes());
    gif.extend(height.to_le_bytes());
    gif.extend([0x80, 0, 0, 0, 0, 0, 255, 255, 255]); // 2-colour global table
    for _ in 0..frames {
        let [lo, hi] = delay.to_le_bytes();
        gif.extend([0x21, 0xF9, 4, 0, lo, hi, 0, 0]); // graphic control: the delay
        gif.extend([0x2C, 0, 0, 0, 0, 1, 0, 1, 0, 0]); // a 1×1 frame at (0, 0)
        gif.extend([2, 2, 0x44, 0x01, 0]); // LZW: clear, colour 0, end
    }
    gif.push(0x3B);
    gif
}

#[cfg(test)]
mod tests {
    use super::*;

    fn animation(bytes: &[u8], file: &str, limit: usize) -> (Animation, PathBuf) {
        let dir = std::env::temp_dir().join(format!("nuri-anim-{}-{file}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join(file);
        std::fs::write(&path, bytes).expect("write");
        let source = Animation {
            path: path.clone(),
            name: path.display().to_string(),
            format: ImageFormat::Gif,
            limit,
        };
        (source, dir)
    }

    #[test]
    fn a_10000_frame_gif_is_probed_from_its_headers() {
        // 10,000 frames on a 1000×1000 canvas: compositing every frame (what probing did)
        // would take minutes; reading the block headers takes milliseconds.
        let (mut source, dir) = animation(&tiny_gif(1000, 1000, 10_000, 1), "long.gif", 1 << 24);
        let info = source.probe().expect("probes");
        assert_eq!(
            (info.width, info.height, info.total_frames),
            (1000, 1000, 10_000)
        );
        assert!((info.fps - 100.0).abs() < 1e-9, "{}", info.fps);
        // The second pass decodes every frame up to the last one wanted, each at the cost of
        // its own pixel: the canvas is copied for the two frames kept only.
        let mut got = Vec::new();
        source
            .read_frames(&[0, 9_999], &mut |i, f| {
                got.push((i, f.width, f.data[..6].to_vec()));
                Ok(())
            })
            .expect("decodes");
        // The frame's black pixel, then the canvas's transparent one over white.
        let pixels = vec![0, 0, 0, 255, 255, 255];
        assert_eq!(got, [(0, 1000, pixels.clone()), (9_999, 1000, pixels)]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_gif_canvas_or_frame_over_the_callers_limit_is_refused_from_its_header() {
        let (mut source, dir) = animation(&tiny_gif(9000, 9000, 2, 10), "canvas.gif", 1 << 20);
        let err = source.probe().unwrap_err();
        assert!(
            matches!(
                err,
                MediaError::TooLarge {
                    pixels: 81_000_000,
                    limit: 1_048_576,
                    ..
                }
            ),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(dir);
        // A 2×2 canvas whose frame declares itself 60000×60000.
        let mut gif = tiny_gif(2, 2, 1, 10);
        gif[32..36].copy_from_slice(&[0x60, 0xEA, 0x60, 0xEA]);
        let (mut source, dir) = animation(&gif, "frame.gif", 1 << 20);
        let err = source.probe().unwrap_err();
        assert!(
            matches!(
                err,
                MediaError::TooLarge {
                    pixels: 3_600_000_000,
                    ..
                }
            ),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
