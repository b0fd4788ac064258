//! Attention masks and text position ids, computed once per forward and shared by every
//! layer.

use burn::tensor::{Bool, Device, Int, Tensor};

/// The boolean attention mask for `q_len` new tokens over a key sequence described by a
/// padding mask, `true` where attention is forbidden: a key after the query (causal) or a
/// padding key. The new tokens are the last `q_len` of the key sequence, so this also
/// serves incremental decoding with a KV cache.
///
/// # Shapes
/// - `attention_mask`: `[batch, kv_len]`, 1 for a real token and 0 for padding
/// - returns `[batch, 1, q_len, kv_len]`
pub fn causal_padding_mask(attention_mask: Tensor<2, Int>, q_len: usize) -> Tensor<4, Bool> {
    let [b, kv_len] = attention_mask.dims();
    assert!(
        q_len <= kv_len,
        "attention mask covers {kv_len} keys but {q_len} new tokens were given"
    );
    let device = attention_mask.device();
    let past = kv_len - q_len;
    // Query i sits at absolute position past + i and may see keys 0..=past + i.
    let rows = Tensor::<1, Int>::arange(past as i64..kv_len as i64, &device)
        .reshape([q_len, 1])
        .expand([q_len, kv_len]);
    let cols = Tensor::<1, Int>::arange(0..kv_len as i64, &device)
        .reshape([1, kv_len])
        .expand([q_len, kv_len]);
    let causal = cols
        .greater(rows)
        .reshape([1, 1, q_len, kv_len])
        .expand([b, 1, q_len, kv_len]);
    let padding = attention_mask
        .equal_elem(0)
        .reshape([b, 1, 1, kv_len])
        .expand([b, 1, q_len, kv_len]);
    causal.bool_or(padding)
}

/// The mask of a sliding-window layer: as [`causal_padding_mask`], and also `true` where the
/// key lies `window` or more positions before the query (the reference's
/// `kv_idx > q_idx - sliding_window`, on absolute cache indices). The keys are the absolute
/// positions `start..` of the padding mask (a windowed cache holds only those).
///
/// # Shapes
/// - `attention_mask`: `[batch, kv_len]` over every position so far (`None`: no padding)
/// - returns `[batch, 1, q_len, kv_len - start]`
pub fn sliding_window_mask(
    attention_mask: Option<Tensor<2, Int>>,
    [batch, q_len, kv_len]: [usize; 3],
    start: usize,
    window: usize,
    device: &Device,
) -> Tensor<4, Bool> {
    let past = kv_len - q_len;
    let keys = kv_len - start;
    // Query i sits at absolute position past + i; key k at start + k.
    let rows = Tensor::<1, Int>::arange(past as i64..kv_len as i64, device)
        .reshape([q_len, 1])
        .expand([q_len, keys]);
    let cols = Tensor::<1, Int>::arange(start as i64..kv_len as i64, device)
        .reshape([1, keys])
        .expand([q_len, keys]);
    let causal = cols.clone().greater(rows.clone());
    let too_old = cols.lower_equal(rows - window as i64);
    let forbidden = causal
        .bool_or(too_old)
        .reshape([1, 1, q_len, keys])
        .expand([batch, 1, q_len, keys]);
    match attention_mask {
        None => forbidden,
        Some(mask) => {
            let padding = mask
                .narrow(1, start, keys)
                .equal_elem(0)
                .reshape([batch, 1, 1, keys])
                .expand([batch, 1, q_len, keys]);
            forbidden.bool_or(padding)
        }
    }
}

/// Text position ids from a padding mask, as transformers computes them for a padded batch:
/// each row counts its real tokens from 0; padding gets position 1 (it is masked anyway).
/// The same id goes to all three M-RoPE streams.
///
/// # Shapes
/// - `attention_mask`: `[batch, seq]` → `[3, batch, seq]`
pub fn position_ids_from_mask(attention_mask: Tensor<2, Int>) -> Tensor<3, Int> {
    let [b, s] = attention_mask.dims();
    let padding = attention_mask.clone().equal_elem(0);
    let positions = (attention_mask.cumsum(1) - 1).mask_fill(padding, 1); // [b, s]
    positions.reshape([1, b, s]).repeat_dim(0, 3)
}

/// Position ids `start..start + len` for every row of a batch, in all three streams.
///
/// # Shapes
/// - returns `[3, batch, len]`
pub fn text_position_ids(
    batch: usize,
    start: usize,
    len: usize,
    device: &Device,
) -> Tensor<3, Int> {
    Tensor::<1, Int>::arange(start as i64..(start + len) as i64, device)
        .reshape([1, 1, len])
        .repeat_dim(0, 3)
        .repeat_dim(1, batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    fn bools(t: Tensor<4, Bool>) -> Vec<bool> {
        t.into_data().try_to_vec::<bool>().expect("bool")
    }

    #[test]
    fn causal_mask_hides_the_future_and_padding() {
        let device = Device::flex();
        // Row 0 is left-padded by one token.
        let mask = Tensor::<2, Int>::from_data(
            TensorData::new(vec![0i64, 1, 1, 1, 1, 1], [2, 3]),
            &device,
        );
        let got = bools(causal_padding_mask(mask, 3));
        #[rustfmt::skip]
        let want = [
            true, true, true,   true, false, true,   true, false, false,
            false, true, true,  false, false, true,  false, false, false,
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn decode_step_mask_sees_all_real_past_keys() {
        let device = Device::flex();
        let mask =
            Tensor::<2, Int>::from_data(TensorData::new(vec![0i64, 1, 1, 1], [1, 4]), &device);
        assert_eq!(
            bools(causal_padding_mask(mask, 1)),
            [true, false, false, false]
        );
    }

    #[test]
    fn positions_count_real_tokens_only() {
        let device = Device::flex();
        let mask = Tensor::<2, Int>::from_data(
            TensorData::new(vec![0i64, 0, 1, 1, 1, 1, 1, 0], [2, 4]),
            &device,
        );
        let ids = position_ids_from_mask(mask);
        assert_eq!(ids.dims(), [3, 2, 4]);
        let ids = ids.into_data().try_to_vec_as::<i64>().expect("ints");
        assert_eq!(&ids[..8], &[1, 1, 0, 1, 0, 1, 2, 1]);
        assert_eq!(&ids[8..16], &ids[..8]);
    }
}
