//! Decoding image files to 8-bit RGB the way the reference's `convert_to_rgb` leaves them:
//! alpha composited on white, grayscale expanded, an animation's first frame.

use std::path::{Path, PathBuf};

use thiserror::Error;

use super::processor::MAX_ASPECT_RATIO;

/// Largest decoded image accepted by default, in pixels: Pillow's decompression-bomb limit
/// (`Image.MAX_IMAGE_PIXELS`).
pub const DEFAULT_DECODE_LIMIT: usize = 89_478_485;

/// Why an image could not be turned into model inputs.
#[derive(Debug, Error)]
pub enum MediaError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{source_name}: cannot decode image: {message}")]
    Decode {
        source_name: String,
        message: String,
    },
    #[error(
        "{source_name}: image is {width}×{height}; both sides must be at least 1 pixel and the aspect ratio at most {MAX_ASPECT_RATIO}"
    )]
    BadSize {
        source_name: String,
        width: usize,
        height: usize,
    },
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("{source_name}: cannot decode video: {message}")]
    Video {
        source_name: String,
        message: String,
    },
    #[error(
        "{source_name}: reading this video needs FFmpeg; rebuild with `--features ffmpeg` (pure Rust reads animated GIF, APNG, animated WebP and folders of frames)"
    )]
    NeedsFfmpeg { source_name: String },
    #[error("{source_name}: {source}")]
    Sampling {
        source_name: String,
        source: crate::video::SamplingError,
    },
    #[error("{source_name}: {pixels} pixels after decoding exceeds the limit of {limit}")]
    TooLarge {
        source_name: String,
        pixels: usize,
        limit: usize,
    },
}

/// An 8-bit RGB image, rows top to bottom, pixels interleaved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    /// `height * width * 3` bytes.
    pub data: Vec<u8>,
}

/// Composites one RGBA pixel over opaque white with Pillow's integer arithmetic
/// (`AlphaComposite.c`), which is what the reference's `convert_to_rgb` does.
pub(crate) fn over_white([r, g, b, a]: [u8; 4]) -> [u8; 3] {
    if a == 255 {
        return [r, g, b];
    }
    if a == 0 {
        return [255; 3];
    }
    // With an opaque background, Pillow's coefficients reduce to a·128 and (255 − a)·128.
    const SHIFT: u32 = 7;
    let coef1 = u32::from(a) << SHIFT;
    let coef2 = (255 - u32::from(a)) << SHIFT;
    let blend = |src: u8| {
        let tmp = u32::from(src) * coef1 + 255 * coef2 + (0x80 << SHIFT);
        ((((tmp >> 8) + tmp) >> 8) >> SHIFT) as u8
    };
    [blend(r), blend(g), blend(b)]
}

/// Decodes an encoded image (format guessed from its bytes) to RGB: alpha is composited on
/// white, grayscale is expanded, an animation gives its first frame. `source_name` names the
/// image in errors.
pub fn decode_rgb(
    bytes: &[u8],
    source_name: &str,
    max_pixels: usize,
) -> Result<RgbImage, MediaError> {
    let decode_error = |message: String| MediaError::Decode {
        source_name: source_name.to_string(),
        message,
    };
    let reader = || {
        ::image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| decode_error(e.to_string()))
    };
    // Read the header first so an oversized image is refused before it is allocated.
    let (width, height) = reader()?
        .into_dimensions()
        .map_err(|e| decode_error(e.to_string()))?;
    let (width, height) = (width as usize, height as usize);
    if width * height > max_pixels {
        return Err(MediaError::TooLarge {
            source_name: source_name.to_string(),
            pixels: width * height,
            limit: max_pixels,
        });
    }
    let decoded = reader()?
        .decode()
        .map_err(|e| decode_error(e.to_string()))?;
    let data = if decoded.color().has_alpha() {
        decoded
            .to_rgba8()
            .pixels()
            .flat_map(|p| over_white(p.0))
            .collect()
    } else {
        decoded.to_rgb8().into_raw()
    };
    Ok(RgbImage {
        width,
        height,
        data,
    })
}

/// Reads and decodes an image file; see [`decode_rgb`].
pub fn load_rgb(path: &Path, max_pixels: usize) -> Result<RgbImage, MediaError> {
    let bytes = std::fs::read(path).map_err(|source| MediaError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode_rgb(&bytes, &path.display().to_string(), max_pixels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compositing_on_white_follows_pillow() {
        assert_eq!(over_white([10, 20, 30, 255]), [10, 20, 30]);
        assert_eq!(over_white([10, 20, 30, 0]), [255, 255, 255]);
        // Half transparent black over white is mid gray.
        assert_eq!(over_white([0, 0, 0, 128]), [127, 127, 127]);
    }

    fn png_bytes(width: u32, height: u32, rgba: bool) -> Vec<u8> {
        let mut bytes = Vec::new();
        let cursor = std::io::Cursor::new(&mut bytes);
        if rgba {
            let img = ::image::RgbaImage::from_fn(width, height, |x, y| {
                ::image::Rgba([x as u8, y as u8, 7, (x * 40) as u8])
            });
            img.write_to(
                &mut std::io::BufWriter::new(cursor),
                ::image::ImageFormat::Png,
            )
            .expect("encode");
        } else {
            let img =
                ::image::GrayImage::from_fn(width, height, |x, y| ::image::Luma([(x + y) as u8]));
            img.write_to(
                &mut std::io::BufWriter::new(cursor),
                ::image::ImageFormat::Png,
            )
            .expect("encode");
        }
        bytes
    }

    #[test]
    fn grayscale_is_expanded_and_alpha_composited() {
        let gray = decode_rgb(&png_bytes(3, 2, false), "g.png", 1 << 20).expect("decodes");
        assert_eq!((gray.width, gray.height), (3, 2));
        assert_eq!(&gray.data[3..6], &[1, 1, 1]);
        let rgba = decode_rgb(&png_bytes(3, 2, true), "a.png", 1 << 20).expect("decodes");
        assert_eq!(&rgba.data[..3], &[255, 255, 255]); // alpha 0 at x = 0
        assert_eq!(&rgba.data[3..6], &over_white([1, 0, 7, 40]));
    }

    #[test]
    fn corrupt_or_oversized_images_are_named_errors() {
        let err = decode_rgb(b"\x89PNG\r\n\x1a\nnot an image", "broken.png", 1 << 20).unwrap_err();
        assert!(
            matches!(err, MediaError::Decode { .. }) && err.to_string().contains("broken.png"),
            "{err}"
        );
        let mut truncated = png_bytes(20, 20, false);
        truncated.truncate(truncated.len() / 2);
        let err = decode_rgb(&truncated, "cut.png", 1 << 20).unwrap_err();
        assert!(err.to_string().contains("cut.png"), "{err}");
        let err = decode_rgb(&png_bytes(20, 20, false), "big.png", 100).unwrap_err();
        assert!(
            matches!(
                err,
                MediaError::TooLarge {
                    pixels: 400,
                    limit: 100,
                    ..
                }
            ),
            "{err}"
        );
        let err = load_rgb(Path::new("/nonexistent/x.png"), 100).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/x.png"), "{err}");
    }
}
