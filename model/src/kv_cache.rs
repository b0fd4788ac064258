//! The key/value cache for incremental decoding: per layer, the rotated keys and the values
//! of every token seen so far, for the whole batch.

use burn::tensor::Tensor;

/// Keys and values of one layer.
///
/// # Shapes
/// - `key`, `value`: `[batch, kv_heads, seen, head_dim]`
#[derive(Debug, Clone, Default)]
pub struct LayerCache {
    entries: Option<(Tensor<4>, Tensor<4>)>,
}

impl LayerCache {
    /// Appends this step's keys and values and returns all of them.
    ///
    /// # Shapes
    /// - `key`, `value`: `[batch, kv_heads, new, head_dim]`
    /// - returns `[batch, kv_heads, seen + new, head_dim]` twice
    pub fn append(&mut self, key: Tensor<4>, value: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let (key, value) = match self.entries.take() {
            Some((past_key, past_value)) => (
                Tensor::cat(vec![past_key, key], 2),
                Tensor::cat(vec![past_value, value], 2),
            ),
            None => (key, value),
        };
        self.entries = Some((key.clone(), value.clone()));
        (key, value)
    }

    /// Number of cached positions.
    pub fn seq_len(&self) -> usize {
        self.entries.as_ref().map_or(0, |(key, _)| key.dims()[2])
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
