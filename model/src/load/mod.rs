//! Reading a checkpoint's safetensors straight into the module tree, which the model built
//! without initializing. With [`LoadOptions::mmap`], on the CPU, a tensor already in the
//! dtype it is kept in is not read at all: its parameter is a view of the memory-mapped file
//! (pages come in from the page cache when first used, are shared with it and can be dropped
//! and read again under memory pressure), so loading takes the time of parsing the headers.
//! Otherwise each tensor is read with positioned reads into a buffer of its own (advised into
//! huge pages), converted when its dtype changes, and handed to the parameter. So loading holds the weights once, in
//! their target dtype, plus one tensor in flight; nothing goes through f32 unless f32 is the
//! target. A linear layer's weight keeps the checkpoint's `[out, in]` rows and becomes Burn's
//! `[in, out]` as a transposed view (no copy); `nuri_kernels::linear` reads those rows at
//! memory speed when decoding.
//!
//! Strict as before: a tensor the model lacks, one the checkpoint lacks, a wrong shape or an
//! unreadable dtype is an error that names it; a header that lies about sizes or offsets is an
//! error naming the file before anything is allocated for it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{DType, Device, Tensor, TensorData, bf16, f16};
use regex::Regex;

use crate::weights::WeightsError;

mod header;
mod packed;

use header::{Entry, element_size, read_header};
pub use packed::{Declared, Quantize, attach, awq_to_q4, quantize_model};

/// The largest safetensors header read (the format's own limit is 100 MB).
const MAX_HEADER: u64 = 100_000_000;

/// How a checkpoint's parameters are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Linear layers' weights and embedding tables: the bulk of the bytes, read once per
    /// decoded token.
    pub matrices: DType,
    /// Everything else (norms, biases, the patch embedding), and the activations' dtype.
    pub rest: DType,
    /// On the CPU, use the tensors already in their kept dtype in place, as views of the
    /// memory-mapped files: loading takes the time of parsing the headers and the memory is
    /// the page cache's, touched pages only. Decoding was ~12% slower this way on the
    /// benchmark machine than from the loader's own (huge-page) copies, so it is a choice.
    pub mmap: bool,
    /// Linear layers kept in a quantized format, packed as they are read (on the CPU).
    pub quantize: Option<Quantize>,
}

impl LoadOptions {
    /// Every parameter in `dtype`, copied.
    pub fn all(dtype: DType) -> Self {
        Self {
            matrices: dtype,
            rest: dtype,
            mmap: false,
            quantize: None,
        }
    }

    /// The same, with linear layers quantized as `quantize` says.
    pub fn with_quantize(self, quantize: Option<Quantize>) -> Self {
        Self { quantize, ..self }
    }

    /// The same, read in place from memory-mapped files where it can be (`mmap`).
    pub fn with_mmap(self, mmap: bool) -> Self {
        Self { mmap, ..self }
    }
}

/// What a load read and held.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    /// Weight files read.
    pub files: usize,
    /// Tensors loaded.
    pub tensors: usize,
    /// Bytes of the loaded parameters, in their kept dtypes.
    pub bytes: u64,
    /// Of those, the bytes that are views of the memory-mapped files (not copied).
    pub mapped_bytes: u64,
    /// The most bytes the loader allocated at once: the copied parameters loaded so far, the
    /// tensor being read and, when its dtype changes, the read buffer it is converted from
    /// (memory-mapped views are not allocations).
    pub peak_bytes: u64,
    /// Wall time of reading and placing the tensors.
    pub seconds: f64,
}

/// `bytes` (little-endian `from` values) as a tensor of `to` values.
fn convert(bytes: &[u8], from: DType, to: DType, shape: Vec<usize>) -> TensorData {
    let values: Box<dyn Iterator<Item = f32> + '_> = match from {
        DType::F32 => Box::new(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
        DType::BF16 => Box::new(
            bytes
                .chunks_exact(2)
                .map(|b| bf16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()),
        ),
        _ => Box::new(
            bytes
                .chunks_exact(2)
                .map(|b| f16::from_bits(u16::from_le_bytes([b[0], b[1]])).to_f32()),
        ),
    };
    match to {
        DType::F32 => TensorData::new(values.collect::<Vec<f32>>(), shape),
        DType::BF16 => TensorData::new(values.map(bf16::from_f32).collect::<Vec<_>>(), shape),
        _ => TensorData::new(values.map(f16::from_f32).collect::<Vec<_>>(), shape),
    }
}

/// A zeroed buffer of `count` 1-, 2- or 4-byte values as `E`s (calloc'd: fresh pages are
/// not written twice), advised into huge pages when large (fewer page faults while loading,
/// fewer TLB misses while decoding streams the weights).
fn zeroed<E: burn::tensor::Element>(count: usize) -> Vec<E> {
    fn cast<F, E>(v: Vec<F>) -> Vec<E> {
        assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<E>());
        assert_eq!(std::mem::align_of::<F>(), std::mem::align_of::<E>());
        let mut v = std::mem::ManuallyDrop::new(v);
        // SAFETY: same size and alignment, and all-zero bits are 0 in every element type read
        // here (f32, bf16, f16, u8, i32).
        unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast::<E>(), v.len(), v.capacity()) }
    }
    let values: Vec<E> = match std::mem::size_of::<E>() {
        4 => cast(vec![0u32; count]),
        1 => cast(vec![0u8; count]),
        _ => cast(vec![0u16; count]),
    };
    advise_huge_pages(values.as_ptr().cast(), count * std::mem::size_of::<E>());
    values
}

/// `madvise(MADV_HUGEPAGE)` over the 2 MiB pages inside `[ptr, ptr + len)` (Linux; a hint
/// the kernel may ignore).
fn advise_huge_pages(ptr: *const u8, len: usize) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        const MADV_HUGEPAGE: i32 = 14;
        unsafe extern "C" {
            fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: i32) -> i32;
        }
        let start = (ptr as usize).next_multiple_of(HUGE);
        let end = (ptr as usize + len) / HUGE * HUGE;
        if end > start {
            // SAFETY: the range lies inside a live allocation of ours; the advice changes
            // only how the kernel backs it, never its contents.
            unsafe {
                madvise(start as *mut _, end - start, MADV_HUGEPAGE);
            }
        }
    }
}

/// `count` values of `E` read from `file` at `start` into a new buffer of `shape`.
fn read_typed<E: burn::tensor::Element>(
    file: &File,
    count: usize,
    start: u64,
    shape: Vec<usize>,
) -> std::io::Result<TensorData> {
    let mut values = zeroed::<E>(count);
    // SAFETY: the buffer is initialized; E (f32, bf16, f16) has no invalid bit patterns and
    // the file's bytes are little-endian like this machine's (checked below).
    let bytes = unsafe {
        std::slice::from_raw_parts_mut(
            values.as_mut_ptr().cast::<u8>(),
            count * std::mem::size_of::<E>(),
        )
    };
    const {
        assert!(
            cfg!(target_endian = "little"),
            "safetensors are little-endian"
        )
    };
    file.read_exact_at(bytes, start)?;
    Ok(TensorData::new(values, shape))
}

/// Where a visit of the module tree is: the path and the module types around it.
#[derive(Default)]
struct Place {
    path: Vec<String>,
    containers: Vec<String>,
}

impl Place {
    fn enter(&mut self, name: &str, container_type: &str) {
        self.containers.push(container_type.to_string());
        self.path.push(name.to_string());
    }

    fn exit(&mut self) {
        self.containers.pop();
        self.path.pop();
    }

    /// What the `D`-dimensional parameter here is: a linear layer's weight (which a checkpoint
    /// stores as `[out, in]` rows and the module holds as `[in, out]`), and whether it is one
    /// of the matrices (linear weights, embedding tables) kept in [`LoadOptions::matrices`].
    fn kind<const D: usize>(&self) -> (bool, bool) {
        let container = self.containers.last().map_or("", String::as_str);
        let name = self.path.last().map_or("", String::as_str);
        let rows = container == "Struct:Linear" && name == "weight" && D == 2;
        (rows, rows || container == "Struct:Embedding")
    }
}

impl LoadOptions {
    /// The dtype a parameter is kept in.
    fn dtype_of(&self, matrix: bool) -> DType {
        if matrix { self.matrices } else { self.rest }
    }
}

/// Visits the model's parameters and loads each from the index.
struct Assign<'a> {
    index: &'a BTreeMap<String, Entry>,
    files: &'a [File],
    /// Each file's memory map, where its tensors may be used in place (the CPU).
    maps: &'a [Option<bytes::Bytes>],
    paths: &'a [PathBuf],
    device: Device,
    dtypes: LoadOptions,
    place: Place,
    used: BTreeSet<String>,
    missing: Vec<String>,
    problems: Vec<String>,
    report: LoadReport,
    /// The read buffer of a tensor whose dtype changes.
    scratch: Vec<u8>,
    /// What `config.json` says the checkpoint's quantization is.
    declared: Declared,
    /// Linear layers' packed rows, by layer path, for [`attach`].
    packed: BTreeMap<String, TensorData>,
    /// Packed layers asked for in other bits than the checkpoint's: (have, asked).
    refused: Vec<(u32, u32)>,
}

impl Assign<'_> {
    fn load<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let path = self.place.path.join(".");
        if self.place.kind::<D>().0 {
            let problems = self.problems.len();
            if let Some((data, mapped)) = self.load_packed(&path, &param.lazy_shape().to_vec()) {
                let kept = data.as_bytes().len() as u64;
                if mapped {
                    self.report.mapped_bytes += kept;
                }
                self.report.bytes += kept;
                self.report.tensors += 1;
                let linear = path.strip_suffix(".weight").unwrap_or(&path);
                self.packed.insert(linear.to_string(), data);
                // The float weight's place holder; the layer reads its packed rows.
                let empty = Tensor::<D>::empty([0; D], (&self.device, self.dtypes.rest));
                let id = param.id;
                return param.transform_for_load(empty, id);
            }
            if self.problems.len() > problems {
                return param;
            }
        }
        let Some(entry) = self.index.get(&path) else {
            self.missing.push(path);
            return param;
        };
        self.used.insert(path.clone());
        if !matches!(entry.dtype, DType::F32 | DType::BF16 | DType::F16) {
            self.problems.push(format!(
                "tensor {path} ({}) is {:?}, where the model holds a float",
                entry.name, entry.dtype
            ));
            return param;
        }
        let (rows, matrix) = self.place.kind::<D>();
        let expected = param.lazy_shape().to_vec();
        let stored: Vec<usize> = if rows {
            expected.iter().rev().copied().collect()
        } else {
            expected.clone()
        };
        if entry.shape != stored {
            let found: Vec<usize> = if rows {
                entry.shape.iter().rev().copied().collect()
            } else {
                entry.shape.clone()
            };
            self.problems.push(format!(
                "tensor {path} ({}) has shape {:?}, the model expects {:?}",
                entry.name, found, expected
            ));
            return param;
        }
        let target = self.dtypes.dtype_of(matrix);
        let (data, mapped) = match self.view(entry, target, &stored) {
            Some(data) => (data, true),
            None => match self.read(entry, target, &stored) {
                Ok(data) => (data, false),
                Err(e) => {
                    self.problems.push(format!(
                        "tensor {} of {}: {e}",
                        entry.name,
                        self.paths[entry.file].display()
                    ));
                    return param;
                }
            },
        };
        let kept = data.as_bytes().len() as u64;
        if mapped {
            self.report.mapped_bytes += kept;
        } else {
            let copied = self.report.bytes - self.report.mapped_bytes;
            let scratch = self.scratch.capacity() as u64;
            self.report.peak_bytes = self.report.peak_bytes.max(copied + kept + scratch);
        }
        let tensor = Tensor::<D>::from_data(data, (&self.device, target));
        let tensor = if rows { tensor.swap_dims(0, 1) } else { tensor };
        self.report.bytes += kept;
        self.report.tensors += 1;
        let id = param.id;
        param.transform_for_load(tensor, id)
    }

    /// The tensor as a view of its file's memory map, when there is one (`mmap` on the CPU),
    /// its dtype stays and its bytes are aligned for it.
    fn view(&self, entry: &Entry, target: DType, shape: &[usize]) -> Option<TensorData> {
        let map = self.maps[entry.file]
            .as_ref()
            .filter(|_| entry.dtype == target)?;
        let (start, end) = (entry.start as usize, (entry.start + entry.len) as usize);
        let view = map.slice(start..end);
        if !(view.as_ptr() as usize).is_multiple_of(element_size(target)) {
            return None;
        }
        let bytes = burn::tensor::Bytes::from_shared(view, burn::tensor::AllocationProperty::File);
        Some(TensorData::from_bytes(bytes, shape.to_vec(), target))
    }

    /// The tensor read from its file: straight into the parameter's own (typed, so aligned)
    /// buffer when the dtype stays; otherwise into the reused scratch buffer and converted from
    /// there. Either way each byte of a parameter is written once into fresh memory.
    fn read(
        &mut self,
        entry: &Entry,
        target: DType,
        shape: &[usize],
    ) -> std::io::Result<TensorData> {
        let file = &self.files[entry.file];
        let count = entry.len as usize / element_size(entry.dtype);
        let shape = shape.to_vec();
        if entry.dtype == target {
            return match target {
                DType::F32 => read_typed::<f32>(file, count, entry.start, shape),
                DType::BF16 => read_typed::<bf16>(file, count, entry.start, shape),
                DType::U8 => read_typed::<u8>(file, count, entry.start, shape),
                DType::I32 => read_typed::<i32>(file, count, entry.start, shape),
                _ => read_typed::<f16>(file, count, entry.start, shape),
            };
        }
        self.scratch.resize(entry.len as usize, 0);
        file.read_exact_at(&mut self.scratch, entry.start)?;
        let data = convert(&self.scratch, entry.dtype, target, shape);
        // The converted parameters so far, the read buffer and the converted copy.
        let copied = self.report.bytes - self.report.mapped_bytes;
        let held = copied + self.scratch.len() as u64 + data.as_bytes().len() as u64;
        self.report.peak_bytes = self.report.peak_bytes.max(held);
        Ok(data)
    }
}

impl ModuleMapper for Assign<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.place.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.place.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        self.load(param)
    }
}

/// What [`load_into`] gives back.
pub struct Loaded<M> {
    pub model: M,
    pub report: LoadReport,
    /// The packed rows of the linear layers kept quantized, by layer path, for [`attach`].
    pub packed: BTreeMap<String, TensorData>,
}

/// A checkpoint directory as [`load_into`] reads it.
pub struct Checkpoint<'a> {
    pub dir: &'a Path,
    /// Its weight files.
    pub files: &'a [PathBuf],
    /// Checkpoint name → module path, applied in order.
    pub table: &'a [(&'a str, &'a str)],
    /// The module path of a tensor the checkpoint may carry that the model does not load (a
    /// tied `lm_head.weight`).
    pub tied_copy: Option<&'a str>,
    /// What its `config.json` declares about quantization.
    pub declared: Declared,
}

/// Loads a checkpoint into `model` (built, not initialized).
pub fn load_into<M: Module>(
    model: M,
    checkpoint: Checkpoint<'_>,
    device: &Device,
    dtypes: LoadOptions,
) -> Result<Loaded<M>, WeightsError> {
    let Checkpoint {
        dir,
        files,
        table,
        tied_copy,
        declared,
    } = checkpoint;
    let started = Instant::now();
    let rules: Vec<(Regex, &str)> = table
        .iter()
        .map(|&(p, r)| {
            (
                Regex::new(p).expect("the renaming tables are valid regexes"),
                r,
            )
        })
        .collect();
    let mut index = BTreeMap::new();
    let mut handles = Vec::with_capacity(files.len());
    for (i, path) in files.iter().enumerate() {
        handles.push(read_header(path, i, &rules, &mut index)?);
    }
    // With `mmap`, the CPU reads tensors in place from a memory map; other devices copy them
    // over anyway.
    let on_cpu = dtypes.mmap
        && matches!(
            device.as_dispatch().clone().inner(),
            burn::backend::DispatchDevice::Flex(_)
        );
    let maps: Vec<Option<bytes::Bytes>> = handles
        .iter()
        .map(|file| {
            // SAFETY: the map is read-only; a file truncated while mapped would fault on
            // access (as with any memory-mapped loader), which Nuri does not do to its inputs.
            let map = on_cpu
                .then(|| unsafe { memmap2::Mmap::map(file) }.ok())
                .flatten();
            map.map(bytes::Bytes::from_owner)
        })
        .collect();
    let mut assign = Assign {
        index: &index,
        files: &handles,
        maps: &maps,
        paths: files,
        device: device.clone(),
        dtypes,
        place: Place::default(),
        used: BTreeSet::new(),
        missing: Vec::new(),
        problems: Vec::new(),
        report: LoadReport {
            files: files.len(),
            ..LoadReport::default()
        },
        scratch: Vec::new(),
        declared,
        packed: BTreeMap::new(),
        refused: Vec::new(),
    };
    let model = model.map(&mut assign);
    let dir = dir.to_path_buf();
    if let Some(problem) = packed::refused_summary(&assign.refused) {
        assign.problems.push(problem);
    }
    if !assign.problems.is_empty() {
        return Err(WeightsError::Mismatch {
            dir,
            problems: assign.problems,
        });
    }
    let mut unexpected: Vec<String> = index
        .iter()
        .filter(|(path, _)| !assign.used.contains(*path) && Some(path.as_str()) != tied_copy)
        .map(|(_, e)| e.name.clone())
        .collect();
    if !unexpected.is_empty() {
        unexpected.sort();
        return Err(WeightsError::Unexpected {
            dir,
            names: unexpected,
        });
    }
    if !assign.missing.is_empty() {
        return Err(WeightsError::Missing {
            dir,
            names: assign.missing,
        });
    }
    let mut report = assign.report;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(Loaded {
        model,
        report,
        packed: assign.packed,
    })
}

/// Puts an initialized model's parameters in `dtypes` as a loaded checkpoint holds them:
/// linear weights as `[out, in]` rows seen as `[in, out]`, matrices in `dtypes.matrices`, the
/// rest in `dtypes.rest` (for a model built in memory, e.g. a benchmark's random preset).
pub fn keep_as_loaded<M: Module>(model: M, dtypes: LoadOptions) -> M {
    struct Keep {
        dtypes: LoadOptions,
        place: Place,
    }
    impl ModuleMapper for Keep {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.place.enter(name, container_type);
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.place.exit();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (rows, matrix) = self.place.kind::<D>();
            let target = self.dtypes.dtype_of(matrix);
            param.map(|t| {
                if rows {
                    let device = t.device();
                    let data = t.swap_dims(0, 1).into_data(); // [out, in], contiguous
                    Tensor::<D>::from_data(data, &device)
                        .cast(target)
                        .swap_dims(0, 1)
                } else {
                    t.cast(target)
                }
            })
        }
    }
    model.map(&mut Keep {
        dtypes,
        place: Place::default(),
    })
}
