//! Reading video frames, streamed in two passes: [`FrameSource::probe`] counts the frames
//! and measures the rate without keeping any, then [`FrameSource::read_frames`] decodes again
//! and hands over only the sampled ones. A long video therefore never sits in memory whole.
//!
//! Pure Rust reads animated GIF, APNG and animated WebP (through the `image` crate) and
//! folders of numbered frames; the `ffmpeg` feature adds every container and codec FFmpeg
//! decodes (`video/ffmpeg.rs`).

use std::io::Read;
use std::path::{Path, PathBuf};

use image::ImageFormat;

use super::animation::Animation;
use crate::file::open_regular_file;
use crate::image::{MediaError, RgbImage, check_decode_size, load_rgb};

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
    /// First pass: frame count, rate and size, keeping no frames; a frame size over the
    /// source's decode limit is refused here. Animations and folders of frames read headers
    /// only; FFmpeg demuxes without decoding.
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
/// File extensions a folder of frames may hold.
const FRAME_EXTENSIONS: [&str; 7] = ["png", "jpg", "jpeg", "webp", "bmp", "gif", "tif"];

/// Opens a video: a folder of numbered frames (read at `folder_fps`), an animated GIF, APNG
/// or WebP, or with the `ffmpeg` feature anything FFmpeg reads. Frames (and an animation's
/// canvas) of more than `decode_limit` pixels are refused by the first pass. Anything but a
/// folder or a regular file (a FIFO, a device) is refused before it is opened.
pub fn open_video(
    path: &Path,
    folder_fps: f64,
    decode_limit: usize,
) -> Result<Box<dyn FrameSource>, MediaError> {
    let name = path.display().to_string();
    let io = |source| MediaError::Io {
        path: path.to_path_buf(),
        source,
    };
    if std::fs::metadata(path).map_err(io)?.is_dir() {
        return Ok(Box::new(FrameFolder::open(path, folder_fps, decode_limit)?));
    }
    let mut head = [0u8; 64];
    let n = open_regular_file(path)?.read(&mut head).map_err(io)?;
    match image::guess_format(&head[..n]) {
        Ok(format @ (ImageFormat::Gif | ImageFormat::Png | ImageFormat::WebP)) => {
            Ok(Box::new(Animation {
                path: path.to_path_buf(),
                name,
                format,
                limit: decode_limit,
            }))
        }
        _ => open_other(path, name, decode_limit),
    }
}

#[cfg(feature = "ffmpeg")]
fn open_other(
    path: &Path,
    _name: String,
    decode_limit: usize,
) -> Result<Box<dyn FrameSource>, MediaError> {
    Ok(Box::new(super::ffmpeg::FfmpegVideo::new(
        path,
        decode_limit,
    )))
}

#[cfg(not(feature = "ffmpeg"))]
fn open_other(
    _path: &Path,
    name: String,
    _decode_limit: usize,
) -> Result<Box<dyn FrameSource>, MediaError> {
    Err(MediaError::NeedsFfmpeg { source_name: name })
}

/// One frame of a decoder that converts only the frames it is asked to keep.
pub(crate) enum Step {
    /// The stream has no more frames.
    End,
    /// A frame decoded (later ones may depend on it) but not converted.
    Skipped,
    Frame(RgbImage),
}

/// Hands `sink` the frames whose indices are in `wanted` (ascending, repeats allowed):
/// `next(keep)` decodes the next frame, converting it only when `keep`. Stops after the last
/// wanted frame; an error if the stream ends before it.
pub(crate) fn deliver(
    name: &str,
    wanted: &[usize],
    sink: &mut dyn FnMut(usize, RgbImage) -> Result<(), MediaError>,
    next: &mut dyn FnMut(bool) -> Result<Step, MediaError>,
) -> Result<(), MediaError> {
    let (mut next_wanted, mut index) = (0, 0);
    while next_wanted < wanted.len() {
        match next(wanted[next_wanted] == index)? {
            Step::End => {
                return Err(MediaError::Video {
                    source_name: name.to_string(),
                    message: format!(
                        "the video ended after {index} frames on the second read, but frame {} was sampled",
                        wanted[next_wanted]
                    ),
                });
            }
            Step::Skipped => {}
            Step::Frame(frame) => {
                while next_wanted + 1 < wanted.len() && wanted[next_wanted + 1] == index {
                    sink(index, frame.clone())?;
                    next_wanted += 1;
                }
                sink(index, frame)?;
                next_wanted += 1;
            }
        }
        index += 1;
    }
    Ok(())
}

/// A folder of numbered frames (`frame_0001.png`, `2.jpg`, ...), in numeric order.
struct FrameFolder {
    name: String,
    files: Vec<PathBuf>,
    fps: f64,
    /// Most pixels of a frame.
    limit: usize,
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
    fn open(dir: &Path, fps: f64, limit: usize) -> Result<Self, MediaError> {
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
            limit,
        })
    }

    fn frame(&self, path: &Path, size: Option<(usize, usize)>) -> Result<RgbImage, MediaError> {
        let image = load_rgb(path, self.limit)?;
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
            image::ImageReader::new(std::io::BufReader::new(open_regular_file(path)?))
                .with_guessed_format()
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
        check_decode_size(
            width as usize,
            height as usize,
            self.limit,
            &first.display().to_string(),
        )?;
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
        let (mut decoded, mut converted) = (0, 0);
        deliver(
            "v",
            &[0, 3, 3, 5],
            &mut |i, f| {
                got.push((i, f.data[0]));
                Ok(())
            },
            &mut |keep| {
                decoded += 1;
                if !keep {
                    return Ok(Step::Skipped);
                }
                converted += 1;
                Ok(Step::Frame(frame(decoded - 1)))
            },
        )
        .expect("delivers");
        assert_eq!(got, [(0, 0), (3, 3), (3, 3), (5, 5)]);
        assert_eq!(decoded, 6, "stops at the last wanted frame");
        assert_eq!(converted, 3, "converts only the frames kept");
        let mut left = 4;
        let err = deliver("v.gif", &[1, 6], &mut |_, _| Ok(()), &mut |keep| {
            left -= 1;
            Ok(match (left, keep) {
                (-1, _) => Step::End,
                (_, true) => Step::Frame(frame(0)),
                (_, false) => Step::Skipped,
            })
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("v.gif")
                && err.to_string().contains("after 4 frames")
                && err.to_string().contains("frame 6"),
            "{err}"
        );
    }
}
