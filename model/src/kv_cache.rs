//! The key/value cache for incremental decoding: per layer, the rotated keys and the values
//! of every token seen so far, for the whole batch.
//!
//! Each layer's keys and values live in a buffer with room to spare along the sequence, and
//! each step writes its new positions in place (a uniquely held buffer is written without a
//! copy), so a long answer or a long video prompt costs no per-step copy of everything seen
//! so far, as concatenating would. When the room runs out the buffer grows by half (as
//! llama-burn's cache, which preallocates, and a `Vec`).

use burn::tensor::Tensor;

/// Positions a buffer is made larger than what it must hold, at the least.
const MIN_SPARE: usize = 64;

/// The capacity of a buffer that must hold `needed` positions and now holds `capacity`.
fn grown(capacity: usize, needed: usize) -> usize {
    needed.max(capacity + capacity / 2).max(needed + MIN_SPARE)
}

/// Keys and values of one layer.
///
/// # Shapes
/// - buffers: `[batch, kv_heads, capacity, head_dim]`; positions from `len` on are unused
#[derive(Debug, Clone, Default)]
pub struct LayerCache {
    buffers: Option<(Tensor<4>, Tensor<4>)>,
    len: usize,
}

impl LayerCache {
    /// Writes this step's keys and values after the cached ones and returns all of them.
    ///
    /// # Shapes
    /// - `key`, `value`: `[batch, kv_heads, new, head_dim]`
    /// - returns `[batch, kv_heads, seen + new, head_dim]` twice (views of the buffers)
    pub fn append(&mut self, key: Tensor<4>, value: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let [b, h, new, d] = key.dims();
        let end = self.len + new;
        let (keys, values) = match self.buffers.take() {
            Some((keys, values)) if keys.dims()[2] >= end => (keys, values),
            old => {
                let capacity = grown(old.as_ref().map_or(0, |(k, _)| k.dims()[2]), end);
                let room = |like: &Tensor<4>| {
                    Tensor::<4>::zeros([b, h, capacity, d], (&like.device(), like.dtype()))
                };
                let (keys, values) = (room(&key), room(&value));
                match old {
                    // Only the filled positions move to the larger buffers.
                    Some((k, v)) if self.len > 0 => {
                        let filled = [0..b, 0..h, 0..self.len, 0..d];
                        (
                            keys.slice_assign(filled.clone(), k.narrow(2, 0, self.len)),
                            values.slice_assign(filled, v.narrow(2, 0, self.len)),
                        )
                    }
                    _ => (keys, values),
                }
            }
        };
        let fresh = [0..b, 0..h, self.len..end, 0..d];
        let keys = keys.slice_assign(fresh.clone(), key);
        let values = values.slice_assign(fresh, value);
        self.len = end;
        let seen = (
            keys.clone().narrow(2, 0, end),
            values.clone().narrow(2, 0, end),
        );
        self.buffers = Some((keys, values));
        seen
    }

    /// Number of cached positions.
    pub fn seq_len(&self) -> usize {
        self.len
    }

    /// Positions the buffers hold before they must grow.
    pub fn capacity(&self) -> usize {
        self.buffers.as_ref().map_or(0, |(k, _)| k.dims()[2])
    }
}

/// The cache of a whole decoder: one [`LayerCache`] per layer.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<LayerCache>,
}

impl KvCache {
    /// An empty cache for a decoder of `num_layers` layers.
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: vec![LayerCache::default(); num_layers],
        }
    }

    /// Number of positions already cached (the same in every layer).
    pub fn seq_len(&self) -> usize {
        self.layers.first().map_or(0, LayerCache::seq_len)
    }

    /// The cache of layer `index`.
    pub fn layer_mut(&mut self, index: usize) -> &mut LayerCache {
        &mut self.layers[index]
    }

    /// Number of layers this cache was made for.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Distribution, Tensor};

    use super::*;

    /// Appending step by step through several growths gives what one concatenation of
    /// every step gives.
    #[test]
    fn appends_equal_one_concatenation() {
        let device = Device::flex();
        let mut cache = LayerCache::default();
        let (mut keys, mut values) = (Vec::new(), Vec::new());
        let mut capacities = Vec::new();
        for new in [5, 1, 1, 70, 1, 3, 120, 1] {
            let k = Tensor::<4>::random([2, 3, new, 4], Distribution::Default, &device);
            let v = Tensor::<4>::random([2, 3, new, 4], Distribution::Default, &device);
            keys.push(k.clone());
            values.push(v.clone());
            let (all_k, all_v) = cache.append(k, v);
            let want_k = Tensor::cat(keys.clone(), 2);
            let want_v = Tensor::cat(values.clone(), 2);
            assert_eq!(all_k.dims(), want_k.dims());
            all_k.into_data().assert_eq(&want_k.into_data(), true);
            all_v.into_data().assert_eq(&want_v.into_data(), true);
            assert!(cache.capacity() >= cache.seq_len());
            capacities.push(cache.capacity());
        }
        assert_eq!(cache.seq_len(), 202);
        // It grew, but not at every step.
        capacities.dedup();
        assert!(
            capacities.len() > 1 && capacities.len() < 8,
            "{capacities:?}"
        );
    }

    #[test]
    fn growth_leaves_room_and_grows_by_half() {
        assert_eq!(grown(0, 10), 74);
        assert_eq!(grown(74, 75), 139);
        assert_eq!(grown(1000, 1001), 1500);
    }
}
