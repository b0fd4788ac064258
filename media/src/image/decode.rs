//! Decoding image files to 8-bit RGB the way the reference's `convert_to_rgb` leaves them:
//! alpha composited on white, grayscale expanded, an animation's first frame.

use std::path::Path;

pub use crate::error::MediaError;
use crate::file::read_regular_file;

/// Largest decoded image accepted by default, in pixels: Pillow's decompression-bomb limit
/// (`Image.MAX_IMAGE_PIXELS`).
pub const DEFAULT_DECODE_LIMIT: usize = 89_478_485;

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

/// The size `(width, height)` an encoded image declares in its header (for a GIF, its
/// canvas), read without decoding any pixel.
pub fn image_size(bytes: &[u8], source_name: &str) -> Result<(usize, usize), MediaError> {
    let (width, height) = ::image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| decode_error(source_name, e))?
        .into_dimensions()
        .map_err(|e| decode_error(source_name, e))?;
    Ok((width as usize, height as usize))
}

/// Refuses a declared size of more than `limit` pixels ([`MediaError::TooLarge`]).
pub fn check_decode_size(
    width: usize,
    height: usize,
    limit: usize,
    source_name: &str,
) -> Result<(), MediaError> {
    let pixels = width.saturating_mul(height);
    if pixels > limit {
        return Err(MediaError::TooLarge {
            source_name: source_name.to_string(),
            pixels,
            limit,
        });
    }
    Ok(())
}

fn decode_error(source_name: &str, e: impl std::fmt::Display) -> MediaError {
    MediaError::Decode {
        source_name: source_name.to_string(),
        message: e.to_string(),
    }
}

/// Decodes an encoded image (format guessed from its bytes) to RGB: alpha is composited on
/// white, grayscale is expanded, an animation gives its first frame. `source_name` names the
/// image in errors. The header is read first, so an image declaring more than `max_pixels`
/// pixels is refused before it is allocated.
pub fn decode_rgb(
    bytes: &[u8],
    source_name: &str,
    max_pixels: usize,
) -> Result<RgbImage, MediaError> {
    let (width, height) = image_size(bytes, source_name)?;
    check_decode_size(width, height, max_pixels, source_name)?;
    let decoded = ::image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| decode_error(source_name, e))?
        .decode()
        .map_err(|e| decode_error(source_name, e))?;
    // `into_*` reuses the decoded buffer when it already has that layout.
    let data = if decoded.color().has_alpha() {
        decoded
            .into_rgba8()
            .pixels()
            .flat_map(|p| over_white(p.0))
            .collect()
    } else {
        decoded.into_rgb8().into_raw()
    };
    Ok(RgbImage {
        width,
        height,
        data,
    })
}

/// Reads and decodes an image file; see [`decode_rgb`]. Only a regular file is opened.
pub fn load_rgb(path: &Path, max_pixels: usize) -> Result<RgbImage, MediaError> {
    let bytes = read_regular_file(path)?;
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

    #[test]
    fn load_rgb_refuses_a_fifo_or_a_folder_instead_of_hanging() {
        let dir = std::env::temp_dir().join(format!("nuri-decode-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("folder.png")).expect("mkdir");
        let err = load_rgb(&dir.join("folder.png"), 1 << 20).unwrap_err();
        assert!(
            matches!(
                err,
                MediaError::NotAFile {
                    kind: "a directory",
                    ..
                }
            ),
            "{err}"
        );
        let fifo = dir.join("pipe.png");
        if crate::file::make_fifo(&fifo) {
            let err = load_rgb(&fifo, 1 << 20).unwrap_err();
            assert!(
                matches!(err, MediaError::NotAFile { kind: "a FIFO", .. })
                    && err.to_string().contains("pipe.png"),
                "{err}"
            );
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_gif_declaring_a_huge_canvas_is_measured_from_its_header() {
        // 43 bytes declaring a 9000×9000 canvas around one 1×1 frame.
        let gif = crate::video::animation::tiny_gif(9000, 9000, 1, 0);
        assert_eq!(image_size(&gif, "big.gif").expect("header"), (9000, 9000));
        let err = decode_rgb(&gif, "big.gif", 1 << 20).unwrap_err();
        assert!(
            matches!(
                err,
                MediaError::TooLarge {
                    pixels: 81_000_000,
                    ..
                }
            ),
            "{err}"
        );
    }
}
