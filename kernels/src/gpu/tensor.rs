//! What the kernel families use of the cubecl backend: its tensors (one buffer, or row chunks for
//! weights larger than one binding), ids and batch layouts, allocation within the device's
//! limits, launch grids, and the launch macros that pick a kernel's float types. Uploads, reads
//! and batch layouts (`Storage`) are in `backend.rs`; each family implements its own ops.

use cubecl::prelude::*;
use cubecl::server::Handle;

use crate::backend::DType;
use crate::device::{GpuDevice, GpuLimits};
use crate::{Error, Result};

/// A row-major tensor on the GPU, in one or more row chunks.
#[derive(Clone)]
pub struct GpuTensor {
    pub(crate) parts: Vec<Handle>,
    /// Rows per chunk (the last chunk may hold fewer).
    pub(crate) part_rows: usize,
    pub(crate) shape: Vec<usize>,
    /// Element type in memory: a weight's dtype, or the activation dtype (f32, or f16 on a backend
    /// with f16 activations).
    pub(crate) dtype: DType,
}

impl GpuTensor {
    /// An f32 activation in one buffer.
    pub(crate) fn single(handle: Handle, shape: Vec<usize>) -> Self {
        let rows = shape.iter().rev().skip(1).product::<usize>();
        GpuTensor { parts: vec![handle], part_rows: rows.max(1), shape, dtype: DType::F32 }
    }
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// How many bindings (row chunks) hold this tensor.
    pub fn parts_len(&self) -> usize {
        self.parts.len()
    }
    /// (rows, last dim).
    pub(crate) fn matrix(&self) -> (usize, usize) {
        let cols = *self.shape.last().unwrap_or(&1);
        (self.shape.iter().rev().skip(1).product(), cols)
    }
    pub(crate) fn len(&self) -> usize {
        self.shape.iter().product()
    }
    /// The one buffer of an f32 activation.
    pub(crate) fn handle(&self, op: &'static str) -> Result<Handle> {
        if self.dtype != DType::F32 {
            return Err(Error::shape(op, format!("expected an f32 activation, got a {} tensor {:?}", self.dtype.name(), self.shape)));
        }
        self.stored(op)
    }
    /// The one buffer of an activation and its element type (f32, or f16 on a backend with f16
    /// activations).
    pub(crate) fn act(&self, op: &'static str) -> Result<(Handle, DType)> {
        if matches!(self.dtype, DType::BF16 | DType::Int8) {
            return Err(Error::shape(op, format!("expected an f32 or f16 activation, got a {} tensor {:?}", self.dtype.name(), self.shape)));
        }
        Ok((self.stored(op)?, self.dtype))
    }
    /// An activation in one buffer, stored as `dtype`.
    pub(crate) fn of(handle: Handle, shape: Vec<usize>, dtype: DType) -> Self {
        let mut t = GpuTensor::single(handle, shape);
        t.dtype = dtype;
        t
    }
    /// The one buffer of a tensor in any dtype (a weight).
    pub(crate) fn stored(&self, op: &'static str) -> Result<Handle> {
        match self.parts.as_slice() {
            [h] => Ok(h.clone()),
            _ => Err(Error::limit(op, format!("tensor {:?} is split across {} bindings; this op needs it in one", self.shape, self.parts.len()))),
        }
    }
    /// Chunks as (first row, row count, handle).
    pub(crate) fn chunks(&self) -> impl Iterator<Item = (usize, usize, &Handle)> {
        let (rows, _) = self.matrix();
        self.parts.iter().enumerate().map(move |(i, h)| {
            let lo = i * self.part_rows;
            (lo, self.part_rows.min(rows - lo), h)
        })
    }
}

/// A u32 vector on the GPU.
#[derive(Clone)]
pub struct GpuIds {
    pub(crate) handle: Handle,
    pub(crate) len: usize,
    /// Largest value, kept from the upload so launchers can check indices without a read-back.
    pub(crate) max: Option<u32>,
}

/// An unpadded batch on the GPU.
pub struct GpuSeqs {
    pub(crate) cu_seqlens: Vec<u32>,
    /// `cu_seqlens` on the device [B+1].
    pub(crate) cu: Handle,
    /// Position of each token in its sequence [T].
    pub(crate) positions: Handle,
    /// Index of each token's sequence [T].
    pub(crate) seq_ids: Handle,
    /// Attention work list, one (seq_start, seq_end, first_query) triple per query block [n, 3].
    pub(crate) attn_blocks: Handle,
    pub(crate) n_attn_blocks: usize,
    pub(crate) tokens: usize,
    pub(crate) longest: usize,
}

/// The cubecl backend over one device.
#[derive(Clone)]
pub struct GpuBackend {
    pub(crate) device: GpuDevice,
    /// Largest allocation a tensor part may have (≤ the device's binding limit).
    pub(crate) max_binding_bytes: usize,
    /// How `upload_weight` stores parameters.
    pub(crate) dtype: DType,
    /// How `upload` and the inference ops store activations: f32, or f16 (`with_activations`).
    pub(crate) act: DType,
    /// Which cubek GEMM runs the products, and what ran.
    pub(crate) gemm: crate::linear::path::GemmPath,
    pub(crate) gemm_log: std::sync::Arc<crate::linear::path::GemmLog>,
}

/// Launch a `#[cube]` kernel generic over its float type `F` for a tensor stored as `$dtype`.
macro_rules! launch_float {
    ($dtype:expr, $kernel:ident ( $($arg:expr),* $(,)? )) => {
        match $dtype {
            $crate::backend::DType::F32 => unsafe { $kernel::launch_unchecked::<f32>($($arg),*) },
            $crate::backend::DType::F16 => unsafe { $kernel::launch_unchecked::<half::f16>($($arg),*) },
            $crate::backend::DType::BF16 | $crate::backend::DType::Int8 => unreachable!("GpuBackend::with_dtype refuses bf16 and int8"),
        }
    };
}
pub(crate) use launch_float;

/// Launch a kernel generic over `<A, W>`: activations stored as `$adtype` (f32 or f16) and
/// weights stored as `$wdtype`.
macro_rules! launch_pair {
    ($adtype:expr, $wdtype:expr, $kernel:ident ( $($arg:expr),* $(,)? )) => {
        match ($adtype, $wdtype) {
            ($crate::backend::DType::F32, $crate::backend::DType::F32) => unsafe { $kernel::launch_unchecked::<f32, f32>($($arg),*) },
            ($crate::backend::DType::F32, $crate::backend::DType::F16) => unsafe { $kernel::launch_unchecked::<f32, half::f16>($($arg),*) },
            ($crate::backend::DType::F16, $crate::backend::DType::F32) => unsafe { $kernel::launch_unchecked::<half::f16, f32>($($arg),*) },
            ($crate::backend::DType::F16, $crate::backend::DType::F16) => unsafe { $kernel::launch_unchecked::<half::f16, half::f16>($($arg),*) },
            _ => unreachable!("GpuBackend::with_dtype refuses bf16"),
        }
    };
}
pub(crate) use launch_pair;


impl GpuBackend {
    /// A backend with f32 weights.
    pub fn new(device: GpuDevice) -> Self {
        let max_binding_bytes = device.limits.max_binding_bytes;
        GpuBackend { device, max_binding_bytes, dtype: DType::F32, act: DType::F32, gemm: Default::default(), gemm_log: Default::default() }
    }

    /// f16 end to end (weights and activations) where the adapter has `shader-f16`, else f32.
    pub fn f16_where_supported(device: GpuDevice) -> Self {
        let f16 = device.limits.f16;
        let b = GpuBackend::new(device);
        if f16 {
            GpuBackend { dtype: DType::F16, act: DType::F16, ..b }
        } else {
            b
        }
    }

    /// Run the products on `path` (default `Auto`: tensor cores where available).
    pub fn with_gemm(mut self, path: crate::linear::path::GemmPath) -> Self {
        self.gemm = path;
        self.gemm_log = Default::default();
        self
    }

    /// Which GEMMs ran so far, and why tensor cores were refused if they were.
    pub fn gemm_summary(&self) -> String {
        self.gemm_log.summary()
    }

    /// Bytes of device memory on every stream: (in use now, peak reserved). The peak counts, per
    /// pool, the larger of what it holds now and its most pages ever held times their size (for
    /// pools of fixed-size pages; the others return memory only under pressure, so what they
    /// hold now is their peak).
    pub fn memory_usage(&self) -> (u64, u64) {
        use cubecl::MemoryPoolKind;
        let report = self.client().memory_report(cubecl::MemoryScope::Device);
        let mut peak = 0u64;
        for stream in &report.streams {
            let pools = stream.pools.dynamic.iter().chain([&stream.pools.persistent, &stream.pools.dedicated]).chain(stream.auxiliary.iter().flat_map(|a| {
                a.pools.dynamic.iter().chain([&a.pools.persistent, &a.pools.dedicated])
            }));
            for pool in pools {
                let paged = match pool.kind {
                    MemoryPoolKind::Sliced { page_size, .. } | MemoryPoolKind::Adaptive { page_size, .. } => pool.pages_peak * page_size,
                    _ => 0,
                };
                peak += paged.max(pool.usage.bytes_reserved);
            }
        }
        (report.usage().bytes_in_use, peak)
    }

    /// Store weights as `dtype`; f16 needs an adapter with `shader-f16`.
    pub fn with_dtype(mut self, dtype: DType) -> Result<Self> {
        if dtype == DType::BF16 {
            return Err(Error::Device("WGSL has no bf16: the GPU backend stores weights as f32 or f16".into()));
        }
        if dtype == DType::Int8 {
            return Err(Error::Device("int8 products run on the CPU backend; the GPU backend stores weights as f32 or f16".into()));
        }
        if dtype == DType::F16 && !self.device.limits.f16 {
            return Err(Error::Device(format!("{} has no shader-f16 support; use f32", self.device.adapter_name)));
        }
        self.dtype = dtype;
        Ok(self)
    }

    /// Store activations as `dtype` too: f16 end to end (f16 in memory, f32 arithmetic and
    /// accumulation inside every kernel, GEMMs with f16 operands and f32 accumulators), or f32.
    /// Inference only: the training ops take f32 tensors.
    pub fn with_activations(mut self, dtype: DType) -> Result<Self> {
        match dtype {
            DType::BF16 | DType::Int8 => return Err(Error::Device(format!("the GPU backend stores activations as f32 or f16, not {}", dtype.name()))),
            DType::F16 if !self.device.limits.f16 => return Err(Error::Device(format!("{} has no shader-f16 support; use f32", self.device.adapter_name))),
            _ => {}
        }
        self.act = dtype;
        Ok(self)
    }

    /// A new buffer of `elems` values stored as `dtype`; refused above one binding.
    pub(crate) fn alloc_as(&self, op: &'static str, elems: usize, dtype: DType) -> Result<Handle> {
        let bytes = elems * dtype.size();
        if bytes > self.max_binding_bytes {
            return Err(Error::limit(
                op,
                format!("an output of {elems} {} values ({bytes} bytes) exceeds the device's {} bytes per binding; process fewer rows at a time", dtype.name(), self.max_binding_bytes),
            ));
        }
        // Buffer sizes stay multiples of 4 bytes (an odd number of f16 values is padded).
        Ok(self.client().empty(bytes.next_multiple_of(4).max(4)))
    }

    /// Pretend the device binds at most `bytes` per tensor, so that tests can exercise the
    /// chunked-weight paths with tiny models. Never above the real limit.
    pub fn with_max_binding_bytes(mut self, bytes: usize) -> Self {
        self.max_binding_bytes = bytes.min(self.device.limits.max_binding_bytes);
        self
    }

    pub fn client(&self) -> &Client {
        &self.device.client
    }
    pub fn limits(&self) -> &GpuLimits {
        &self.device.limits
    }
    pub fn device(&self) -> &GpuDevice {
        &self.device
    }

    /// A new f32 buffer of `elems` values; refused (not truncated) above one binding.
    pub(crate) fn alloc(&self, op: &'static str, elems: usize) -> Result<Handle> {
        self.alloc_as(op, elems, DType::F32)
    }

    /// A grid of `cubes` workgroups, spread over x and y when one dimension is not enough.
    /// Kernels index it through the linear `CUBE_POS`.
    pub(crate) fn grid(&self, op: &'static str, cubes: usize) -> Result<CubeCount> {
        let max = self.limits().max_cube_count as usize;
        if cubes <= max {
            return Ok(CubeCount::Static(cubes.max(1) as u32, 1, 1));
        }
        let y = cubes.div_ceil(max);
        if y > max {
            return Err(Error::limit(op, format!("{cubes} workgroups exceed the device's {max} × {max} grid")));
        }
        Ok(CubeCount::Static(cubes.div_ceil(y) as u32, y as u32, 1))
    }

    /// Grid and workgroup size for one invocation per element, `units` per workgroup.
    pub(crate) fn elementwise(&self, op: &'static str, elems: usize, units: u32) -> Result<(CubeCount, CubeDim)> {
        Ok((self.grid(op, elems.div_ceil(units as usize))?, CubeDim::new_1d(units)))
    }

    pub(crate) fn upload_bytes(&self, data: &[f32], dtype: DType) -> Handle {
        let data = if data.is_empty() { &[0.0f32][..] } else { data };
        match dtype {
            DType::F32 => self.client().create_from_slice(f32::as_bytes(data)),
            DType::F16 => {
                let halves: Vec<half::f16> = data.iter().map(|&v| half::f16::from_f32(v)).collect();
                self.client().create_from_slice(half::f16::as_bytes(&halves))
            }
            DType::BF16 | DType::Int8 => unreachable!("GpuBackend::with_dtype refuses bf16 and int8"),
        }
    }
}

/// Invocations per workgroup for element-wise kernels (≤ 256 everywhere, WebGPU included).
pub(crate) const ELEMWISE_UNITS: u32 = 256;

impl GpuBackend {
    /// Rows per part of a tensor of `shape` stored as `dtype`: every row when it fits one binding,
    /// else as many as one binding holds (`None` when not even one row fits, or it is not a matrix).
    pub(crate) fn rows_per_part(&self, shape: &[usize], dtype: DType) -> Option<usize> {
        let elems: usize = shape.iter().product();
        let rows = shape.iter().rev().skip(1).product::<usize>();
        if elems * dtype.size() <= self.max_binding_bytes {
            return Some(rows.max(1));
        }
        let row_bytes = shape.last().copied().unwrap_or(1).max(1) * dtype.size();
        (row_bytes <= self.max_binding_bytes && shape.len() >= 2).then(|| self.max_binding_bytes / row_bytes)
    }

    /// A tensor stored as `dtype`, in row chunks when it exceeds one binding.
    pub(crate) fn upload_as(&self, data: &[f32], shape: &[usize], dtype: DType) -> Result<GpuTensor> {
        if data.len() != shape.iter().product::<usize>() {
            return Err(Error::shape("upload", format!("{} values for shape {shape:?}", data.len())));
        }
        let cols = *shape.last().unwrap_or(&1);
        if data.len() * dtype.size() <= self.max_binding_bytes {
            return Ok(GpuTensor::of(self.upload_bytes(data, dtype), shape.to_vec(), dtype));
        }
        let Some(part_rows) = self.rows_per_part(shape, dtype) else {
            let row_bytes = cols.max(1) * dtype.size();
            return Err(Error::limit("upload", format!("one row of {shape:?} ({row_bytes} bytes) exceeds the device's {} bytes per binding", self.max_binding_bytes)));
        };
        let parts = data.chunks(part_rows * cols).map(|c| self.upload_bytes(c, dtype)).collect();
        Ok(GpuTensor { parts, part_rows, shape: shape.to_vec(), dtype })
    }

    /// A new (uninitialised) f32 tensor laid out like `upload` lays out one of this shape: one
    /// buffer when it fits a binding, else row chunks. For outputs that may be as large as a
    /// parameter (gradients, optimizer states); the element-wise ops accept such tensors part by
    /// part.
    pub(crate) fn alloc_parts(&self, op: &'static str, shape: &[usize]) -> Result<GpuTensor> {
        let elems: usize = shape.iter().product();
        if elems * 4 <= self.max_binding_bytes {
            return Ok(GpuTensor::single(self.alloc(op, elems)?, shape.to_vec()));
        }
        let part_rows = self.rows_per_part(shape, DType::F32).ok_or_else(|| Error::limit(op, format!("one row of {shape:?} exceeds the device's {} bytes per binding", self.max_binding_bytes)))?;
        let cols = *shape.last().unwrap_or(&1);
        let rows: usize = shape.iter().rev().skip(1).product();
        let parts = (0..rows.div_ceil(part_rows)).map(|i| self.client().empty((part_rows.min(rows - i * part_rows) * cols * 4).max(4))).collect();
        Ok(GpuTensor { parts, part_rows, shape: shape.to_vec(), dtype: DType::F32 })
    }
}

impl GpuTensor {
    /// The f32 parts of a tensor that element-wise ops walk: (handle, element count) per part.
    pub(crate) fn f32_parts(&self, op: &'static str) -> Result<Vec<(Handle, usize)>> {
        if self.dtype != DType::F32 {
            return Err(Error::shape(op, format!("expected an f32 tensor, got a {} tensor {:?}", self.dtype.name(), self.shape)));
        }
        let (_, cols) = self.matrix();
        Ok(self.chunks().map(|(_, rows, h)| (h.clone(), rows * cols)).collect())
    }

    /// Whether two tensors have the same shape and the same row chunks.
    pub(crate) fn same_layout(&self, other: &GpuTensor) -> bool {
        self.shape == other.shape && self.parts.len() == other.parts.len() && (self.parts.len() == 1 || self.part_rows == other.part_rows)
    }
}

