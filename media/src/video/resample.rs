//! Bicubic resampling as `torchvision.transforms.functional.resize(video, size,
//! InterpolationMode.BICUBIC, antialias=True)` does it on a `uint8` video, which is how
//! `qwen_vl_utils.fetch_video` resizes frames: the frames are cast to `float32`, resized by
//! ATen's separable antialiased kernel (`UpSampleKernel.cpp`, `_compute_weights_aa` with
//! Pillow's a = −0.5 cubic), width first and then height with a `float32` intermediate,
//! clamped to [0, 255] and rounded half to even back to `uint8`.
//!
//! It differs from Pillow's 8-bit resampler (`image/resample.rs`, used for images) in
//! keeping the intermediate in floating point and in its fixed pass order.

use crate::image::RgbImage;

/// Support of the cubic filter before scaling (`interp_size / 2`).
const CUBIC_SUPPORT: f32 = 2.0;
/// The cubic's free parameter, chosen by ATen to match Pillow.
const CUBIC_A: f64 = -0.5;

fn cubic(x: f32) -> f32 {
    let x = f64::from(x.abs());
    let w = if x < 1.0 {
        ((CUBIC_A + 2.0) * x - (CUBIC_A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * CUBIC_A
    } else {
        0.0
    };
    w as f32
}

/// For each output index: the first input index and the normalized weights, computed in
/// `float32` with ATen's casts.
fn weights(in_size: usize, out_size: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = in_size as f32 / out_size as f32;
    let (support, invscale) = if scale >= 1.0 {
        (CUBIC_SUPPORT * scale, (1.0 / f64::from(scale)) as f32)
    } else {
        (CUBIC_SUPPORT, 1.0)
    };
    (0..out_size)
        .map(|i| {
            let center = (f64::from(scale) * (i as f64 + 0.5)) as f32;
            let xmin = ((f64::from(center - support) + 0.5) as i64).max(0) as usize;
            let xmax = ((f64::from(center + support) + 0.5) as i64).min(in_size as i64) as usize;
            let mut w: Vec<f32> = (xmin..xmax.max(xmin))
                .map(|j| cubic(((f64::from(j as f32 - center) + 0.5) * f64::from(invscale)) as f32))
                .collect();
            let total: f32 = w.iter().sum();
            if total != 0.0 {
                w.iter_mut().for_each(|v| *v /= total);
            }
            (xmin, w)
        })
        .collect()
}

/// Resamples `[outer, n, inner]` along the middle axis to `[outer, new_n, inner]`.
fn pass(src: &[f32], outer: usize, n: usize, inner: usize, new_n: usize) -> Vec<f32> {
    let w = weights(n, new_n);
    let mut out = vec![0f32; outer * new_n * inner];
    for o in 0..outer {
        let block = &src[o * n * inner..(o + 1) * n * inner];
        for (k, (xmin, wk)) in w.iter().enumerate() {
            let dst = &mut out[(o * new_n + k) * inner..(o * new_n + k + 1) * inner];
            for (i, d) in dst.iter_mut().enumerate() {
                let mut acc = 0f32;
                for (j, &wj) in wk.iter().enumerate() {
                    acc += block[(xmin + j) * inner + i] * wj;
                }
                *d = acc;
            }
        }
    }
    out
}

/// Resizes an RGB frame to `new_width × new_height` as torchvision does for a `uint8` video
/// with bicubic antialiasing. A pass whose size does not change is skipped, as in ATen.
pub fn resize_bicubic_antialias(image: &RgbImage, new_width: usize, new_height: usize) -> RgbImage {
    let (width, height) = (image.width, image.height);
    let mut plane: Vec<f32> = image.data.iter().map(|&v| f32::from(v)).collect();
    if new_width != width {
        // [h, w, 3] along w.
        plane = pass(&plane, height, width, 3, new_width);
    }
    if new_height != height {
        // [1, h, new_w·3] along h.
        plane = pass(&plane, 1, height, new_width * 3, new_height);
    }
    let data = plane
        .iter()
        .map(|&v| round_half_even_f32(v.clamp(0.0, 255.0)) as u8)
        .collect();
    RgbImage {
        width: new_width,
        height: new_height,
        data,
    }
}

/// `torch.round` on `float32`: half to even.
fn round_half_even_f32(v: f32) -> f32 {
    let r = v.round();
    if (v - v.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - v.signum()
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(width: usize, height: usize, f: impl Fn(usize) -> u8) -> RgbImage {
        RgbImage {
            width,
            height,
            data: (0..width * height * 3).map(f).collect(),
        }
    }

    #[test]
    fn same_size_is_the_identity() {
        let image = frame(7, 5, |i| (i * 37 % 256) as u8);
        assert_eq!(resize_bicubic_antialias(&image, 7, 5), image);
    }

    #[test]
    fn a_flat_frame_stays_flat_and_weights_sum_to_one() {
        let image = frame(9, 7, |_| 200);
        for (w, h) in [(3, 2), (20, 31), (9, 1)] {
            let out = resize_bicubic_antialias(&image, w, h);
            assert!(out.data.iter().all(|&v| v == 200), "{w}x{h}");
        }
        for (n, m) in [(90, 84), (60, 56), (10, 56), (800, 28)] {
            for (_, w) in weights(n, m) {
                let sum: f32 = w.iter().sum();
                assert!((sum - 1.0).abs() < 1e-5, "{n}->{m}: {sum}");
            }
        }
    }

    #[test]
    fn rounding_is_half_to_even() {
        assert_eq!(round_half_even_f32(2.5), 2.0);
        assert_eq!(round_half_even_f32(3.5), 4.0);
        assert_eq!(round_half_even_f32(254.6), 255.0);
    }
}
