use super::*;
use crate::test_values as values;

fn reference(x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut y = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            y[i * n + j] = (0..k)
                .map(|l| f64::from(x[i * k + l]) * f64::from(w[j * k + l]))
                .sum::<f64>() as f32;
        }
    }
    y
}

#[test]
fn every_shape_equals_the_plain_sum() {
    // Tails in every direction: m not a multiple of 4 (and past the widening threshold),
    // n not a multiple of 4 or of the task size, k not a multiple of 16.
    for &(m, k, n) in &[
        (1, 16, 4),
        (1, 37, 5),
        (3, 64, 33),
        (4, 100, 16),
        (9, 48, 21),
        (17, 33, 70),
        (2, 1, 3),
        // Prefill sizes (the f32 outer-product tiles on AVX-512): whole and partial blocks
        // of 64 activation rows, inputs past one block of 512, tasks of 96 weight rows.
        (64, 40, 97),
        (65, 600, 13),
        (130, 1100, 7),
        (20, 517, 200),
    ] {
        let (x, w) = (values(m * k, 1), values(n * k, 2));
        let mut y = vec![f32::NAN; m * n];
        matmul_wt(&x, &w, &mut y, m, k, n);
        let want = reference(&x, &w, m, k, n);
        for (a, b) in y.iter().zip(&want) {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                "{m}×{k}×{n}: {a} vs {b}"
            );
        }
        // The portable loop (what a CPU without AVX-512 runs) gives the same.
        let mut z = vec![f32::NAN; m * n];
        // SAFETY: all of w's rows, written to z only.
        unsafe { rows_body(&x, &w, Out(z.as_mut_ptr()), m, k, n, 0) };
        for (a, b) in z.iter().zip(&want) {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                "portable {m}×{k}×{n}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn the_streaming_read_sees_every_element() {
    let data: Vec<u64> = (0..200_003u64)
        .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .collect();
    assert_eq!(stream_read(&data), data.iter().fold(0, |a, &b| a ^ b));
}

#[test]
fn bf16_weights_read_as_their_f32_values() {
    let (m, k, n) = (5, 70, 9);
    let x = values(m * k, 3);
    let bits: Vec<u16> = values(n * k, 4)
        .iter()
        .map(|v| (v.to_bits() >> 16) as u16)
        .collect();
    let wide: Vec<f32> = bits
        .iter()
        .map(|&b| f32::from_bits(u32::from(b) << 16))
        .collect();
    let (mut y, mut z) = (vec![0.0; m * n], vec![0.0; m * n]);
    matmul_wt(&x, &bits, &mut y, m, k, n);
    matmul_wt(&x, &wide, &mut z, m, k, n);
    assert_eq!(y, z);
}

/// A prefill-sized product of bf16 weights (AMX tiles where the CPU has them, with the
/// activations rounded to bf16; the f32 loop elsewhere) against the plain sum, with tails
/// of rows that do not fill a tile, in both directions.
#[test]
fn a_prefill_of_bf16_weights_equals_the_plain_sum() {
    #[cfg(target_arch = "x86_64")]
    let rounded = crate::amx::available();
    #[cfg(not(target_arch = "x86_64"))]
    let rounded = false;
    for &(m, k, n) in &[(16, 32, 16), (20, 64, 37), (33, 96, 70), (64, 128, 130)] {
        let x = values(m * k, 5);
        let w: Vec<u16> = values(n * k, 6)
            .iter()
            .map(|v| (v.to_bits() >> 16) as u16)
            .collect();
        let wide: Vec<f32> = w.iter().map(|&b| b.widen()).collect();
        let xr: Vec<f32> = if rounded {
            x.iter()
                .map(|&v| f32::from_bits(u32::from(crate::amx::to_bf16(v)) << 16))
                .collect()
        } else {
            x.clone()
        };
        // Whole tiles of weight rows on AMX (rounded activations), the rest in f32.
        let tiled = if rounded { n / 16 * 16 } else { 0 };
        let (tiles, rest) = (
            reference(&xr, &wide, m, k, n),
            reference(&x, &wide, m, k, n),
        );
        let mut y = vec![f32::NAN; m * n];
        matmul_wt(&x, &w, &mut y, m, k, n);
        for (ij, a) in y.iter().enumerate() {
            let b = if ij % n < tiled { tiles[ij] } else { rest[ij] };
            assert!(
                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                "{m}×{k}×{n}: {a} vs {b}"
            );
        }
    }
}
