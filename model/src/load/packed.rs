//! Linear weights kept quantized (`nuri_kernels::quant`'s formats), from three sources:
//!
//! - a float checkpoint quantized as each tensor is read ([`LoadOptions::quantize`], `nuri
//!   generate --quantize q8|q4`): the tensor is read in its own dtype, packed, and dropped, so
//!   the float weights never exist all at once;
//! - Nuri's own quantized checkpoints (`nuri quantize`): `<layer>.weight_packed` (U8 rows),
//!   read as they are;
//! - AWQ checkpoints (`quant_method: "awq"`, 4-bit GEMM packing, as AutoAWQ writes them and
//!   the EXAONE/Qwen AWQ releases ship): `<layer>.qweight`, `.qzeros` (int32, eight 4-bit
//!   values each, in AWQ's interleaved order) and `.scales` (f16, one per group of inputs and
//!   output). AWQ's `w = (q − z)·s` over groups of 128 inputs is Q4's own form, so its codes,
//!   zeros and scales are carried over exactly; asked for Q8, they are dequantized and
//!   requantized.
//!
//! The loader stashes the packed rows by layer path (the float parameter gets an empty
//! placeholder), and [`attach`] hands them to the layers.

use std::collections::BTreeMap;

use burn::module::{Param, ParamId};
use burn::tensor::{DType, Device, Int, Tensor, TensorData, bf16, f16};
use nuri_kernels::quant::{BLOCK, Scheme, quantize_rows};

use super::{Assign, Entry};
use crate::linear::{EachLinear, Linear};

/// Which linear layers a load keeps quantized, and in which scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantize {
    pub scheme: Scheme,
    /// Also the vision tower and its projector (by default they stay in the float dtype:
    /// they run once per image, and their errors reach every token).
    pub vision: bool,
}

impl Quantize {
    /// The scheme of the linear layer at `path` with rows `k` wide, or `None` to keep it in
    /// its float dtype: widths that are not whole blocks, the vision side unless asked, and
    /// the output layer at 8 bits at most (its errors go straight into the logits; llama.cpp's
    /// 4-bit files keep it wider too).
    pub fn scheme_for(&self, path: &str, k: usize) -> Option<Scheme> {
        if !Scheme::fits(k) || (is_vision(path) && !self.vision) {
            return None;
        }
        if path == "lm_head" || path.ends_with(".lm_head") {
            return Some(Scheme::Q8);
        }
        Some(self.scheme)
    }
}

/// Whether a layer path is the vision tower's or its projector's.
pub(crate) fn is_vision(path: &str) -> bool {
    path.starts_with("model.visual.") || path == "model.projector"
}

/// A checkpoint's declared quantization (`config.json`'s `quantization_config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Declared {
    /// None: float weights (or Nuri's packed rows, which describe themselves).
    #[default]
    None,
    /// AWQ's 4-bit GEMM format.
    Awq,
}

/// AWQ's packing order: the output column `8c + j` is the 4-bit field `AWQ_FIELD[j]` of the
/// int32 at column `c` (AutoAWQ packs columns `[0, 2, 4, 6, 1, 3, 5, 7]` into fields 0..8).
const AWQ_FIELD: [usize; 8] = [0, 4, 1, 5, 2, 6, 3, 7];

/// The 4-bit value of output column `o` in a row of AWQ-packed int32s.
fn awq_nibble(row: &[i32], o: usize) -> u8 {
    ((row[o / 8] as u32 >> (4 * AWQ_FIELD[o % 8])) & 15) as u8
}

/// An AWQ layer (`qweight` `[k, n/8]`, `qzeros` `[k/g, n/8]`, `scales` `[k/g, n]` as f16
/// bits) as Q4 rows (`[n, row_bytes]`), exactly: each 32-block repeats its group's scale and
/// zero.
pub fn awq_to_q4(qweight: &[i32], qzeros: &[i32], scales: &[u16], k: usize, n: usize) -> Vec<u8> {
    let groups = scales.len() / n;
    let (g, nb, cols) = (k / groups, k / BLOCK, n / 8);
    let (rb, at, cb) = (
        Scheme::Q4.row_bytes(k),
        Scheme::Q4.codes_at(nb),
        Scheme::Q4.code_bytes(),
    );
    let mut out = vec![0u8; n * rb];
    for (o, row) in out.chunks_mut(rb).enumerate() {
        let (head, codes) = row.split_at_mut(at);
        for b in 0..nb {
            let gi = b * BLOCK / g;
            head[2 * b..2 * b + 2].copy_from_slice(&scales[gi * n + o].to_le_bytes());
            head[2 * nb + b] = awq_nibble(&qzeros[gi * cols..(gi + 1) * cols], o);
            for j in 0..BLOCK / 2 {
                let (i0, i1) = (b * BLOCK + j, b * BLOCK + j + BLOCK / 2);
                let lo = awq_nibble(&qweight[i0 * cols..(i0 + 1) * cols], o);
                let hi = awq_nibble(&qweight[i1 * cols..(i1 + 1) * cols], o);
                codes[b * cb + j] = lo | hi << 4;
            }
        }
    }
    out
}

impl Assign<'_> {
    /// The linear weight at `path` (`[in, out]` in the module) kept quantized, or `None` when
    /// it loads as a float. Marks the entries it reads as used; problems are recorded.
    pub(super) fn load_packed(
        &mut self,
        path: &str,
        shape: &[usize],
    ) -> Option<(TensorData, bool)> {
        let linear = path.strip_suffix(".weight")?;
        let (k, n) = (shape[0], shape[1]);
        let index = self.index;
        let named = |suffix: &str| index.get(&format!("{linear}.{suffix}"));
        let wanted = self.dtypes.quantize.and_then(|q| q.scheme_for(linear, k));
        let result = if let Some(entry) = named("weight_packed") {
            self.used.insert(format!("{linear}.weight_packed"));
            self.read_packed(entry, k, n, wanted)
        } else if let (Some(qw), Some(qz), Some(sc)) =
            (named("qweight"), named("qzeros"), named("scales"))
        {
            for suffix in ["qweight", "qzeros", "scales"] {
                self.used.insert(format!("{linear}.{suffix}"));
            }
            self.read_awq([qw, qz, sc], k, n, wanted)
        } else if let (Some(entry), Some(scheme)) = (index.get(path), wanted) {
            self.used.insert(path.to_string());
            self.quantize_float(entry, k, n, scheme)
        } else {
            return None;
        };
        match result {
            Ok(kept) => Some(kept),
            Err(problem) => {
                self.problems.push(format!("{linear}: {problem}"));
                None
            }
        }
    }

    /// Nuri's packed rows, as stored.
    fn read_packed(
        &mut self,
        entry: &Entry,
        k: usize,
        n: usize,
        wanted: Option<Scheme>,
    ) -> Result<(TensorData, bool), String> {
        let scheme = match entry.shape.as_slice() {
            &[rows, rb] if rows == n && entry.dtype == DType::U8 => Scheme::of_row(k, rb),
            _ => None,
        }
        .ok_or_else(|| {
            format!(
                "{} is {:?} {:?}; packed rows of a {n}×{k} weight are U8 [{n}, {} or {}]",
                entry.name,
                entry.dtype,
                entry.shape,
                Scheme::Q8.row_bytes(k),
                Scheme::Q4.row_bytes(k)
            )
        })?;
        if let Some(want) = wanted.filter(|&w| w != scheme) {
            // Said once for all such layers, after the walk (see `refused_summary`).
            self.refused.push((scheme.bits(), want.bits()));
            return Ok((TensorData::new(Vec::<u8>::new(), [0, 0]), false));
        }
        self.read_kept(entry, DType::U8)
    }

    /// An AWQ layer, as Q4 (exactly) or Q8 (requantized).
    fn read_awq(
        &mut self,
        [qw, qz, sc]: [&Entry; 3],
        k: usize,
        n: usize,
        wanted: Option<Scheme>,
    ) -> Result<(TensorData, bool), String> {
        if self.declared != Declared::Awq {
            return Err(format!(
                "{} looks like a GPTQ/AWQ layer, but config.json does not declare \
                 quant_method \"awq\" (the formats pack differently; Nuri reads AWQ's)",
                qw.name
            ));
        }
        let groups = sc.shape.first().copied().unwrap_or(0);
        let layout_ok = n.is_multiple_of(8)
            && groups > 0
            && k.is_multiple_of(groups)
            && (k / groups).is_multiple_of(BLOCK)
            && qw.dtype == DType::I32
            && qz.dtype == DType::I32
            && sc.dtype == DType::F16
            && qw.shape == [k, n / 8]
            && qz.shape == [groups, n / 8]
            && sc.shape == [groups, n];
        if !layout_ok {
            return Err(format!(
                "AWQ tensors {} {:?} {:?}, {} {:?} {:?}, {} {:?} {:?} are not the 4-bit GEMM \
                 layout of a {n}×{k} weight (qweight I32 [{k}, {}], qzeros I32 [k/g, {}], \
                 scales F16 [k/g, {n}], g a multiple of {BLOCK})",
                qw.name,
                qw.dtype,
                qw.shape,
                qz.name,
                qz.dtype,
                qz.shape,
                sc.name,
                sc.dtype,
                sc.shape,
                n / 8,
                n / 8
            ));
        }
        let read = |this: &mut Self, e: &Entry, dtype| this.read_kept(e, dtype).map(|(d, _)| d);
        let qweight = read(self, qw, DType::I32)?;
        let qzeros = read(self, qz, DType::I32)?;
        let scales = read(self, sc, DType::F16)?;
        let (Ok(qweight), Ok(qzeros), Ok(scales)) = (
            qweight.as_slice::<i32>(),
            qzeros.as_slice::<i32>(),
            scales.as_slice::<f16>(),
        ) else {
            return Err("unreadable AWQ tensors".into());
        };
        let bits: Vec<u16> = scales.iter().map(|s| s.to_bits()).collect();
        let q4 = awq_to_q4(qweight, qzeros, &bits, k, n);
        let packed = match wanted {
            Some(Scheme::Q8) => {
                let values = nuri_kernels::quant::dequantize_rows(&q4, k, Scheme::Q4);
                quantize_rows(&values, k, Scheme::Q8, |v| v)
            }
            _ => q4,
        };
        let scheme = if wanted == Some(Scheme::Q8) {
            Scheme::Q8
        } else {
            Scheme::Q4
        };
        Ok((TensorData::new(packed, [n, scheme.row_bytes(k)]), false))
    }

    /// A float weight (`[n, k]` in the file), packed as it is read.
    fn quantize_float(
        &mut self,
        entry: &Entry,
        k: usize,
        n: usize,
        scheme: Scheme,
    ) -> Result<(TensorData, bool), String> {
        if entry.shape != [n, k] {
            return Err(format!(
                "tensor {} has shape {:?}, the model expects {:?}",
                entry.name,
                entry.shape,
                [n, k]
            ));
        }
        let (data, _) = self.read_kept(entry, entry.dtype)?;
        let packed = match entry.dtype {
            DType::F32 => data
                .as_slice::<f32>()
                .map(|v| quantize_rows(v, k, scheme, |x| x)),
            DType::BF16 => data
                .as_slice::<bf16>()
                .map(|v| quantize_rows(v, k, scheme, bf16::to_f32)),
            DType::F16 => data
                .as_slice::<f16>()
                .map(|v| quantize_rows(v, k, scheme, f16::to_f32)),
            other => return Err(format!("tensor {} is {other:?}, not a float", entry.name)),
        }
        .map_err(|e| format!("tensor {}: {e:?}", entry.name))?;
        // The packed rows so far, this tensor as read and its packed rows.
        let held = self.report.bytes - self.report.mapped_bytes
            + data.as_bytes().len() as u64
            + packed.len() as u64;
        self.report.peak_bytes = self.report.peak_bytes.max(held);
        Ok((TensorData::new(packed, [n, scheme.row_bytes(k)]), false))
    }

    /// A tensor in its own dtype: a view of the file's map where there is one (`true`), else
    /// read.
    fn read_kept(&mut self, entry: &Entry, dtype: DType) -> Result<(TensorData, bool), String> {
        if entry.dtype != dtype {
            return Err(format!(
                "{} is {:?}, expected {dtype:?}",
                entry.name, entry.dtype
            ));
        }
        if let Some(view) = self.view(entry, dtype, &entry.shape) {
            return Ok((view, true));
        }
        self.read(entry, dtype, &entry.shape)
            .map(|d| (d, false))
            .map_err(|e| {
                format!(
                    "tensor {} of {}: {e}",
                    entry.name,
                    self.paths[entry.file].display()
                )
            })
    }
}

/// The one problem for every layer a load asked to requantize (`refused`: the checkpoint's
/// bits and the asked bits, per layer), if any.
pub(super) fn refused_summary(refused: &[(u32, u32)]) -> Option<String> {
    let &(have, want) = refused.first()?;
    Some(format!(
        "{} linear layer(s) are kept in {have} bits in the checkpoint; they cannot be \
         requantized to {want} bits (quantize the float checkpoint instead, or load this one \
         without --quantize)",
        refused.len()
    ))
}

/// Hands each layer its packed rows (from the loader's stash, by layer path).
pub fn attach<M: EachLinear>(
    model: &mut M,
    mut packed: BTreeMap<String, TensorData>,
    device: &Device,
) -> Result<(), Vec<String>> {
    model.each_linear("", &mut |path, linear| {
        if let Some(data) = packed.remove(path) {
            // The loader already left the float weight an empty place holder.
            linear.packed = Some(packed_param(data, device));
        }
    });
    if packed.is_empty() {
        Ok(())
    } else {
        Err(packed.into_keys().collect())
    }
}

/// Packed rows as a parameter (Burn `U8`).
fn packed_param(data: TensorData, device: &Device) -> Param<Tensor<2, Int>> {
    Param::initialized(
        ParamId::new(),
        Tensor::<2, Int>::from_data(data, (device, DType::U8)),
    )
}

/// `linear` with its weight as packed rows; the float weight becomes an empty placeholder.
fn set_packed(linear: &mut Linear, data: TensorData, device: &Device) {
    linear.packed = Some(packed_param(data, device));
    let dtype = linear.weight.val().dtype();
    linear.weight = Param::initialized(ParamId::new(), Tensor::empty([0, 0], (device, dtype)));
}

/// Quantizes a model in memory (one built from a preset, or loaded in a float dtype), layer
/// by layer, as [`LoadOptions::quantize`] would have at load time. Returns how many layers
/// were packed.
pub fn quantize_model<M: EachLinear>(model: &mut M, quantize: Quantize) -> usize {
    let mut count = 0;
    model.each_linear("", &mut |path, linear| {
        let [k, n] = linear.weight.val().dims();
        let Some(scheme) = linear
            .packed
            .is_none()
            .then(|| quantize.scheme_for(path, k))
            .flatten()
        else {
            return;
        };
        let w = linear.weight.val();
        let device = w.device();
        // The checkpoint's `[out, in]` rows, in f32.
        let rows = w.transpose().cast(DType::F32).into_data();
        let values = rows.convert::<f32>();
        let values = values.as_slice::<f32>().expect("f32 values");
        let packed = quantize_rows(values, k, scheme, |v| v);
        set_packed(
            linear,
            TensorData::new(packed, [n, scheme.row_bytes(k)]),
            &device,
        );
        count += 1;
    });
    count
}
