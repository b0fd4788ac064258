//! Reading video frames, streamed in two passes: [`FrameSource::probe`] counts the frames
//! and measures the rate without keeping any, then [`FrameSource::read_frames`] decodes again
//! and hands over only the sampled ones. A long video therefore never sits in memory whole.
//!
//! Pure Rust reads animated GIF, APNG and animated WebP (through the `image` crate) and
//! folders of numbered frames; the `ffmpeg` feature adds every container and codec FFmpeg
//! decodes (`video/ffmpeg.rs`).

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use image::{AnimationDecoder, ImageDecoder, ImageFormat};

use crate::image::decode::{DEFAULT_DECODE_LIMIT, over_white};
use crate::image::{MediaError, RgbImage, load_rgb};

/// What the first pass learns about a video.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VideoInfo {
    pub width: usize,
    pub height: usize,
    pub total_frames: usize,
    /// Frames per second (the container's average rate).
    pub fps: f64,
}

/// A video's frames, read in two passes.
pub trait FrameSource {
    /// The name errors use (the path).
    fn name(&self) -> &str;
    /// First pass: frame count, rate and size, keeping no frames.
    fn probe(&mut self) -> Result<VideoInfo, MediaError>;
    /// Second pass: decodes frames in order and gives `sink` each frame whose index is in
    /// `wanted` (ascending), then stops.
    fn read_frames(
        &mut self,
        wanted: &[usize],
        sink: &mut dyn FnMut(usize, RgbImage) -> Result<(), MediaError>,
    ) -> Result<(), MediaError>;
}

/// Frame rate given to a folder of frames when none is said: the rate `qwen_vl_utils`
/// assumes for a list of frames (`sample_fps`).
pub const DEFAULT_FOLDER_FPS: f64 = 2.0;
/// Delay browsers give an animation frame that declares none, in milliseconds.
const ZERO_DELAY_MS: f64 = 100.0;
/// File extensions a folder of frames may hold.
const FRAME_EXTENSIONS: [&str; 7] = ["png", "jpg", "jpeg", "webp", "bmp", "gif", "tif"];

/// Opens a video: a folder of numbered frames (read at `folder_fps`), an animated GIF, APNG
/// or WebP, or with the `ffmpeg` feature anything FFmpeg reads.
pub fn open_video(path: &Path, folder_fps: f64) -> Result<Box<dyn FrameSource>, MediaError> {
    let name = path.display().to_string();
    let io = |source| MediaError::Io {
        path: path.to_path_buf(),
        source,
    };
    if path.is_dir() {
        return Ok(Box::new(FrameFolder::open(path, folder_fps)?));
    }
    let mut head = [0u8; 64];
    let n = File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(io)?;
    match image::guess_format(&head[..n]) {
        Ok(format @ (ImageFormat::Gif | ImageFormat::Png | ImageFormat::WebP)) => {
            Ok(Box::new(Animation {
                path: path.to_path_buf(),
                name,
                format,
            }))
        }
        _ => open_other(path, name),
    }
}

#[cfg(feature = "ffmpeg")]
fn open_other(path: &Path, _name: String) -> Result<Box<dyn FrameSource>, MediaError> {
    Ok(Box::new(super::ffmpeg::FfmpegVideo::new(path)))
}

#[cfg(not(feature = "ffmpeg"))]
fn open_other(_path: &Path, name: String) -> Result<Box<dyn FrameSource>, MediaError> {
    Err(MediaError::NeedsFfmpeg { source_name: name })
}

/// Hands `sink` the frames of `frames` whose indices are in `wanted`; an error if the stream
/// ends before the last wanted frame.
pub(crate) fn deliver(
    name: &str,
    frames: impl Iterator<Item = Result<RgbImage, MediaError>>,
    wanted: &[usize],
    sink: &mut dyn FnMut(usize, RgbImage) -> Result<(), MediaError>,
) -> Result<(), MediaError> {
    let mut next = 0;
    let mut seen = 0;
    if wanted.is_empty() {
        return Ok(());
    }
    for (index, frame) in frames.enumerate() {
        seen = index + 1;
        if wanted[next] != index {
            // Still decode it: a frame can depend on the ones before it.
            frame?;
            continue;
        }
        let frame = frame?;
        while next + 1 < wanted.len() && wanted[next + 1] == index {
            sink(index, frame.clone())?;
            next += 1;
        }
        sink(index, frame)?;
        next += 1;
        if next == wanted.len() {
            return Ok(());
        }
    }
    if next < wanted.len() {
        return Err(MediaError::Video {
            source_name: name.to_string(),
            message: format!(
                "the video ended after {seen} frames on the second read, but frame {} was sampled",
                wanted[next]
            ),
        });
    }
    Ok(())
}

/// An animated GIF, APNG or WebP.
struct Animation {
    path: PathBuf,
    name: String,
    format: ImageFormat,
}

/// One decoded animation frame: its pixels and its delay in milliseconds.
type AnimFrame = Result<(RgbImage, f64), MediaError>;
/// An animation's canvas size and its frames.
type AnimFrames = (usize, usize, Box<dyn Iterator<Item = AnimFrame>>);

impl Animation {
    fn frames(&self) -> Result<AnimFrames, MediaError> {
        let error = |e: image::ImageError| MediaError::Video {
            source_name: self.name.clone(),
            message: e.to_string(),
        };
        let file = File::open(&self.path).map_err(|source| MediaError::Io {
            path: self.path.clone(),
            source,
        })?;
        let reader = BufReader::new(file);
        let (size, frames) = match self.format {
            ImageFormat::Gif => {
                let decoder = image::codecs::gif::GifDecoder::new(reader).map_err(error)?;
                (decoder.dimensions(), decoder.into_frames())
            }
            ImageFormat::Png => {
                let decoder = image::codecs::png::PngDecoder::new(reader).map_err(error)?;
                let size = decoder.dimensions();
                if !decoder.is_apng().map_err(error)? {
                    return Err(MediaError::Video {
                        source_name: self.name.clone(),
                        message: "a still PNG, not an animated one (APNG)".into(),
                    });
                }
                (size, decoder.apng().map_err(error)?.into_frames())
            }
            _ => {
                let decoder = image::codecs::webp::WebPDecoder::new(reader).map_err(error)?;
                if !decoder.has_animation() {
                    return Err(MediaError::Video {
                        source_name: self.name.clone(),
                        message: "a still WebP, not an animated one".into(),
                    });
                }
                (decoder.dimensions(), decoder.into_frames())
            }
        };
        let (width, height) = (size.0 as usize, size.1 as usize);
        if width * height > DEFAULT_DECODE_LIMIT {
            return Err(MediaError::TooLarge {
                source_name: self.name.clone(),
                pixels: width * height,
                limit: DEFAULT_DECODE_LIMIT,
            });
        }
        let name = self.name.clone();
        let iter = frames.enumerate().map(move |(i, frame)| {
            let frame = frame.map_err(|e| MediaError::Video {
                source_name: name.clone(),
                message: format!("frame {i}: {e}"),
            })?;
            let (numer, denom) = frame.delay().numer_denom_ms();
            let ms = f64::from(numer) / f64::from(denom.max(1));
            let data = frame
                .into_buffer()
                .pixels()
                .flat_map(|p| over_white(p.0))
                .collect();
            Ok((
                RgbImage {
                    width,
                    height,
                    data,
                },
                if ms > 0.0 { ms } else { ZERO_DELAY_MS },
            ))
        });
        Ok((width, height, Box::new(iter)))
    }
}

impl FrameSource for Animation {
    fn name(&self) -> &str {
        &self.name
    }

    fn probe(&mut self) -> Result<VideoInfo, MediaError> {
        let (width, height, frames) = self.frames()?;
        let (mut total_frames, mut total_ms) = (0usize, 0f64);
        for frame in frames {
            total_ms += frame?.1;
            total_frames += 1;
        }
        Ok(VideoInfo {
            width,
            height,
            total_frames,
            fps: total_frames as f64 * 1000.0 / total_ms.max(f64::MIN_POSITIVE),
        })
    }

    fn read_frames(
        &mut self,
        wanted: &[usize],
        sink: &mut dyn FnMut(usize, RgbImage) -> Result<(), MediaError>,
    ) -> Result<(), MediaError> {
        let (_, _, frames) = self.frames()?;
        deliver(&self.name, frames.map(|f| f.map(|f| f.0)), wanted, sink)
    }
}

/// A folder of numbered frames (`frame_0001.png`, `2.jpg`, ...), in numeric order.
struct FrameFolder {
    name: String,
    files: Vec<PathBuf>,
    fps: f64,
}

/// Sort key that orders `frame2` before `frame10`: the text with each run of digits
/// replaced by its value.
fn natural_key(name: &str) -> Vec<(String, u128)> {
    let mut key = Vec::new();
    let mut text = String::new();
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            let mut digits = c.to_string();
            while let Some(d) = chars.next_if(char::is_ascii_digit) {
                digits.push(d);
            }
            key.push((
                std::mem::take(&mut text),
                digits.parse().unwrap_or(u128::MAX),
            ));
        } else {
            text.push(c);
        }
    }
    key.push((text, 0));
    key
}

impl FrameFolder {
    fn open(dir: &Path, fps: f64) -> Result<Self, MediaError> {
        let io = |source| MediaError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            let is_frame = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| FRAME_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
            if is_frame && path.is_file() {
                files.push(path);
            }
        }
        files.sort_by_cached_key(|p| {
            natural_key(&p.file_name().unwrap_or_default().to_string_lossy())
        });
        Ok(Self {
            name: dir.display().to_string(),
            files,
            fps,
        })
    }

    fn frame(&self, path: &Path, size: Option<(usize, usize)>) -> Result<RgbImage, MediaError> {
        let image = load_rgb(path, DEFAULT_DECODE_LIMIT)?;
        match size {
            Some((w, h)) if (image.width, image.height) != (w, h) => Err(MediaError::Video {
                source_name: path.display().to_string(),
                message: format!(
                    "frame is {}×{}, but the folder's first frame is {w}×{h}",
                    image.width, image.height
                ),
            }),
            _ => Ok(image),
        }
    }
}

impl FrameSource for FrameFolder {
    fn name(&self) -> &str {
        &self.name
    }

    fn probe(&mut self) -> Result<VideoInfo, MediaError> {
        let Some(first) = self.files.first() else {
            return Err(MediaError::Video {
                source_name: self.name.clone(),
                message: format!(
                    "the folder holds no frames (files ending in {})",
                    FRAME_EXTENSIONS.join(", ")
                ),
            });
        };
        if !(self.fps.is_finite() && self.fps > 0.0) {
            return Err(MediaError::Video {
                source_name: self.name.clone(),
                message: format!("frame rate must be positive, got {}", self.fps),
            });
        }
        // Headers only: every frame must open and share the first one's size.
        let dims = |path: &Path| {
            image::ImageReader::open(path)
                .and_then(|r| r.with_guessed_format())
                .map_err(|source| MediaError::Io {
                    path: path.to_path_buf(),
                    source,
                })?
                .into_dimensions()
                .map_err(|e| MediaError::Decode {
                    source_name: path.display().to_string(),
                    message: e.to_string(),
                })
        };
        let (width, height) = dims(first)?;
        for path in &self.files[1..] {
            let size = dims(path)?;
            if size != (width, height) {
                return Err(MediaError::Video {
                    source_name: path.display().to_string(),
                    message: format!(
                        "frame is {}×{}, but the folder's first frame is {width}×{height}",
                        size.0, size.1
                    ),
                });
            }
        }
        Ok(VideoInfo {
            width: width as usize,
            height: height as usize,
            total_frames: self.files.len(),
            fps: self.fps,
        })
    }

    fn read_frames(
        &mut self,
        wanted: &[usize],
        sink: &mut dyn FnMut(usize, RgbImage) -> Result<(), MediaError>,
    ) -> Result<(), MediaError> {
        // Frames of a folder are independent: decode only the sampled ones.
        let mut size = None;
        for &index in wanted {
            let path = self.files.get(index).ok_or_else(|| MediaError::Video {
                source_name: self.name.clone(),
                message: format!(
                    "frame {index} was sampled but the folder has {}",
                    self.files.len()
                ),
            })?;
            let frame = self.frame(path, size)?;
            size = Some((frame.width, frame.height));
            sink(index, frame)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_sort_by_number() {
        let mut names = ["f10.png", "f2.png", "f1.png", "g1.png", "f02b.png"];
        names.sort_by_cached_key(|n| natural_key(n));
        assert_eq!(names, ["f1.png", "f2.png", "f02b.png", "f10.png", "g1.png"]);
    }

    #[test]
    fn deliver_stops_after_the_last_wanted_frame_and_reports_short_videos() {
        let frame = |i: usize| RgbImage {
            width: 1,
            height: 1,
            data: vec![i as u8; 3],
        };
        let mut got = Vec::new();
        let decoded = std::cell::Cell::new(0);
        let frames = (0..10).map(|i| {
            decoded.set(decoded.get() + 1);
            Ok(frame(i))
        });
        deliver("v", frames, &[0, 3, 3, 5], &mut |i, f| {
            got.push((i, f.data[0]));
            Ok(())
        })
        .expect("delivers");
        assert_eq!(got, [(0, 0), (3, 3), (3, 3), (5, 5)]);
        assert_eq!(decoded.get(), 6, "stops at the last wanted frame");
        let err = deliver(
            "v.gif",
            (0..4).map(|i| Ok(frame(i))),
            &[1, 6],
            &mut |_, _| Ok(()),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("v.gif") && err.to_string().contains("frame 6"),
            "{err}"
        );
    }
}
