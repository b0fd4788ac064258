//! Bounds on what media may cost, checked before anything is allocated: the pixel bounds of
//! a resized image or video frame, and the visual tokens a patch grid makes.

use super::decode::{DEFAULT_DECODE_LIMIT, MediaError};

/// Most pixels a `min_pixels` may ask a resized image (or video frame) to have: the default
/// decode limit, so an upscale never allocates more than a decode would be allowed to.
pub const MAX_RESIZED_PIXELS: usize = DEFAULT_DECODE_LIMIT;

/// Checks the bounds on a resized image's (or video frame's) area before anything is
/// allocated: `min_pixels` at most [`MAX_RESIZED_PIXELS`], `max_pixels` at least 1, and
/// `min_pixels` at most `max_pixels` when both are given. The error
/// ([`MediaError::BadOption`]) names the field.
pub fn check_pixel_bounds(
    min_pixels: Option<usize>,
    max_pixels: Option<usize>,
    source_name: &str,
) -> Result<(), MediaError> {
    let bad = |field, message| MediaError::BadOption {
        source_name: source_name.to_string(),
        field,
        message,
    };
    if let Some(min) = min_pixels
        && min > MAX_RESIZED_PIXELS
    {
        return Err(bad(
            "min_pixels",
            format!("is {min}, more than the {MAX_RESIZED_PIXELS} pixels a resized image may have"),
        ));
    }
    match (min_pixels, max_pixels) {
        (_, Some(0)) => Err(bad("max_pixels", "must be at least 1".into())),
        (Some(min), Some(max)) if min > max => Err(bad(
            "min_pixels",
            format!("is {min}, more than `max_pixels` ({max})"),
        )),
        _ => Ok(()),
    }
}

/// Merged visual tokens of a patch grid: `t·h·w / merge_size²` (what the processor repeats
/// the image or video pad for).
pub fn visual_tokens(grid_thw: [usize; 3], merge_size: usize) -> usize {
    grid_thw.iter().product::<usize>() / (merge_size * merge_size).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS, ImageProcessorConfig, RgbImage};

    #[test]
    fn absurd_pixel_bounds_are_named_errors_instead_of_huge_allocations() {
        let image = RgbImage {
            width: 4,
            height: 4,
            data: vec![0; 48],
        };
        for (min_pixels, max_pixels, field) in [
            (1_000_000_000_000, usize::MAX, "min_pixels"),
            (1_000_000_000_000, DEFAULT_MAX_PIXELS, "min_pixels"),
            (DEFAULT_MIN_PIXELS, 0, "max_pixels"),
            (5000, 4000, "min_pixels"),
        ] {
            let config = ImageProcessorConfig {
                min_pixels,
                max_pixels,
                ..Default::default()
            };
            let err = config.resize(&image, "x.png").unwrap_err();
            assert!(
                matches!(&err, MediaError::BadOption { field: f, .. } if *f == field)
                    && err.to_string().contains("x.png"),
                "{field}: {err}"
            );
            assert!(config.image_grid(4, 4, "x.png").is_err());
        }
        // The declared size gives the grid (and token count) the pixels will have.
        let config = ImageProcessorConfig::default();
        assert_eq!(
            config.image_grid(9000, 9000, "big.gif").expect("grid"),
            [1, 70, 70]
        );
        assert_eq!(visual_tokens([1, 70, 70], 2), 1225);
        let resized = config.resize(&image, "x.png").expect("resizes");
        let grid = config.patchify(&[&resized]).grid_thw;
        assert_eq!(config.image_grid(4, 4, "x.png").expect("grid"), grid);
    }
}
