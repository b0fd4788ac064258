//! The key/value cache for incremental decoding: per layer, the rotated keys and the values
//! of every token seen so far, for the whole batch.
//!
//! Each layer's keys and values live in a buffer with room to spare along the sequence, and
//! each step writes its new positions in place (a uniquely held buffer is written without a
//! copy), so a long answer or a long video prompt costs no per-step copy of everything seen
//! so far, as concatenating would. When the room runs out the buffer grows by half (as
//! llama-burn's cache, which preallocates, and a `Vec`).
//!
//! A sliding-window layer (EXAONE 4's local layers) sees only its last `window` tokens, so
//! its cache drops older ones: once it holds more than twice the window (and
//! [`MIN_SPARE`]), it keeps the last `window - 1`, and `start` says which absolute position
//! its first entry is. Memory per layer is then bounded by the window, not the context.

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
    /// Positions held.
    len: usize,
    /// Absolute position of the first held entry (0 unless a window dropped older ones).
    start: usize,
    /// The layer's attention window, if it slides.
    window: Option<usize>,
}

impl LayerCache {
    /// An empty cache for a layer that sees `window` tokens (`None`: all of them).
    pub fn with_window(window: Option<usize>) -> Self {
        Self {
            window,
            ..Self::default()
        }
    }

    /// Absolute position of the first entry [`append`](Self::append) will return.
    pub fn start(&self) -> usize {
        self.start
    }

    /// Positions actually held (at most about twice the window for a sliding layer).
    pub fn held(&self) -> usize {
        self.len
    }

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
        if let Some(window) = self.window
            && self.len > 2 * window.max(MIN_SPARE)
        {
            // The next query sees the last window - 1 cached positions and itself.
            let keep = window - 1;
            self.retain_positions(self.len - keep);
        }
        seen
    }

    /// Drops the first `drop` held positions of every row.
    fn retain_positions(&mut self, drop: usize) {
        if drop == 0 {
            return;
        }
        if let Some((k, v)) = self.filled() {
            let len = self.len - drop;
            let keep = |t: Tensor<4>| t.narrow(2, drop, len);
            self.buffers = Some(spare_room(vec![(keep(k), keep(v))], len));
            self.len = len;
            self.start += drop;
        }
    }

    /// Number of positions seen (absolute: the next one's index), held or dropped.
    pub fn seq_len(&self) -> usize {
        self.start + self.len
    }

    /// Positions the buffers hold before they must grow.
    pub fn capacity(&self) -> usize {
        self.buffers.as_ref().map_or(0, |(k, _)| k.dims()[2])
    }

    /// The filled positions of the buffers, `[batch, kv_heads, len, head_dim]` each.
    fn filled(&self) -> Option<(Tensor<4>, Tensor<4>)> {
        let (k, v) = self.buffers.as_ref()?;
        Some((
            k.clone().narrow(2, 0, self.len),
            v.clone().narrow(2, 0, self.len),
        ))
    }

    /// Keeps only the batch rows `rows` (in that order) and drops the first `front`
    /// positions of every row (padding no remaining row needs), into buffers with room to
    /// spare again.
    pub fn retain(&mut self, rows: &[usize], front: usize) {
        let Some((k, v)) = self.filled() else {
            return;
        };
        // Absolute positions before `front` go; a window may already have dropped some.
        let drop = front.saturating_sub(self.start).min(self.len);
        self.start = self.start.saturating_sub(front);
        let front = drop;
        let len = self.len - front;
        let device = k.device();
        let index = Tensor::<1, burn::tensor::Int>::from_data(
            burn::tensor::TensorData::new(rows.iter().map(|&r| r as i64).collect(), [rows.len()]),
            &device,
        );
        let keep = |t: Tensor<4>| t.select(0, index.clone()).narrow(2, front, len);
        self.buffers = Some(spare_room(vec![(keep(k), keep(v))], len));
        self.len = len;
    }

    /// Appends the rows of `other` after this cache's rows. The shorter of the two is
    /// left-padded with zeros to the longer's length (its padding mask must say so).
    pub fn merge(&mut self, other: &LayerCache) {
        // Both end at the later of the two ends; each holds from its own start, shifted by
        // the padding it gets in front.
        let total = self.seq_len().max(other.seq_len());
        let start = [&*self, other]
            .iter()
            .filter(|c| c.len > 0)
            .map(|c| c.start + total - c.seq_len())
            .min()
            .unwrap_or(0);
        let len = total - start;
        let parts: Vec<(Tensor<4>, Tensor<4>)> = [self.filled(), other.filled()]
            .into_iter()
            .flatten()
            .map(|(k, v)| (left_pad(k, len), left_pad(v, len)))
            .collect();
        if parts.is_empty() {
            return;
        }
        self.buffers = Some(spare_room(parts, len));
        self.len = len;
        self.start = start;
    }
}

/// `t` (`[batch, heads, len, dim]`) with zeros before it up to `len` positions.
fn left_pad(t: Tensor<4>, len: usize) -> Tensor<4> {
    let [b, h, l, d] = t.dims();
    if l == len {
        return t;
    }
    let zeros = Tensor::<4>::zeros([b, h, len - l, d], (&t.device(), t.dtype()));
    Tensor::cat(vec![zeros, t], 2)
}

/// Key and value buffers holding `parts` (each `[rows, heads, len, dim]`) one after the
/// other along the batch, with spare positions after `len`.
fn spare_room(parts: Vec<(Tensor<4>, Tensor<4>)>, len: usize) -> (Tensor<4>, Tensor<4>) {
    let (keys, values): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
    let room = |parts: Vec<Tensor<4>>| {
        let all = Tensor::cat(parts, 0);
        let [b, h, _, d] = all.dims();
        let spare = grown(len, len + 1) - len;
        let zeros = Tensor::<4>::zeros([b, h, spare, d], (&all.device(), all.dtype()));
        Tensor::cat(vec![all, zeros], 2)
    };
    (room(keys), room(values))
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

    /// An empty cache with one layer per entry of `windows` (`Some(w)`: a layer that sees
    /// its last `w` tokens and keeps only about those).
    pub fn with_windows(windows: impl IntoIterator<Item = Option<usize>>) -> Self {
        Self {
            layers: windows.into_iter().map(LayerCache::with_window).collect(),
        }
    }

    /// The cache of layer `index`.
    pub fn layer(&self, index: usize) -> &LayerCache {
        &self.layers[index]
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

    /// Keeps the batch rows `rows` and drops the first `front` positions (see
    /// [`LayerCache::retain`]).
    pub fn retain(&mut self, rows: &[usize], front: usize) {
        for layer in &mut self.layers {
            layer.retain(rows, front);
        }
    }

    /// Appends `other`'s rows after this cache's (see [`LayerCache::merge`]).
    pub fn merge(&mut self, other: &KvCache) {
        for (layer, theirs) in self.layers.iter_mut().zip(&other.layers) {
            layer.merge(theirs);
        }
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

    /// Rows kept, padding dropped at the front, and two caches of different lengths
    /// merged give the positions each row had, left-padded with zeros.
    #[test]
    fn retain_and_merge_keep_each_rows_positions() {
        let device = Device::flex();
        let draw = |b, len| Tensor::<4>::random([b, 2, len, 3], Distribution::Default, &device);
        let (k, v) = (draw(3, 6), draw(3, 6));
        let mut a = LayerCache::default();
        a.append(k.clone(), v.clone());
        a.retain(&[2, 0], 1);
        assert_eq!(a.seq_len(), 5);
        let (ka, _) = a.filled().expect("filled");
        let want = Tensor::cat(
            vec![k.clone().narrow(0, 2, 1), k.clone().narrow(0, 0, 1)],
            0,
        )
        .narrow(2, 1, 5);
        ka.into_data().assert_eq(&want.into_data(), true);

        let (k2, v2) = (draw(1, 3), draw(1, 3));
        let mut b = LayerCache::default();
        b.append(k2.clone(), v2);
        a.merge(&b);
        assert_eq!(a.seq_len(), 5);
        assert!(a.capacity() > 5);
        let (km, _) = a.filled().expect("filled");
        assert_eq!(km.dims(), [3, 2, 5, 3]);
        km.clone()
            .narrow(0, 2, 1)
            .narrow(2, 2, 3)
            .into_data()
            .assert_eq(&k2.into_data(), true);
        let pad: Vec<f32> = km
            .narrow(0, 2, 1)
            .narrow(2, 0, 2)
            .into_data()
            .try_to_vec()
            .expect("f32");
        assert!(pad.iter().all(|&x| x == 0.0));
        // Appending after a merge continues every row at the same position.
        let (all_k, _) = a.append(draw(3, 1), draw(3, 1));
        assert_eq!(all_k.dims(), [3, 2, 6, 3]);
    }

    #[test]
    fn growth_leaves_room_and_grows_by_half() {
        assert_eq!(grown(0, 10), 74);
        assert_eq!(grown(74, 75), 139);
        assert_eq!(grown(1000, 1001), 1500);
    }
}
