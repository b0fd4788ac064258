//! The first pass over an animation without decoding a pixel: the canvas, every frame's
//! declared size and delay, from the GIF blocks (the `gif` crate with LZW decoding
//! skipped), the APNG chunks (`IHDR`, `acTL`, `fcTL`) and the animated WebP chunks (`VP8X`,
//! `ANMF`). A 10,000-frame GIF on a large canvas is counted in microseconds per frame
//! instead of being composited 10,000 times. The delays are the ones the `image` crate's
//! decoders give the same frames, so the rate matches the decoding pass.

use std::io::{BufRead, Read, Seek, SeekFrom};

use super::decode::VideoInfo;
use crate::MediaError;
use crate::image::check_decode_size;

/// Delay browsers give an animation frame that declares none, in milliseconds.
pub(crate) const ZERO_DELAY_MS: f64 = 100.0;

/// Frame count and total duration, accumulated frame by frame.
#[derive(Default)]
pub(crate) struct Timing {
    frames: usize,
    ms: f64,
}

impl Timing {
    /// Adds a frame shown for `ms` milliseconds (none: [`ZERO_DELAY_MS`]).
    pub(crate) fn add(&mut self, ms: f64) {
        self.ms += if ms > 0.0 { ms } else { ZERO_DELAY_MS };
        self.frames += 1;
    }

    pub(crate) fn info(&self, width: usize, height: usize) -> VideoInfo {
        VideoInfo {
            width,
            height,
            total_frames: self.frames,
            fps: self.frames as f64 * 1000.0 / self.ms.max(f64::MIN_POSITIVE),
        }
    }
}

fn video_error(name: &str, message: impl std::fmt::Display) -> MediaError {
    MediaError::Video {
        source_name: name.to_string(),
        message: message.to_string(),
    }
}

/// A GIF's canvas, frame count and rate; refuses a canvas or a frame over `limit` pixels.
pub(crate) fn gif_info(
    reader: impl Read,
    name: &str,
    limit: usize,
) -> Result<VideoInfo, MediaError> {
    let mut options = gif::DecodeOptions::new();
    options.skip_frame_decoding(true);
    let mut decoder = options
        .read_info(reader)
        .map_err(|e| video_error(name, e))?;
    let (width, height) = (usize::from(decoder.width()), usize::from(decoder.height()));
    check_decode_size(width, height, limit, name)?;
    let mut timing = Timing::default();
    while let Some(frame) = decoder
        .next_frame_info()
        .map_err(|e| video_error(name, format!("frame {}: {e}", timing.frames)))?
    {
        // A frame may declare itself larger than the canvas.
        check_decode_size(
            usize::from(frame.width),
            usize::from(frame.height),
            limit,
            name,
        )?;
        // GIF delays are in hundredths of a second.
        timing.add(f64::from(frame.delay) * 10.0);
    }
    Ok(timing.info(width, height))
}

/// Reads the next chunk header of a PNG (big-endian length, type) or RIFF (type,
/// little-endian length) stream; `None` at the end of the input.
fn chunk_header(
    reader: &mut impl Read,
    png: bool,
    name: &str,
) -> Result<Option<([u8; 4], u64)>, MediaError> {
    let mut head = [0u8; 8];
    match reader.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(video_error(name, e)),
    }
    let (kind, len) = if png {
        (
            &head[4..],
            u32::from_be_bytes([head[0], head[1], head[2], head[3]]),
        )
    } else {
        (
            &head[..4],
            u32::from_le_bytes([head[4], head[5], head[6], head[7]]),
        )
    };
    Ok(Some((kind.try_into().expect("4 bytes"), u64::from(len))))
}

/// The first `N` bytes of a chunk of `len` bytes; the rest is skipped by the caller.
fn chunk_start<const N: usize>(
    reader: &mut impl Read,
    len: u64,
    name: &str,
) -> Result<[u8; N], MediaError> {
    let mut data = [0u8; N];
    if len < N as u64 {
        return Err(video_error(
            name,
            format!("a chunk of {len} bytes is too short"),
        ));
    }
    reader
        .read_exact(&mut data)
        .map_err(|e| video_error(name, e))?;
    Ok(data)
}

fn skip(reader: &mut impl Seek, bytes: u64, name: &str) -> Result<(), MediaError> {
    let bytes = i64::try_from(bytes).map_err(|e| video_error(name, e))?;
    reader
        .seek(SeekFrom::Current(bytes))
        .map(drop)
        .map_err(|e| video_error(name, e))
}

fn be32(b: &[u8]) -> usize {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
}

fn le24(b: &[u8]) -> usize {
    usize::from(b[0]) | usize::from(b[1]) << 8 | usize::from(b[2]) << 16
}

/// An APNG's canvas, frame count and rate, from its chunks; refuses a still PNG, and a
/// canvas or a frame over `limit` pixels.
pub(crate) fn apng_info(
    reader: &mut (impl BufRead + Seek),
    name: &str,
    limit: usize,
) -> Result<VideoInfo, MediaError> {
    skip(reader, 8, name)?; // the signature, checked when the format was guessed
    let (mut size, mut declared) = (None, None);
    let mut timing = Timing::default();
    while let Some((kind, len)) = chunk_header(reader, true, name)? {
        // Bytes of the chunk's data read here.
        let read = match &kind {
            b"IHDR" => {
                let d: [u8; 8] = chunk_start(reader, len, name)?;
                let (w, h) = (be32(&d[..4]), be32(&d[4..]));
                check_decode_size(w, h, limit, name)?;
                size = Some((w, h));
                8
            }
            b"acTL" => {
                let d: [u8; 4] = chunk_start(reader, len, name)?;
                declared = Some(be32(&d));
                4
            }
            b"fcTL" => {
                let d: [u8; 24] = chunk_start(reader, len, name)?;
                check_decode_size(be32(&d[4..]), be32(&d[8..]), limit, name)?;
                let num = f64::from(u16::from_be_bytes([d[20], d[21]]));
                // The standard reads a zero denominator as 100.
                let den = match u16::from_be_bytes([d[22], d[23]]) {
                    0 => 100.0,
                    d => f64::from(d),
                };
                // Frames past the count `acTL` declares are not part of the animation.
                if declared.is_some_and(|n| timing.frames < n) {
                    timing.add(num * 1000.0 / den);
                }
                24
            }
            b"IDAT" if declared.is_none() => {
                return Err(video_error(name, "a still PNG, not an animated one (APNG)"));
            }
            b"IEND" => break,
            _ => 0,
        };
        skip(reader, len - read + 4, name)?; // the rest of the data and the CRC
    }
    let (width, height) = size.ok_or_else(|| video_error(name, "no IHDR chunk"))?;
    Ok(timing.info(width, height))
}

/// An animated WebP's canvas, frame count and rate, from its chunks; refuses a still WebP,
/// and a canvas or a frame over `limit` pixels.
pub(crate) fn webp_info(
    reader: &mut (impl BufRead + Seek),
    name: &str,
    limit: usize,
) -> Result<VideoInfo, MediaError> {
    skip(reader, 12, name)?; // "RIFF", the size, "WEBP"
    let still = || video_error(name, "a still WebP, not an animated one");
    let mut size = None;
    let mut timing = Timing::default();
    while let Some((kind, len)) = chunk_header(reader, false, name)? {
        // Bytes of the chunk's data read here.
        let read = match &kind {
            b"VP8X" => {
                let d: [u8; 10] = chunk_start(reader, len, name)?;
                const ANIMATION: u8 = 0x02;
                if d[0] & ANIMATION == 0 {
                    return Err(still());
                }
                let (w, h) = (le24(&d[4..]) + 1, le24(&d[7..]) + 1);
                check_decode_size(w, h, limit, name)?;
                size = Some((w, h));
                10
            }
            b"ANMF" => {
                let d: [u8; 16] = chunk_start(reader, len, name)?;
                check_decode_size(le24(&d[6..]) + 1, le24(&d[9..]) + 1, limit, name)?;
                timing.add(le24(&d[12..]) as f64);
                16
            }
            b"VP8 " | b"VP8L" if size.is_none() => return Err(still()),
            _ => 0,
        };
        // Chunks are padded to an even length.
        skip(reader, len - read + (len & 1), name)?;
    }
    let (width, height) = size.ok_or_else(still)?;
    Ok(timing.info(width, height))
}
