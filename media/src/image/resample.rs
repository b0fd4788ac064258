//! Bicubic resampling exactly as Pillow does it for 8-bit images (`Resample.c`:
//! `precompute_coeffs`, `normalize_coeffs_8bpc`, `ImagingResampleHorizontal_8bpc` /
//! `Vertical_8bpc`): the Keys cubic with a = −0.5, its support widened by the scale when
//! shrinking (antialiasing), coefficients rounded to 22-bit fixed point, one pass per axis,
//! each rounded and clipped to `u8`. The reference image processor resizes through Pillow,
//! so matching it bit for bit makes the pixel values match.
//!
//! The order of the passes matters (the intermediate image is `u8`). Pillow 12 and earlier
//! always go horizontal first; Pillow 13 goes vertical first when the height shrinks by more
//! than twice what the width shrinks (`out_h < h && h − out_h > 2·(w − out_w)`, measured on
//! 1,475 size pairs by `tools/reference/make_image_fixtures.py`). We follow Pillow 13, the
//! version the reference fixtures were made with.

/// Fixed-point precision of Pillow's 8-bit resampling coefficients (`32 - 8 - 2`).
const PRECISION_BITS: u32 = 32 - 8 - 2;
/// Support of the bicubic filter before scaling.
const BICUBIC_SUPPORT: f64 = 2.0;
/// The Keys cubic's free parameter in Pillow.
const BICUBIC_A: f64 = -0.5;

fn bicubic(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        ((BICUBIC_A + 2.0) * x - (BICUBIC_A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * BICUBIC_A
    } else {
        0.0
    }
}

/// For each output index: the first input index and the fixed-point weights of the inputs
/// it reads.
struct Coefficients {
    bounds: Vec<(usize, usize)>,
    weights: Vec<Vec<i32>>,
}

fn coefficients(in_size: usize, out_size: usize) -> Coefficients {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = BICUBIC_SUPPORT * filter_scale;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = Vec::with_capacity(out_size);
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        // Pillow truncates toward zero (a C cast), then clamps.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let count = xmax.saturating_sub(xmin);
        let raw: Vec<f64> = (0..count)
            .map(|x| bicubic((x as f64 + xmin as f64 - center + 0.5) / filter_scale))
            .collect();
        let total: f64 = raw.iter().sum();
        let fixed = raw
            .iter()
            .map(|&w| {
                let w = if total != 0.0 { w / total } else { w };
                let scaled = w * f64::from(1u32 << PRECISION_BITS);
                if scaled < 0.0 {
                    (scaled - 0.5) as i32
                } else {
                    (scaled + 0.5) as i32
                }
            })
            .collect();
        bounds.push((xmin, count));
        weights.push(fixed);
    }
    Coefficients { bounds, weights }
}

fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One horizontal pass: `[height, width]` → `[height, new_width]`.
fn horizontal(
    pixels: &[u8],
    [width, height]: [usize; 2],
    new_width: usize,
    channels: usize,
) -> Vec<u8> {
    let c = coefficients(width, new_width);
    let mut out = vec![0u8; new_width * height * channels];
    for y in 0..height {
        let row = &pixels[y * width * channels..(y + 1) * width * channels];
        for (xx, (&(xmin, count), k)) in c.bounds.iter().zip(&c.weights).enumerate() {
            for ch in 0..channels {
                let mut acc = 1i64 << (PRECISION_BITS - 1);
                for (x, &w) in k.iter().enumerate().take(count) {
                    acc += i64::from(row[(xmin + x) * channels + ch]) * i64::from(w);
                }
                out[(y * new_width + xx) * channels + ch] = clip8(acc);
            }
        }
    }
    out
}

/// One vertical pass: `[height, width]` → `[new_height, width]`.
fn vertical(
    pixels: &[u8],
    [width, height]: [usize; 2],
    new_height: usize,
    channels: usize,
) -> Vec<u8> {
    let c = coefficients(height, new_height);
    let stride = width * channels;
    let mut out = vec![0u8; new_height * stride];
    for (yy, (&(ymin, count), k)) in c.bounds.iter().zip(&c.weights).enumerate() {
        for i in 0..stride {
            let mut acc = 1i64 << (PRECISION_BITS - 1);
            for (y, &w) in k.iter().enumerate().take(count) {
                acc += i64::from(pixels[(ymin + y) * stride + i]) * i64::from(w);
            }
            out[yy * stride + i] = clip8(acc);
        }
    }
    out
}

/// Resizes an interleaved `channels`-channel 8-bit image from `width × height` to
/// `new_width × new_height` with Pillow's bicubic filter. A pass whose size does not change
/// is skipped, as in Pillow.
pub fn resize_bicubic(
    pixels: &[u8],
    [width, height]: [usize; 2],
    [new_width, new_height]: [usize; 2],
    channels: usize,
) -> Vec<u8> {
    assert_eq!(pixels.len(), width * height * channels, "buffer size");
    let shrink_h = height as i64 - new_height as i64;
    let shrink_w = width as i64 - new_width as i64;
    let vertical_first = new_height < height && shrink_h > 2 * shrink_w;
    let do_h = |p: &[u8], h: usize| {
        if new_width == width {
            p.to_vec()
        } else {
            horizontal(p, [width, h], new_width, channels)
        }
    };
    let do_v = |p: &[u8], w: usize| {
        if new_height == height {
            p.to_vec()
        } else {
            vertical(p, [w, height], new_height, channels)
        }
    };
    if vertical_first {
        do_h(&do_v(pixels, width), new_height)
    } else {
        do_v(&do_h(pixels, height), new_width)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_the_identity() {
        let pixels: Vec<u8> = (0..5 * 4 * 3).map(|i| (i * 7 % 256) as u8).collect();
        assert_eq!(resize_bicubic(&pixels, [5, 4], [5, 4], 3), pixels);
    }

    #[test]
    fn a_flat_image_stays_flat_at_any_size() {
        let pixels = vec![77u8; 9 * 7];
        for size in [[3, 2], [20, 31], [9, 1]] {
            let out = resize_bicubic(&pixels, [9, 7], size, 1);
            assert!(out.iter().all(|&v| v == 77), "{size:?}: {out:?}");
        }
    }

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (n_in, n_out) in [(10, 56), (800, 28), (37, 28), (300, 112)] {
            let c = coefficients(n_in, n_out);
            for k in &c.weights {
                let sum: i64 = k.iter().map(|&w| i64::from(w)).sum();
                assert!(
                    (sum - (1 << PRECISION_BITS)).abs() <= k.len() as i64,
                    "{n_in}->{n_out}: {sum}"
                );
            }
        }
    }
}
