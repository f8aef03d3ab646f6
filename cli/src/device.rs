//! Which backend a command runs on: the device, weight and activation precision, CPU threads.
//! Set up here, before any command code runs.

use kernels::backend::DType;
use kernels::device::{cuda_device, wgpu_device, AdapterChoice};
use kernels::{CpuBackend, GpuBackend};

use crate::args::{ActArg, DTypeArg, Device};
use crate::Failure;

/// The backend a command runs on.
pub enum Chosen {
    Cpu(CpuBackend),
    Gpu(GpuBackend),
}

pub fn choose(device: Device, dtype: DTypeArg, activations: ActArg) -> Result<Chosen, Failure> {
    let dtype = match dtype {
        DTypeArg::F32 => DType::F32,
        DTypeArg::F16 => DType::F16,
        DTypeArg::Bf16 => DType::BF16,
        DTypeArg::Int8 => DType::Int8,
    };
    let act = match activations {
        ActArg::F32 => DType::F32,
        ActArg::F16 => DType::F16,
    };
    if act == DType::F16 && dtype != DType::F16 {
        return Err(Failure("--activations f16 goes with --dtype f16 (f16 end to end); f32 weights with f16 activations is not a supported mix".into()));
    }
    let gpu = |d| -> Result<Chosen, Failure> { Ok(Chosen::Gpu(GpuBackend::new(d).with_dtype(dtype)?.with_activations(act)?)) };
    let cpu = || -> Result<Chosen, Failure> {
        if act == DType::F16 {
            return Err(Failure("--activations f16 needs a GPU with shader-f16; the CPU backend keeps activations in f32 (use --device gpu)".into()));
        }
        Ok(Chosen::Cpu(CpuBackend::new().with_dtype(dtype)?))
    };
    let chosen = match device {
        Device::Cpu => cpu()?,
        Device::Gpu => gpu(wgpu_device(AdapterChoice::Default)?)?,
        Device::Cuda => gpu(cuda_device(0)?)?,
        Device::Auto => match wgpu_device(AdapterChoice::Default) {
            // A software rasteriser (lavapipe) is slower than the CPU backend.
            Ok(d) if d.device_type != "Cpu" && (dtype == DType::F32 || (dtype == DType::F16 && d.limits.f16)) => gpu(d)?,
            _ if dtype == DType::F16 || act == DType::F16 => return Err(Failure(
                "f16 (--dtype f16, --activations f16) needs a GPU with shader-f16; the CPU backend stores f32, bf16 or int8 (use --device gpu, or --dtype f32/bf16/int8)"
                    .into(),
            )),
            _ => cpu()?,
        },
    };
    Ok(chosen)
}

/// Size the CPU thread pool (before anything uses it).
pub fn set_threads(threads: Option<usize>) -> Result<(), Failure> {
    if let Some(n) = threads {
        if n == 0 {
            return Err(Failure("--threads: expected at least 1".into()));
        }
        rayon::ThreadPoolBuilder::new().num_threads(n).build_global().map_err(|e| Failure(format!("--threads {n}: {e}")))?;
    }
    Ok(())
}

/// Run `$body` with `$be` bound to the chosen backend.
#[macro_export]
macro_rules! on_backend {
    ($model:expr, |$be:ident| $body:expr) => {
        match {
            $crate::device::set_threads($model.threads)?;
            $crate::device::choose($model.device, $model.dtype, $model.activations)?
        } {
            $crate::device::Chosen::Cpu($be) => $body,
            $crate::device::Chosen::Gpu($be) => $body,
        }
    };
}
