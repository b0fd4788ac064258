//! The image pipeline against the reference processor (transformers'
//! `Qwen2VLImageProcessorPil`, Pillow 13) on the committed images of `fixtures/images/`
//! (`tools/reference/make_image_fixtures.py`): decoding to RGB, smart resize, bicubic
//! resampling, rescale + normalize + patchify.

use std::path::{Path, PathBuf};

use nuri_media::image::{ImageProcessorConfig, RgbImage, load_rgb, smart_resize};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

/// How far our JPEG decoder (zune-jpeg) may stray from Pillow's (libjpeg-turbo), in 8-bit
/// levels: both are valid IDCTs; measured on `photo.jpg`.
const MAX_JPEG_LEVELS: u8 = 4;

/// Decoding limit for the test images (far above their size).
const MAX_DECODE_PIXELS: usize = 1 << 24;

fn images_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/images")
}

struct Reference {
    json: Value,
    bytes: Vec<u8>,
}

impl Reference {
    fn load() -> Self {
        let dir = images_dir();
        let json = std::fs::read_to_string(dir.join("reference.json")).expect("reference.json");
        Self {
            json: serde_json::from_str(&json).expect("valid JSON"),
            bytes: std::fs::read(dir.join("reference.safetensors")).expect("reference.safetensors"),
        }
    }

    fn tensors(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("valid safetensors")
    }

    fn bytes_of(&self, name: &str, dtype: Dtype) -> Option<(Vec<u8>, Vec<usize>)> {
        let tensors = self.tensors();
        let view = tensors.tensor(name).ok()?;
        assert_eq!(view.dtype(), dtype, "{name}");
        Some((view.data().to_vec(), view.shape().to_vec()))
    }

    /// An `[H, W, 3]` uint8 tensor as an image.
    fn image(&self, name: &str) -> RgbImage {
        let (data, shape) = self
            .bytes_of(name, Dtype::U8)
            .unwrap_or_else(|| panic!("{name} missing"));
        RgbImage {
            width: shape[1],
            height: shape[0],
            data,
        }
    }

    fn floats(&self, name: &str) -> Option<Vec<f32>> {
        let (data, _) = self.bytes_of(name, Dtype::F32)?;
        Some(
            data.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        )
    }

    fn grid(&self, name: &str) -> [usize; 3] {
        let (data, _) = self
            .bytes_of(name, Dtype::I64)
            .unwrap_or_else(|| panic!("{name} missing"));
        let v: Vec<usize> = data
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8")) as usize)
            .collect();
        [v[0], v[1], v[2]]
    }
}

fn max_level_diff(a: &[u8], b: &[u8]) -> u8 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0)
}

/// Entries whose input was a path string: the reference then drops alpha instead of
/// compositing it, a quirk of its file loader that we do not copy (we composite on white,
/// as it does for decoded images).
fn is_path_quirk(entry: &Value) -> bool {
    entry["input"] == "path"
}

#[test]
fn smart_resize_matches_the_reference_table() {
    let reference = Reference::load();
    let table = reference.json["smart_resize_table"]
        .as_array()
        .expect("table");
    assert!(table.len() > 50);
    for row in table {
        let get = |k: &str| row[k].as_u64().expect("int") as usize;
        let got = smart_resize(get("h"), get("w"), 28, get("min_pixels"), get("max_pixels"));
        assert_eq!(got, Some((get("out_h"), get("out_w"))), "{row}");
    }
}

#[test]
fn decoding_resizing_and_patchify_match_the_reference() {
    let reference = Reference::load();
    let entries = reference.json["entries"].as_object().expect("entries");
    let mut report = Vec::new();
    for (name, entry) in entries {
        if is_path_quirk(entry) {
            continue;
        }
        let file = images_dir().join(entry["file"].as_str().expect("file"));
        let ours = load_rgb(&file, MAX_DECODE_PIXELS).expect("decodes");
        let is_jpeg = file.extension().is_some_and(|e| e == "jpg");
        // 1. Decoding. JPEG decoders may differ in their IDCT; every other format is exact.
        // Plain RGB PNGs have no stored conversion (it is the identity): their decode is
        // checked through the resize and pixel values below.
        let (want_rgb, decode_diff) = match entry["rgb_tensor"].as_str() {
            Some(rgb_name) => {
                let want = reference.image(rgb_name);
                assert_eq!(
                    (ours.width, ours.height),
                    (want.width, want.height),
                    "{name}: size"
                );
                let diff = max_level_diff(&ours.data, &want.data);
                if is_jpeg {
                    assert!(
                        diff <= MAX_JPEG_LEVELS,
                        "{name}: JPEG decode differs by {diff} levels"
                    );
                } else {
                    assert_eq!(diff, 0, "{name}: decoded RGB differs by {diff} levels");
                }
                (want, diff)
            }
            None => (ours.clone(), 0),
        };

        // 2. Resizing the reference's own RGB image: exact.
        let config = ImageProcessorConfig {
            min_pixels: entry["min_pixels"].as_u64().expect("min") as usize,
            max_pixels: entry["max_pixels"].as_u64().expect("max") as usize,
            ..Default::default()
        };
        let want_resized = reference.image(&format!("{name}.resized"));
        let resized = config.resize(&want_rgb, name).expect("resizes");
        assert_eq!(
            (resized.width, resized.height),
            (want_resized.width, want_resized.height),
            "{name}: resized size"
        );
        let resize_diff = max_level_diff(&resized.data, &want_resized.data);
        assert_eq!(
            resize_diff, 0,
            "{name}: bicubic differs from Pillow by {resize_diff} levels"
        );

        // 3. The whole pipeline from the file.
        let patches = config.preprocess(&ours, name).expect("preprocesses");
        assert_eq!(
            patches.grid_thw,
            reference.grid(&format!("{name}.grid_thw")),
            "{name}: grid"
        );
        let from_reference_resize = config.patchify(&[&want_resized]);
        let pixel_diff = match reference.floats(&format!("{name}.pixel_values")) {
            Some(want) => {
                let exact = from_reference_resize
                    .pixel_values
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                assert!(exact < 1e-5, "{name}: normalize/patchify differ by {exact}");
                patches
                    .pixel_values
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max)
            }
            None => {
                // Not stored (size budget): compare against the reference's checksum.
                let sum: f64 = from_reference_resize
                    .pixel_values
                    .iter()
                    .map(|&v| f64::from(v))
                    .sum();
                let want = entry["pixel_values_sum"].as_f64().expect("sum");
                assert!(
                    (sum - want).abs() < 1e-3 * want.abs().max(1.0),
                    "{name}: sum {sum} vs {want}"
                );
                patches
                    .pixel_values
                    .iter()
                    .zip(&from_reference_resize.pixel_values)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max)
            }
        };
        if !is_jpeg {
            assert!(
                pixel_diff < 1e-5,
                "{name}: pixel values differ by {pixel_diff}"
            );
        }
        report.push(format!("{name:<24} decode {decode_diff:>2} levels, resize {resize_diff} levels, pixel values {pixel_diff:.2e}"));
    }
    assert!(report.len() >= 12, "{report:?}");
    println!("{}", report.join("\n"));
}
