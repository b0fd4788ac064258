//! The 2D rotary embedding of the vision tower (`VisionRotaryEmbedding` and `rot_pos_emb` in
//! transformers' Qwen2-VL): half of each head's rotary frequencies turn with the patch's row,
//! the other half with its column. Patches arrive ordered window by window (2×2 windows of
//! the merger), and every temporal slice of a video repeats the same rows and columns.

use burn::tensor::{Device, Tensor, TensorData};

/// Base of the vision tower's rotary frequencies (fixed in the reference).
pub const VISION_ROPE_THETA: f32 = 10_000.0;

/// `(row, col)` of every patch of the given grids, in the processor's order:
/// per temporal slice, per window row, per window column, then row-major inside the window.
pub fn patch_positions(grids: &[[usize; 3]], merge: usize) -> Vec<(usize, usize)> {
    let mut positions = Vec::new();
    for &[t, h, w] in grids {
        let mut slice = Vec::with_capacity(h * w);
        for window_row in 0..h / merge {
            for window_col in 0..w / merge {
                for i in 0..merge {
                    for j in 0..merge {
                        slice.push((window_row * merge + i, window_col * merge + j));
                    }
                }
            }
        }
        for _ in 0..t {
            positions.extend_from_slice(&slice);
        }
    }
    positions
}

/// Cos/sin tables for the given patch positions.
///
/// # Shapes
/// - returns `(cos, sin)`, each `[n_patches, 1, head_dim]` (broadcast over heads)
pub fn vision_rotary_tables(
    positions: &[(usize, usize)],
    head_dim: usize,
    device: &Device,
) -> (Tensor<3>, Tensor<3>) {
    // The reference builds `VisionRotaryEmbedding(head_dim / 2)`: dim = head_dim / 2, so
    // head_dim / 4 frequencies, used once for rows and once for columns.
    let dim = head_dim / 2;
    let inv_freq: Vec<f32> = (0..dim / 2)
        .map(|i| 1.0 / VISION_ROPE_THETA.powf((2 * i) as f32 / dim as f32))
        .collect();
    let n = positions.len();
    let mut angles = Vec::with_capacity(n * head_dim);
    for &(row, col) in positions {
        let half: Vec<f32> = inv_freq
            .iter()
            .map(|f| row as f32 * f)
            .chain(inv_freq.iter().map(|f| col as f32 * f))
            .collect();
        angles.extend_from_slice(&half);
        angles.extend_from_slice(&half); // rotate-half layout: both halves share angles
    }
    let angles = Tensor::<3>::from_data(TensorData::new(angles, [n, 1, head_dim]), device);
    (angles.clone().cos(), angles.sin())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_come_window_by_window() {
        let positions = patch_positions(&[[1, 2, 4]], 2);
        assert_eq!(
            positions,
            [
                (0, 0),
                (0, 1),
                (1, 0),
                (1, 1),
                (0, 2),
                (0, 3),
                (1, 2),
                (1, 3)
            ]
        );
        let video = patch_positions(&[[2, 2, 2]], 2);
        assert_eq!(video.len(), 8);
        assert_eq!(video[..4], video[4..]);
    }

    #[test]
    fn first_quarter_turns_with_rows_second_with_columns() {
        let device = Device::flex();
        let (cos, _) = vision_rotary_tables(&[(0, 0), (3, 0), (0, 5)], 8, &device);
        let cos = cos.into_data().try_to_vec::<f32>().expect("f32");
        // head_dim 8: entries 0-1 rows, 2-3 columns, 4-7 repeat them.
        assert!(cos[..8].iter().all(|c| (c - 1.0).abs() < 1e-7));
        let row = &cos[8..16];
        assert!((row[0] - 3.0f32.cos()).abs() < 1e-6 && (row[2] - 1.0).abs() < 1e-7);
        let col = &cos[16..24];
        assert!((col[0] - 1.0).abs() < 1e-7 && (col[2] - 5.0f32.cos()).abs() < 1e-6);
        assert_eq!(row[..4], row[4..]);
    }
}
