//! M-RoPE position ids for a multimodal sequence, as the reference's `get_rope_index`
//! (transformers' Qwen2-VL) computes them. Pure index arithmetic on the host.
//!
//! Text advances all three streams together. A visual block of `(t, h, w)` merged tokens,
//! starting where the next text position would be (`base`), gets `base + (ti, hi, wi)` for
//! each token; the text after it resumes at `base + max(t, h, w)`
//! (the original rule; transformers 5 resumes at `base + max(h, w)`).
//! Padding gets position 0 (transformers 4 wrote 1); attention never reads it.
//! `rope_deltas[row] = max position + 1 − seq_len` lets decoding continue at
//! `cached_len + delta`.
//!
//! Qwen2.5-VL gives video tokens absolute time: temporal patch `ti` sits at
//! `base + ⌊ti · second_per_grid_t · tokens_per_second⌋` (`get_vision_position_ids`), and the
//! text after the block resumes after the largest position in it (the original rule, as
//! Qwen's and vLLM's code do; transformers 5 resumes at `base + max(h, w)`). EXAONE 4.5 and
//! HyperCLOVA X count every token, visual or not, once: 1D positions.

use thiserror::Error;

/// Token ids that mark visual content, the merge size that turns patch grids into token
/// grids, and how visual tokens are numbered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VisionTokens {
    pub image_token_id: i64,
    pub video_token_id: i64,
    pub spatial_merge_size: usize,
    pub rule: PositionRule,
}

/// How a family numbers the positions of visual tokens.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum PositionRule {
    /// Qwen2-VL's M-RoPE: `(t, h, w)` grid positions, text resumes at `base + max(t, h, w)`.
    #[default]
    MRope,
    /// Qwen2.5-VL's: video time scaled to `tokens_per_second`.
    MRopeTimed { tokens_per_second: f64 },
    /// One position per token, the same in all three streams (EXAONE 4.5, HyperCLOVA X).
    Linear,
}

/// Placeholders and visual inputs that do not fit together.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FusionError {
    #[error("the prompt has more {kind} blocks than {kind} grids ({grids} given)")]
    TooFewGrids { kind: &'static str, grids: usize },
    #[error("{grids} {kind} grids were given but only {used} {kind} blocks appear in the prompt")]
    UnusedGrids {
        kind: &'static str,
        grids: usize,
        used: usize,
    },
    #[error(
        "row {row}: the {kind} block at token {start} has {found} placeholder tokens, but its grid \
         {grid:?} needs {expected}"
    )]
    BlockLength {
        kind: &'static str,
        row: usize,
        start: usize,
        grid: [usize; 3],
        expected: usize,
        found: usize,
    },
    #[error(
        "the prompt has {tokens} {kind} placeholder tokens but the {kind}s give {features} visual tokens"
    )]
    TokenCount {
        kind: &'static str,
        tokens: usize,
        features: usize,
    },
    #[error("{kind} placeholders in the prompt but no {kind} pixel values")]
    MissingPixels { kind: &'static str },
    #[error("input ids hold {ids} values, not batch {batch} × seq {seq}")]
    Shape {
        ids: usize,
        batch: usize,
        seq: usize,
    },
}

/// Position ids `[3, batch, seq]` (flattened, stream-major) and one delta per row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RopeIndex {
    pub position_ids: Vec<i64>,
    pub rope_deltas: Vec<i64>,
}

/// Computes M-RoPE position ids; see the module docs. `attention_mask` (1 = token) is
/// `[batch, seq]` flattened; images and videos are consumed in order across the batch.
///
/// One function, longer than the rest, on purpose: it follows transformers'
/// `get_rope_index` step by step (per row: text run, vision block, text run, ...), so that
/// the two can be read side by side when a family changes the rule (Qwen2.5-VL's absolute
/// time for videos).
pub fn rope_index(
    input_ids: &[i64],
    attention_mask: Option<&[i64]>,
    [batch, seq]: [usize; 2],
    image_grids: &[[usize; 3]],
    video_grids: &[[usize; 3]],
    video_seconds: &[f64],
    tokens: VisionTokens,
) -> Result<RopeIndex, FusionError> {
    if input_ids.len() != batch * seq || attention_mask.is_some_and(|m| m.len() != batch * seq) {
        return Err(FusionError::Shape {
            ids: input_ids.len(),
            batch,
            seq,
        });
    }
    let merge = tokens.spatial_merge_size;
    let mut position_ids = vec![0i64; 3 * batch * seq];
    let mut rope_deltas = Vec::with_capacity(batch);
    let (mut next_image, mut next_video) = (0, 0);
    for row in 0..batch {
        let ids = &input_ids[row * seq..(row + 1) * seq];
        let real = |i: usize| attention_mask.is_none_or(|m| m[row * seq + i] != 0);
        let mut set = |i: usize, [t, h, w]: [i64; 3]| {
            position_ids[row * seq + i] = t;
            position_ids[(batch + row) * seq + i] = h;
            position_ids[(2 * batch + row) * seq + i] = w;
        };
        let mut next = 0i64; // the position the next text token gets
        let real_tokens = (0..seq).filter(|&i| real(i)).count() as i64;
        let mut i = 0;
        while i < seq {
            if !real(i) {
                i += 1;
                continue;
            }
            let token = ids[i];
            let block = if token == tokens.image_token_id {
                Some(("image", image_grids, &mut next_image))
            } else if token == tokens.video_token_id {
                Some(("video", video_grids, &mut next_video))
            } else {
                None
            };
            let Some((kind, grids, index)) = block else {
                set(i, [next; 3]);
                next += 1;
                i += 1;
                continue;
            };
            let grid = *grids.get(*index).ok_or(FusionError::TooFewGrids {
                kind,
                grids: grids.len(),
            })?;
            let video_index = *index;
            *index += 1;
            let (t, h, w) = (grid[0], grid[1] / merge, grid[2] / merge);
            let expected = t * h * w;
            let found = ids[i..].iter().take_while(|&&id| id == token).count();
            if found != expected {
                return Err(FusionError::BlockLength {
                    kind,
                    row,
                    start: i,
                    grid,
                    expected,
                    found,
                });
            }
            let base = next;
            if tokens.rule == PositionRule::Linear {
                for _ in 0..expected {
                    set(i, [next; 3]);
                    next += 1;
                    i += 1;
                }
                continue;
            }
            // Seconds → positions per temporal patch (Qwen2.5-VL videos), else one each.
            let interval = match tokens.rule {
                PositionRule::MRopeTimed { tokens_per_second } if kind == "video" => {
                    tokens_per_second * video_seconds.get(video_index).copied().unwrap_or(1.0)
                }
                _ => 1.0,
            };
            let mut largest = base;
            for ti in 0..t {
                // `(arange(t) * interval).long()`: truncated toward zero.
                let time = if interval == 1.0 {
                    ti as i64
                } else {
                    (ti as f64 * interval) as i64
                };
                for hi in 0..h {
                    for wi in 0..w {
                        let at = [base + time, base + hi as i64, base + wi as i64];
                        largest = largest.max(at[0]).max(at[1]).max(at[2]);
                        set(i, at);
                        i += 1;
                    }
                }
            }
            next = largest + 1;
        }
        rope_deltas.push(next - real_tokens);
    }
    for (kind, grids, used) in [
        ("image", image_grids, next_image),
        ("video", video_grids, next_video),
    ] {
        if used != grids.len() {
            return Err(FusionError::UnusedGrids {
                kind,
                grids: grids.len(),
                used,
            });
        }
    }
    Ok(RopeIndex {
        position_ids,
        rope_deltas,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKENS: VisionTokens = VisionTokens {
        image_token_id: 9,
        video_token_id: 8,
        spatial_merge_size: 2,
        rule: PositionRule::MRope,
    };

    fn streams(index: &RopeIndex, batch: usize, seq: usize, row: usize) -> [Vec<i64>; 3] {
        let at = |s: usize| {
            index.position_ids[(s * batch + row) * seq..(s * batch + row + 1) * seq].to_vec()
        };
        [at(0), at(1), at(2)]
    }

    #[test]
    fn text_only_counts_up_in_all_streams() {
        let index = rope_index(&[1, 2, 3], None, [1, 3], &[], &[], &[], TOKENS).expect("valid");
        assert_eq!(index.position_ids, [0, 1, 2, 0, 1, 2, 0, 1, 2]);
        assert_eq!(index.rope_deltas, [0]);
    }

    #[test]
    fn an_image_block_gets_grid_positions_and_text_resumes_after_its_max() {
        // text, text, a 1×4×6 patch grid = 1×2×3 merged tokens, text
        let ids = [1, 2, 9, 9, 9, 9, 9, 9, 3];
        let index = rope_index(&ids, None, [1, 9], &[[1, 4, 6]], &[], &[], TOKENS).expect("valid");
        let [t, h, w] = streams(&index, 1, 9, 0);
        assert_eq!(t, [0, 1, 2, 2, 2, 2, 2, 2, 5]);
        assert_eq!(h, [0, 1, 2, 2, 2, 3, 3, 3, 5]);
        assert_eq!(w, [0, 1, 2, 3, 4, 2, 3, 4, 5]);
        assert_eq!(index.rope_deltas, [6 - 9]);
    }

    #[test]
    fn left_padding_gets_position_zero_and_real_tokens_count_from_zero() {
        let ids = [0, 0, 5, 6, 7, 5, 6, 7, 4, 3];
        let mask = [0, 0, 1, 1, 1, 1, 1, 1, 1, 1];
        let index = rope_index(&ids, Some(&mask), [2, 5], &[], &[], &[], TOKENS).expect("valid");
        let [t, _, _] = streams(&index, 2, 5, 0);
        assert_eq!(t, [0, 0, 0, 1, 2]);
        assert_eq!(index.rope_deltas, [0, 0]);
    }

    #[test]
    fn a_right_padded_row_gets_the_positions_it_has_alone() {
        let alone =
            rope_index(&[1, 9, 9, 2], None, [1, 4], &[[1, 2, 4]], &[], &[], TOKENS).expect("valid");
        let ids = [1, 9, 9, 2, 0, 0];
        let mask = [1, 1, 1, 1, 0, 0];
        let padded =
            rope_index(&ids, Some(&mask), [1, 6], &[[1, 2, 4]], &[], &[], TOKENS).expect("valid");
        for stream in 0..3 {
            assert_eq!(
                padded.position_ids[stream * 6..stream * 6 + 4],
                alone.position_ids[stream * 4..stream * 4 + 4]
            );
            assert_eq!(padded.position_ids[stream * 6 + 4..stream * 6 + 6], [0, 0]);
        }
        assert_eq!(padded.rope_deltas, alone.rope_deltas);
    }

    #[test]
    fn qwen2_5_vl_video_time_is_absolute_and_text_resumes_after_it() {
        // A 4×4×4 patch video = 4 temporal × 2 × 2 merged tokens at 0.5 s per temporal
        // patch and 2 tokens per second: time positions 0, 1, 2, 3 (one per second); with
        // 2 s per patch they are 0, 4, 8, 12 and the text resumes after 12.
        let timed = VisionTokens {
            rule: PositionRule::MRopeTimed {
                tokens_per_second: 2.0,
            },
            ..TOKENS
        };
        let ids: Vec<i64> = [1].into_iter().chain([8; 16]).chain([2]).collect();
        let index =
            rope_index(&ids, None, [1, 18], &[], &[[4, 4, 4]], &[2.0], timed).expect("valid");
        let [t, h, w] = streams(&index, 1, 18, 0);
        let times: Vec<i64> = t[1..17].iter().step_by(4).copied().collect();
        assert_eq!(times, [1, 5, 9, 13]);
        assert_eq!((h[1], h[16], w[2]), (1, 2, 2));
        assert_eq!(t[17], 14, "text resumes after the largest position");
        // A fractional interval truncates (`.long()`): 0.75 → 0, 0, 1, 2.
        let index =
            rope_index(&ids, None, [1, 18], &[], &[[4, 4, 4]], &[0.375], timed).expect("valid");
        let [t, _, _] = streams(&index, 1, 18, 0);
        let times: Vec<i64> = t[1..17].iter().step_by(4).copied().collect();
        assert_eq!(times, [1, 1, 2, 3]);
        // Images are not timed.
        let image =
            rope_index(&[9, 9], None, [1, 2], &[[1, 2, 4]], &[], &[], timed).expect("valid");
        assert_eq!(streams(&image, 1, 2, 0)[0], [0, 0]);
    }

    #[test]
    fn one_d_positions_count_every_token_once() {
        let linear = VisionTokens {
            rule: PositionRule::Linear,
            ..TOKENS
        };
        let ids = [0, 1, 9, 9, 2];
        let mask = [0, 1, 1, 1, 1];
        let index =
            rope_index(&ids, Some(&mask), [1, 5], &[[1, 2, 4]], &[], &[], linear).expect("valid");
        let [t, h, w] = streams(&index, 1, 5, 0);
        assert_eq!(t, [0, 0, 1, 2, 3]);
        assert_eq!((h, w), (t.clone(), t));
        assert_eq!(index.rope_deltas, [0]);
    }

    #[test]
    fn mismatched_placeholders_are_errors() {
        let short = rope_index(&[9, 9, 9], None, [1, 3], &[[1, 4, 2]], &[], &[], TOKENS);
        assert!(matches!(
            short,
            Err(FusionError::BlockLength {
                expected: 2,
                found: 3,
                ..
            })
        ));
        let missing = rope_index(&[9, 1, 9], None, [1, 3], &[[1, 2, 2]], &[], &[], TOKENS);
        assert_eq!(
            missing,
            Err(FusionError::TooFewGrids {
                kind: "image",
                grids: 1
            })
        );
        let unused = rope_index(&[1, 2], None, [1, 2], &[], &[[2, 2, 2]], &[], TOKENS);
        assert_eq!(
            unused,
            Err(FusionError::UnusedGrids {
                kind: "video",
                grids: 1,
                used: 0
            })
        );
    }
}
