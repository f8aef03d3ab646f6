//! Device creation, apart from the code that uses the device: the binary and the wasm entry point
//! call one of these, then hand the result to [`GpuBackend::new`](crate::gpu::GpuBackend::new).
//!
//! The wgpu device is created with the adapter's real limits (cubecl requests `adapter.limits()`
//! and every adapter feature), and we read those limits back so that the kernels can split work
//! that would not fit one binding.

use cubecl::prelude::*;
#[cfg(feature = "wgpu")]
use cubecl::wgpu::{wgpu, AutoGraphicsApi, RuntimeOptions, WgpuDevice, WgpuDeviceKind, WgpuSetup};

use crate::{Error, Result};

/// What the kernels need to know about a device's limits.
#[derive(Clone, Debug)]
pub struct GpuLimits {
    /// Largest byte range one storage binding may cover.
    pub max_binding_bytes: usize,
    /// Required alignment of a binding's start offset, in bytes.
    pub offset_alignment: usize,
    /// Workgroups per grid dimension.
    pub max_cube_count: u32,
    /// Invocations per workgroup.
    pub max_units_per_cube: u32,
    /// Workgroup (shared) memory per workgroup, in bytes.
    pub max_shared_bytes: usize,
    /// Storage buffers one kernel may bind (cubecl needs one of them for its metadata).
    pub max_storage_buffers: u32,
    /// Whether f16 arithmetic is available (`shader-f16`).
    pub f16: bool,
}

/// A ready GPU: the cubecl client plus what we know about the adapter.
#[derive(Clone)]
pub struct GpuDevice {
    pub client: Client,
    /// `wgpu`, `cuda`.
    pub runtime: &'static str,
    pub adapter_name: String,
    /// e.g. `Cpu` for software adapters such as lavapipe and SwiftShader.
    pub device_type: String,
    pub graphics_api: String,
    /// Driver name and version (e.g. `llvmpipe`, `Mesa 25.0.7`).
    pub driver: String,
    pub limits: GpuLimits,
}

/// Which wgpu adapter to ask for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AdapterChoice {
    /// The system's default (a hardware GPU when there is one).
    #[default]
    Default,
    /// A software rasteriser (lavapipe); what CI has.
    Software,
}

#[cfg(feature = "wgpu")]
fn wgpu_selector(choice: AdapterChoice) -> WgpuDevice {
    match choice {
        AdapterChoice::Default => WgpuDevice::default(),
        AdapterChoice::Software => WgpuDevice::new(WgpuDeviceKind::Cpu),
    }
}

#[cfg(feature = "wgpu")]
fn from_setup(device: WgpuDevice, setup: &WgpuSetup) -> GpuDevice {
    let info = setup.adapter.get_info();
    let l = setup.device.limits();
    let features = setup.device.features();
    let client = cubecl::Device::Wgpu(device).client();
    let props = client.properties();
    let limits = GpuLimits {
        max_binding_bytes: l.max_storage_buffer_binding_size.min(l.max_buffer_size) as usize,
        offset_alignment: props.memory.alignment as usize,
        max_cube_count: l.max_compute_workgroups_per_dimension,
        max_units_per_cube: l.max_compute_invocations_per_workgroup,
        max_shared_bytes: l.max_compute_workgroup_storage_size as usize,
        max_storage_buffers: l.max_storage_buffers_per_shader_stage,
        f16: features.contains(wgpu::Features::SHADER_F16),
    };
    GpuDevice {
        client,
        runtime: "wgpu",
        adapter_name: info.name,
        device_type: format!("{:?}", info.device_type),
        graphics_api: format!("{:?}", info.backend),
        driver: format!("{} {}", info.driver, info.driver_info).trim().to_string(),
        limits,
    }
}

/// What the wgpu entry points say in a build without the `wgpu` feature (the page's threaded
/// CPU build: wgpu's WebGPU types are not `Send` once wasm has threads).
#[cfg(not(feature = "wgpu"))]
fn no_wgpu() -> Error {
    Error::Device("this build has no wgpu backend (built without the `wgpu` feature)".into())
}

/// Create a wgpu device (Vulkan, Metal, DX12) with the adapter's real limits. Blocking; native only.
#[cfg(all(not(target_family = "wasm"), not(feature = "wgpu")))]
pub fn wgpu_device(_choice: AdapterChoice) -> Result<GpuDevice> {
    Err(no_wgpu())
}

/// Create a wgpu device (Vulkan, Metal, DX12) with the adapter's real limits. Blocking; native only.
#[cfg(all(not(target_family = "wasm"), feature = "wgpu"))]
pub fn wgpu_device(choice: AdapterChoice) -> Result<GpuDevice> {
    if let Some(made) = made::get(choice) {
        return Ok(made);
    }
    let device = wgpu_selector(choice);
    let setup = cubecl::wgpu::try_init_setup::<AutoGraphicsApi>(&device, RuntimeOptions::default())
        .map_err(|e| Error::Device(format!("no usable wgpu adapter ({e}); run with the CPU backend instead")))?;
    Ok(made::keep(choice, from_setup(device, &setup)))
}

/// Create a wgpu device asynchronously: the only way in the browser (WebGPU).
#[cfg(not(feature = "wgpu"))]
pub async fn wgpu_device_async(_choice: AdapterChoice) -> Result<GpuDevice> {
    Err(no_wgpu())
}

/// Create a wgpu device asynchronously: the only way in the browser (WebGPU).
/// A page that loads a second model gets the device the first one made.
#[cfg(feature = "wgpu")]
pub async fn wgpu_device_async(choice: AdapterChoice) -> Result<GpuDevice> {
    if let Some(made) = made::get(choice) {
        return Ok(made);
    }
    let device = wgpu_selector(choice);
    // One submission per forward: cubecl submits every 32 launches by default, and in the browser
    // a forward of 33 launches then waited for its first half (bench/browser/profile.md).
    let options = RuntimeOptions::with_tasks_max(Some(256)).map_err(|e| Error::Device(format!("{e:?}")))?;
    let setup = cubecl::wgpu::try_init_setup_async::<AutoGraphicsApi>(&device, options)
        .await
        .map_err(|e| Error::Device(format!("no usable WebGPU/wgpu adapter ({e})")))?;
    Ok(made::keep(choice, from_setup(device, &setup)))
}

/// The wgpu devices made so far. cubecl registers one server per device for the life of the
/// process (or page), and a second set-up of the same device fails ("a server is still
/// registered"), so a second request for an adapter hands back the device made the first time.
/// Native code may ask from any thread; the browser has one.
#[cfg(feature = "wgpu")]
mod made {
    use super::{AdapterChoice, GpuDevice};

    #[cfg(not(target_family = "wasm"))]
    static MADE: std::sync::Mutex<Vec<(AdapterChoice, GpuDevice)>> = std::sync::Mutex::new(Vec::new());

    #[cfg(not(target_family = "wasm"))]
    fn with<T>(f: impl FnOnce(&mut Vec<(AdapterChoice, GpuDevice)>) -> T) -> T {
        f(&mut MADE.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    #[cfg(target_family = "wasm")]
    thread_local! {
        static MADE: std::cell::RefCell<Vec<(AdapterChoice, GpuDevice)>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    #[cfg(target_family = "wasm")]
    fn with<T>(f: impl FnOnce(&mut Vec<(AdapterChoice, GpuDevice)>) -> T) -> T {
        MADE.with(|made| f(&mut made.borrow_mut()))
    }

    pub(super) fn get(choice: AdapterChoice) -> Option<GpuDevice> {
        with(|made| made.iter().find(|(c, _)| *c == choice).map(|(_, d)| d.clone()))
    }

    pub(super) fn keep(choice: AdapterChoice, device: GpuDevice) -> GpuDevice {
        with(|made| made.push((choice, device.clone())));
        device
    }
}

/// Create a CUDA device (NVIDIA, through cubecl's CUDA runtime). Compiled in every build; it
/// runs only in builds with the `cuda` feature (elsewhere it says so).
pub fn cuda_device(index: usize) -> Result<GpuDevice> {
    let device = cubecl::Device::cuda(index).map_err(|e| Error::Device(format!("CUDA device {index}: {e}")))?;
    let client = device.client();
    let props = client.properties().clone();
    let hw = &props.hardware;
    let limits = GpuLimits {
        // Kernels address elements with 32-bit indices: keep every binding below 4 GiB.
        max_binding_bytes: (props.memory.max_page_size as usize).min(u32::MAX as usize),
        offset_alignment: props.memory.alignment as usize,
        max_cube_count: hw.max_cube_count.0.min(hw.max_cube_count.1),
        max_units_per_cube: hw.max_units_per_cube,
        max_shared_bytes: hw.max_shared_memory_size,
        max_storage_buffers: hw.max_bindings + 1,
        f16: half::f16::supported_uses(&client).contains(cubecl::features::TypeUsage::Arithmetic),
    };
    Ok(GpuDevice {
        client,
        runtime: "cuda",
        adapter_name: props.identity.name,
        device_type: "DiscreteGpu".into(),
        graphics_api: "CUDA".into(),
        driver: String::new(),
        limits,
    })
}
