//! Video files through the system's FFmpeg libraries (the `ffmpeg` feature): any container
//! and codec libavformat/libavcodec read. Frames are converted to RGB24 by libswscale with
//! bilinear flags and the source's colorspace, as PyAV's `to_ndarray(format="rgb24")` does.

use std::path::{Path, PathBuf};

use ff::format::Pixel;
use ff::software::scaling::{context::Context as Scaler, flag::Flags};
use ff::util::frame::video::Video;
use ffmpeg_next as ff;

use super::decode::{FrameSource, VideoInfo};
use crate::file::check_regular_file;
use crate::image::{MediaError, RgbImage, check_decode_size};

/// A video file FFmpeg reads.
pub struct FfmpegVideo {
    path: PathBuf,
    name: String,
    /// Most pixels of a frame.
    limit: usize,
}

impl FfmpegVideo {
    /// The video at `path`, whose frames may have at most `decode_limit` pixels.
    pub fn new(path: &Path, decode_limit: usize) -> Self {
        Self {
            path: path.to_path_buf(),
            name: path.display().to_string(),
            limit: decode_limit,
        }
    }

    fn error(&self, what: &str, e: impl std::fmt::Display) -> MediaError {
        MediaError::Video {
            source_name: self.name.clone(),
            message: format!("{what}: {e}"),
        }
    }

    /// Opens the container and finds its best video stream.
    fn open(&self) -> Result<(ff::format::context::Input, usize), MediaError> {
        ff::init().map_err(|e| self.error("cannot initialise FFmpeg", e))?;
        // FFmpeg would block on a FIFO and read a device forever.
        check_regular_file(&self.path)?;
        let input = ff::format::input(&self.path).map_err(|e| self.error("cannot open", e))?;
        let index = input
            .streams()
            .best(ff::media::Type::Video)
            .ok_or_else(|| self.error("no video stream", "the file holds none"))?
            .index();
        Ok((input, index))
    }

    fn decoder(
        &self,
        input: &ff::format::context::Input,
        index: usize,
    ) -> Result<ff::decoder::Video, MediaError> {
        let stream = input
            .stream(index)
            .ok_or_else(|| self.error("no video stream", index))?;
        ff::codec::context::Context::from_parameters(stream.parameters())
            .and_then(|c| c.decoder().video())
            .map_err(|e| self.error("no decoder for its codec", e))
    }
}

/// A rational as `f64`, or `None` when it is not a positive rate.
fn rate(r: ff::Rational) -> Option<f64> {
    (r.numerator() > 0 && r.denominator() > 0)
        .then(|| f64::from(r.numerator()) / f64::from(r.denominator()))
}

impl FrameSource for FfmpegVideo {
    fn name(&self) -> &str {
        &self.name
    }

    /// Counts the stream's packets (demuxing only, no decoding): one per frame.
    fn probe(&mut self) -> Result<VideoInfo, MediaError> {
        let (mut input, index) = self.open()?;
        let decoder = self.decoder(&input, index)?;
        let (width, height) = (decoder.width() as usize, decoder.height() as usize);
        if width == 0 || height == 0 {
            return Err(self.error("no frame size", "the stream declares none"));
        }
        check_decode_size(width, height, self.limit, &self.name)?;
        let stream = input.stream(index).expect("stream found above");
        let (avg, real, time_base, duration) = (
            stream.avg_frame_rate(),
            stream.rate(),
            stream.time_base(),
            stream.duration(),
        );
        let mut total_frames = 0usize;
        let mut packet = ff::Packet::empty();
        loop {
            match packet.read(&mut input) {
                Ok(()) if packet.stream() == index => total_frames += 1,
                Ok(()) => {}
                Err(ff::Error::Eof) => break,
                Err(e) => return Err(self.error("cannot read the container", e)),
            }
        }
        let seconds = duration as f64 * rate(time_base).unwrap_or(0.0);
        let fps = rate(avg)
            .or_else(|| rate(real))
            .or_else(|| (seconds > 0.0).then(|| total_frames as f64 / seconds))
            .ok_or_else(|| self.error("unknown frame rate", "the stream declares none"))?;
        Ok(VideoInfo {
            width,
            height,
            total_frames,
            fps,
        })
    }

    // One loop on purpose: FFmpeg's send/receive protocol (packets in, frames out, the
    // decoder flushed at the end) reads best in one place.
    fn read_frames(
        &mut self,
        wanted: &[usize],
        sink: &mut dyn FnMut(usize, RgbImage) -> Result<(), MediaError>,
    ) -> Result<(), MediaError> {
        if wanted.is_empty() {
            return Ok(());
        }
        let (mut input, index) = self.open()?;
        let mut decoder = self.decoder(&input, index)?;
        let mut scaler: Option<Scaler> = None;
        let mut next = 0usize;
        // Frames decoded so far (read by the error messages while `drain` counts them).
        let seen = std::cell::Cell::new(0usize);
        let mut decoded = Video::empty();
        // Receives every frame the decoder has ready; true once the last wanted one is given.
        let mut drain = |decoder: &mut ff::decoder::Video| -> Result<bool, MediaError> {
            while decoder.receive_frame(&mut decoded).is_ok() {
                let index_now = seen.get();
                seen.set(index_now + 1);
                if wanted[next] != index_now {
                    continue;
                }
                let (w, h) = (decoded.width(), decoded.height());
                // The stream may change size after its header: check before converting.
                check_decode_size(w as usize, h as usize, self.limit, &self.name)?;
                if scaler.is_none() {
                    scaler = Some(
                        Scaler::get(decoded.format(), w, h, Pixel::RGB24, w, h, Flags::BILINEAR)
                            .map_err(|e| self.error("cannot convert frames to RGB", e))?,
                    );
                }
                let mut rgb = Video::empty();
                scaler
                    .as_mut()
                    .expect("set above")
                    .run(&decoded, &mut rgb)
                    .map_err(|e| self.error(&format!("frame {index_now}"), e))?;
                let (w, h) = (w as usize, h as usize);
                let stride = rgb.stride(0);
                let mut data = Vec::with_capacity(w * h * 3);
                for row in rgb.data(0).chunks(stride).take(h) {
                    data.extend_from_slice(&row[..w * 3]);
                }
                let frame = RgbImage {
                    width: w,
                    height: h,
                    data,
                };
                while next + 1 < wanted.len() && wanted[next + 1] == index_now {
                    sink(index_now, frame.clone())?;
                    next += 1;
                }
                sink(index_now, frame)?;
                next += 1;
                if next == wanted.len() {
                    return Ok(true);
                }
            }
            Ok(false)
        };
        let mut packet = ff::Packet::empty();
        loop {
            match packet.read(&mut input) {
                Ok(()) if packet.stream() == index => {
                    decoder.send_packet(&packet).map_err(|e| {
                        self.error(&format!("corrupt data near frame {}", seen.get()), e)
                    })?;
                    if drain(&mut decoder)? {
                        return Ok(());
                    }
                }
                Ok(()) => {}
                Err(ff::Error::Eof) => break,
                Err(e) => return Err(self.error("cannot read the container", e)),
            }
        }
        decoder
            .send_eof()
            .map_err(|e| self.error("cannot finish decoding", e))?;
        if drain(&mut decoder)? {
            return Ok(());
        }
        Err(MediaError::Video {
            source_name: self.name.clone(),
            message: format!(
                "the video decoded to {} frames, but frame {} was sampled (is it truncated?)",
                seen.get(),
                wanted[next]
            ),
        })
    }
}
