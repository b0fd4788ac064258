//! The image processor: smart resize, Pillow-exact bicubic, rescale + normalize, patchify.

use std::path::Path;

use super::bounds::check_pixel_bounds;
use super::decode::{MediaError, RgbImage};
use super::resample::resize_bicubic;
use crate::round_half_even;

/// CLIP's per-channel mean, which Qwen2-VL normalizes with (`OPENAI_CLIP_MEAN`).
#[allow(clippy::excessive_precision)] // the reference's digits, rounded to f32 as it does
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// CLIP's per-channel standard deviation (`OPENAI_CLIP_STD`).
#[allow(clippy::excessive_precision)] // the reference's digits, rounded to f32 as it does
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];
/// The reference's default lower bound on resized pixels (`56 * 56`).
pub const DEFAULT_MIN_PIXELS: usize = 56 * 56;
/// The reference's default upper bound on resized pixels (`28 * 28 * 1280`).
pub const DEFAULT_MAX_PIXELS: usize = 28 * 28 * 1280;
/// Longest side over shortest side beyond which the reference refuses an image.
pub const MAX_ASPECT_RATIO: f64 = 200.0;
/// Qwen2-VL's `smart_resize`: the size nearest to `height × width` whose sides are multiples
/// of `factor` and whose area lies in `[min_pixels, max_pixels]`, keeping the aspect ratio.
/// Returns `(height, width)`, or `None` for an empty image or one past the aspect limit.
pub fn smart_resize(
    height: usize,
    width: usize,
    factor: usize,
    min_pixels: usize,
    max_pixels: usize,
) -> Option<(usize, usize)> {
    // No lower clamp on the rounded sides (transformers 5): a side that rounds to 0 sends the
    // image down the min_pixels branch.
    smart_resize_with(
        [height, width],
        factor,
        min_pixels as f64,
        max_pixels as f64,
        false,
    )
}

/// `qwen_vl_utils.smart_resize`, which video frames go through: like [`smart_resize`] but a
/// rounded side is at least `factor`, and the upper bound may be fractional (it comes from
/// the per-video pixel budget).
pub fn smart_resize_video(
    height: usize,
    width: usize,
    factor: usize,
    min_pixels: usize,
    max_pixels: f64,
) -> Option<(usize, usize)> {
    smart_resize_with([height, width], factor, min_pixels as f64, max_pixels, true)
}

fn smart_resize_with(
    [height, width]: [usize; 2],
    factor: usize,
    min_pixels: f64,
    max_pixels: f64,
    clamp_rounded: bool,
) -> Option<(usize, usize)> {
    if height == 0 || width == 0 {
        return None;
    }
    let (h, w, f) = (height as f64, width as f64, factor as f64);
    if h.max(w) / h.min(w) > MAX_ASPECT_RATIO {
        return None;
    }
    let floor = if clamp_rounded { factor } else { 0 };
    let mut h_bar = floor.max((round_half_even(h / f) * f) as usize);
    let mut w_bar = floor.max((round_half_even(w / f) * f) as usize);
    if (h_bar * w_bar) as f64 > max_pixels {
        let beta = (h * w / max_pixels).sqrt();
        h_bar = factor.max(((h / beta / f).floor() * f) as usize);
        w_bar = factor.max(((w / beta / f).floor() * f) as usize);
    } else if ((h_bar * w_bar) as f64) < min_pixels {
        let beta = (min_pixels / (h * w)).sqrt();
        h_bar = ((h * beta / f).ceil() * f) as usize;
        w_bar = ((w * beta / f).ceil() * f) as usize;
    }
    Some((h_bar, w_bar))
}

/// The image processor's settings (a checkpoint's `preprocessor_config.json` overrides them).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProcessorConfig {
    pub min_pixels: usize,
    pub max_pixels: usize,
    pub patch_size: usize,
    pub merge_size: usize,
    pub temporal_patch_size: usize,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
}

impl Default for ImageProcessorConfig {
    fn default() -> Self {
        Self {
            min_pixels: DEFAULT_MIN_PIXELS,
            max_pixels: DEFAULT_MAX_PIXELS,
            patch_size: 14,
            merge_size: 2,
            temporal_patch_size: 2,
            image_mean: CLIP_MEAN,
            image_std: CLIP_STD,
        }
    }
}

/// Pixel values and the patch grid of one image (or video).
#[derive(Debug, Clone, PartialEq)]
pub struct Patches {
    /// `[t·h·w, C·T·P·P]`, row-major.
    pub pixel_values: Vec<f32>,
    /// `(t, h, w)` in patches.
    pub grid_thw: [usize; 3],
}

impl ImageProcessorConfig {
    /// Reads a checkpoint's `preprocessor_config.json`: `min_pixels` / `max_pixels` (older
    /// files) or `size.shortest_edge` / `size.longest_edge` (transformers 5), patch, merge and
    /// temporal patch sizes, mean and std. Absent fields keep the reference defaults.
    pub fn from_preprocessor_json(path: &Path) -> Result<Self, MediaError> {
        let text = std::fs::read_to_string(path).map_err(|source| MediaError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| MediaError::Config {
                path: path.to_path_buf(),
                message: format!("invalid JSON: {e}"),
            })?;
        Self::from_json(&json, path)
    }

    /// Reads the settings from a parsed processor config object (a `preprocessor_config.json`,
    /// or the `image_processor` / `video_processor` object of a `processor_config.json`);
    /// `path` names the file in errors.
    pub fn from_json(json: &serde_json::Value, path: &Path) -> Result<Self, MediaError> {
        let error = |message: String| MediaError::Config {
            path: path.to_path_buf(),
            message,
        };
        if !json.is_object() {
            return Err(error(format!("expected a JSON object, got {json}")));
        }
        let uint = |value: Option<&serde_json::Value>, field: &str, default: usize| match value {
            None | Some(serde_json::Value::Null) => Ok(default),
            Some(v) => v.as_u64().map(|v| v as usize).ok_or_else(|| {
                error(format!(
                    "field `{field}`: expected a non-negative integer, got {v}"
                ))
            }),
        };
        let triple = |field: &str, default: [f32; 3]| match json.get(field) {
            None | Some(serde_json::Value::Null) => Ok(default),
            Some(v) => v
                .as_array()
                .filter(|a| a.len() == 3)
                .and_then(|a| {
                    let f: Option<Vec<f32>> =
                        a.iter().map(|x| x.as_f64().map(|x| x as f32)).collect();
                    f.map(|f| [f[0], f[1], f[2]])
                })
                .ok_or_else(|| error(format!("field `{field}`: expected 3 numbers, got {v}"))),
        };
        let defaults = Self::default();
        // `min_pixels` / `max_pixels` (older files) win over `size.shortest_edge` /
        // `size.longest_edge` (transformers 5).
        let bound = |flat: &str, nested: &str, default: usize| match json.get(flat) {
            Some(v) if !v.is_null() => uint(Some(v), flat, default),
            _ => uint(
                json.get("size").and_then(|s| s.get(nested)),
                &format!("size.{nested}"),
                default,
            ),
        };
        let min_pixels = bound("min_pixels", "shortest_edge", defaults.min_pixels)?;
        let max_pixels = bound("max_pixels", "longest_edge", defaults.max_pixels)?;
        let config = Self {
            min_pixels,
            max_pixels,
            patch_size: uint(json.get("patch_size"), "patch_size", defaults.patch_size)?,
            merge_size: uint(json.get("merge_size"), "merge_size", defaults.merge_size)?,
            temporal_patch_size: uint(
                json.get("temporal_patch_size"),
                "temporal_patch_size",
                defaults.temporal_patch_size,
            )?,
            image_mean: triple("image_mean", defaults.image_mean)?,
            image_std: triple("image_std", defaults.image_std)?,
        };
        if config.patch_size == 0 || config.merge_size == 0 || config.temporal_patch_size == 0 {
            return Err(error(
                "patch_size, merge_size and temporal_patch_size must be positive".into(),
            ));
        }
        config.check_bounds(&path.display().to_string())?;
        Ok(config)
    }

    /// The side length resized images are multiples of (`patch_size × merge_size`).
    pub fn factor(&self) -> usize {
        self.patch_size * self.merge_size
    }

    /// Checks `min_pixels` and `max_pixels` (see [`check_pixel_bounds`]).
    pub fn check_bounds(&self, source_name: &str) -> Result<(), MediaError> {
        check_pixel_bounds(Some(self.min_pixels), Some(self.max_pixels), source_name)
    }

    /// The `(height, width)` an image of `width × height` pixels is resized to, after
    /// checking the bounds: known from a header alone, before any pixel is decoded.
    pub fn resized_size(
        &self,
        width: usize,
        height: usize,
        source_name: &str,
    ) -> Result<(usize, usize), MediaError> {
        self.check_bounds(source_name)?;
        smart_resize(
            height,
            width,
            self.factor(),
            self.min_pixels,
            self.max_pixels,
        )
        .ok_or_else(|| MediaError::BadSize {
            source_name: source_name.to_string(),
            width,
            height,
        })
    }

    /// The patch grid of an image of `width × height` pixels (one frame, repeated to fill
    /// the temporal patch), from its declared size.
    pub fn image_grid(
        &self,
        width: usize,
        height: usize,
        source_name: &str,
    ) -> Result<[usize; 3], MediaError> {
        let (h, w) = self.resized_size(width, height, source_name)?;
        Ok([1, h / self.patch_size, w / self.patch_size])
    }

    /// Resizes an image as the reference does, returning the resized RGB image.
    pub fn resize(&self, image: &RgbImage, source_name: &str) -> Result<RgbImage, MediaError> {
        let (height, width) = self.resized_size(image.width, image.height, source_name)?;
        let data = resize_bicubic(&image.data, [image.width, image.height], [width, height], 3);
        Ok(RgbImage {
            width,
            height,
            data,
        })
    }

    /// Rescaled to [0, 1] and normalized per channel, channel-first `[3, H, W]`: rescale in
    /// f64 then normalize in f32, as the reference's rescale (float64) and normalize
    /// (float32) do.
    fn normalize(&self, frame: &RgbImage) -> Vec<f32> {
        let plane = frame.height * frame.width;
        let mut planes = vec![0f32; 3 * plane];
        for (i, px) in frame.data.chunks_exact(3).enumerate() {
            for c in 0..3 {
                let v = (f64::from(px[c]) * (1.0 / 255.0)) as f32;
                planes[c * plane + i] = (v - self.image_mean[c]) / self.image_std[c];
            }
        }
        planes
    }

    /// Rescales to [0, 1], normalizes per channel and cuts into patches; `frames` share one
    /// size (an image is one frame, repeated to fill the temporal patch).
    pub fn patchify(&self, frames: &[&RgbImage]) -> Patches {
        let (p, m, tp) = (self.patch_size, self.merge_size, self.temporal_patch_size);
        let (height, width) = (frames[0].height, frames[0].width);
        // Pad the frame count to a whole temporal patch by repeating the last frame.
        let mut frames: Vec<&RgbImage> = frames.to_vec();
        while !frames.len().is_multiple_of(tp) {
            frames.push(frames[frames.len() - 1]);
        }
        let (gt, gh, gw) = (frames.len() / tp, height / p, width / p);
        let row_len = 3 * tp * p * p;
        let mut out = Vec::with_capacity(gt * gh * gw * row_len);
        // Row order (t, window row, window col, row in window, col in window); feature order
        // (channel, frame in tubelet, y, x) — the reference's reshape + transpose.
        for tubelet in frames.chunks_exact(tp) {
            // One tubelet at a time: a long video never holds all its frames as floats.
            let normalized: Vec<Vec<f32>> = tubelet.iter().map(|f| self.normalize(f)).collect();
            for wr in 0..gh / m {
                for wc in 0..gw / m {
                    for mi in 0..m {
                        for mj in 0..m {
                            let (py0, px0) = ((wr * m + mi) * p, (wc * m + mj) * p);
                            for c in 0..3 {
                                for frame in &normalized {
                                    let plane = &frame[c * height * width..];
                                    for y in 0..p {
                                        let row = &plane[(py0 + y) * width + px0..];
                                        out.extend_from_slice(&row[..p]);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        Patches {
            pixel_values: out,
            grid_thw: [gt, gh, gw],
        }
    }

    /// Resize, rescale, normalize and patchify one image.
    pub fn preprocess(&self, image: &RgbImage, source_name: &str) -> Result<Patches, MediaError> {
        let resized = self.resize(image, source_name)?;
        Ok(self.patchify(&[&resized]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smart_resize_matches_the_reference_formula() {
        // Python: round(280/28)=10 -> 280; within bounds, unchanged.
        assert_eq!(
            smart_resize(280, 140, 28, 3136, 1_003_520),
            Some((280, 140))
        );
        // Under the minimum: scaled up, ceiled to multiples of 28.
        assert_eq!(smart_resize(30, 40, 28, 56 * 56, 1_003_520), Some((56, 84)));
        // Half-way values round to even like Python: 42/28 = 1.5 -> 2, 70/28 = 2.5 -> 2.
        assert_eq!(smart_resize(42, 70, 28, 0, usize::MAX), Some((56, 56)));
        // Over the budget: scaled down, floored to multiples of 28.
        assert_eq!(
            smart_resize(200, 300, 28, 3136, 28 * 28 * 16),
            Some((84, 112))
        );
        assert_eq!(smart_resize(1, 300, 28, 3136, 1_003_520), None);
        // A side under half the factor: transformers 5 lets it round to 0 (and then scales
        // up through min_pixels); qwen_vl_utils clamps it to the factor first.
        // (Values from both Python functions.)
        assert_eq!(smart_resize(10, 600, 28, 3136, 1_003_520), Some((28, 448)));
        assert_eq!(
            smart_resize_video(10, 600, 28, 3136, 1_003_520.0),
            Some((28, 588))
        );
    }

    #[test]
    fn preprocessor_config_is_read_in_both_layouts() {
        let dir = std::env::temp_dir().join(format!("nuri-preproc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("preprocessor_config.json");
        std::fs::write(
            &path,
            r#"{"size": {"shortest_edge": 1000, "longest_edge": 5000}, "patch_size": 14}"#,
        )
        .expect("write");
        let config = ImageProcessorConfig::from_preprocessor_json(&path).expect("valid");
        assert_eq!((config.min_pixels, config.max_pixels), (1000, 5000));
        assert_eq!(config.image_mean, CLIP_MEAN);
        std::fs::write(
            &path,
            r#"{"min_pixels": 10, "max_pixels": 20, "image_std": [1, 1, 1]}"#,
        )
        .expect("write");
        let config = ImageProcessorConfig::from_preprocessor_json(&path).expect("valid");
        assert_eq!(
            (config.min_pixels, config.max_pixels, config.image_std),
            (10, 20, [1.0; 3])
        );
        std::fs::write(&path, r#"{"image_mean": [0.5, 0.5]}"#).expect("write");
        let err = ImageProcessorConfig::from_preprocessor_json(&path).unwrap_err();
        assert!(
            err.to_string().contains("image_mean")
                && err.to_string().contains("preprocessor_config.json"),
            "{err}"
        );
        std::fs::write(&path, "{").expect("write");
        assert!(matches!(
            ImageProcessorConfig::from_preprocessor_json(&path),
            Err(MediaError::Config { .. })
        ));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn patchify_puts_each_tubelet_in_one_row() {
        let config = ImageProcessorConfig {
            image_mean: [0.0; 3],
            image_std: [1.0; 3],
            ..Default::default()
        };
        // 28x56 image: 2x4 patches of 14, one temporal patch (frame repeated).
        let data: Vec<u8> = (0..28 * 56)
            .flat_map(|i| [(i % 251) as u8, 0, 255])
            .collect();
        let image = RgbImage {
            width: 56,
            height: 28,
            data,
        };
        let patches = config.patchify(&[&image]);
        assert_eq!(patches.grid_thw, [1, 2, 4]);
        assert_eq!(patches.pixel_values.len(), 8 * 1176);
        // Row 1 is window (0,0), in-window (0,1): the patch at pixel row 0, column 14.
        let row = &patches.pixel_values[1176..2 * 1176];
        assert_eq!(row[0], 14.0 / 255.0);
        // The repeated frame: frame 1 of the tubelet equals frame 0, channel 2 is all 1.0.
        assert_eq!(row[..196], row[196..392]);
        assert!(row[2 * 392..].iter().all(|&v| v == 1.0));
    }
}
