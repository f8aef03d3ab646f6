//! `Storage` for `GpuBackend`: uploads, reads, batch layouts and row copies. Each family's ops are
//! implemented in the family's folder.

use cubecl::prelude::*;

use super::tensor::{GpuBackend, GpuIds, GpuSeqs, GpuTensor};
use crate::backend::{check_concat, check_cu_seqlens, check_slice, positions, DType, DeviceInfo, Storage};
use crate::{Error, Result};

impl Storage for GpuBackend {
    type Tensor = GpuTensor;
    type Ids = GpuIds;
    type Seqs = GpuSeqs;

    fn device_info(&self) -> DeviceInfo {
        let d = &self.device;
        let l = &d.limits;
        DeviceInfo {
            backend: d.runtime,
            name: d.adapter_name.clone(),
            max_binding_bytes: self.max_binding_bytes,
            details: vec![
                ("device type".into(), d.device_type.clone()),
                ("graphics API".into(), d.graphics_api.clone()),
                ("driver".into(), d.driver.clone()),
                ("max storage binding".into(), format!("{} bytes", l.max_binding_bytes)),
                ("max workgroups per dimension".into(), l.max_cube_count.to_string()),
                ("max invocations per workgroup".into(), l.max_units_per_cube.to_string()),
                ("workgroup memory".into(), format!("{} bytes", l.max_shared_bytes)),
                ("storage buffers per stage".into(), l.max_storage_buffers.to_string()),
                ("shader-f16".into(), l.f16.to_string()),
                ("weights stored as".into(), self.dtype.name().into()),
                ("activations stored as".into(), self.act.name().into()),
                ("GEMM path".into(), format!("{:?}: {}", self.gemm, self.gemm_summary())),
            ],
        }
    }

    fn dtype(&self) -> DType {
        self.dtype
    }

    fn upload(&self, data: &[f32], shape: &[usize]) -> Result<GpuTensor> {
        self.upload_as(data, shape, self.act)
    }

    fn upload_weight(&self, data: Vec<f32>, shape: &[usize]) -> Result<GpuTensor> {
        // Matrices in the weight dtype; vectors (norm weights, biases) are tiny and stay f32.
        let dtype = if shape.len() >= 2 { self.dtype } else { DType::F32 };
        self.upload_as(&data, shape, dtype)
    }

    fn upload_ids(&self, data: &[u32]) -> Result<GpuIds> {
        if data.len() * 4 > self.max_binding_bytes { // u32 indices
            return Err(Error::limit("upload_ids", format!("{} indices exceed one binding", data.len())));
        }
        let bytes = if data.is_empty() { u32::as_bytes(&[0]) } else { u32::as_bytes(data) };
        Ok(GpuIds { handle: self.client().create_from_slice(bytes), len: data.len(), max: data.iter().copied().max() })
    }

    fn seqs(&self, cu_seqlens: &[u32]) -> Result<GpuSeqs> {
        check_cu_seqlens(cu_seqlens)?;
        let blocks = crate::attention::query_blocks(cu_seqlens);
        let pos = positions(cu_seqlens);
        let seq_ids: Vec<u32> = cu_seqlens.windows(2).enumerate().flat_map(|(b, w)| std::iter::repeat_n(b as u32, (w[1] - w[0]) as usize)).collect();
        Ok(GpuSeqs {
            cu_seqlens: cu_seqlens.to_vec(),
            cu: self.upload_ids(cu_seqlens)?.handle,
            positions: self.upload_ids(&pos)?.handle,
            seq_ids: self.upload_ids(&seq_ids)?.handle,
            n_attn_blocks: blocks.len() / 3,
            attn_blocks: self.upload_ids(&blocks)?.handle,
            tokens: pos.len(),
            longest: cu_seqlens.windows(2).map(|w| (w[1] - w[0]) as usize).max().unwrap_or(0),
        })
    }

    fn shape<'a>(&self, t: &'a GpuTensor) -> &'a [usize] {
        &t.shape
    }

    fn activation_dtype(&self) -> DType {
        self.act
    }

    fn device_memory(&self) -> Option<(u64, u64)> {
        Some(self.memory_usage())
    }

    async fn read(&self, t: &GpuTensor) -> Result<Vec<f32>> {
        let bytes = self.client().read_async(t.parts.clone()).await.map_err(|e| Error::launch("read", format!("{e:?}")))?;
        let mut out = Vec::with_capacity(t.len());
        for b in &bytes {
            match t.dtype {
                DType::F32 => out.extend_from_slice(f32::from_bytes(b)),
                DType::F16 => out.extend(half::f16::from_bytes(b).iter().map(|v| v.to_f32())),
                DType::BF16 | DType::Int8 => unreachable!("GpuBackend::with_dtype refuses bf16 and int8"),
            }
        }
        out.truncate(t.len());
        Ok(out)
    }

    fn slice_rows(&self, x: &GpuTensor, start: usize, end: usize) -> Result<GpuTensor> {
        let cols = check_slice(&x.shape, start, end)?;
        let (xh, ad) = x.act("slice_rows")?;
        let out = GpuTensor::of(self.alloc_as("slice_rows", (end - start) * cols, ad)?, vec![end - start, cols], ad);
        crate::elementwise::copy_range(self, ad, &xh, &out.parts[0], start * cols, 0, (end - start) * cols)?;
        Ok(out)
    }

    fn concat_rows(&self, parts: &[GpuTensor]) -> Result<GpuTensor> {
        let (rows, cols) = check_concat(parts.iter().map(|p| p.shape.as_slice()))?;
        let ad = parts.first().map_or(self.act, |p| p.dtype);
        let out = GpuTensor::of(self.alloc_as("concat_rows", rows * cols, ad)?, vec![rows, cols], ad);
        let mut offset = 0;
        for p in parts {
            let (ph, pd) = p.act("concat_rows")?;
            if pd != ad {
                return Err(Error::shape("concat_rows", format!("parts stored as {} and {}", ad.name(), pd.name())));
            }
            crate::elementwise::copy_range(self, ad, &ph, &out.parts[0], 0, offset, p.len())?;
            offset += p.len();
        }
        Ok(out)
    }
}
