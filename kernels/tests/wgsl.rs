//! Every kernel, compiled to WGSL, validated by naga under the browser's rules, so that
//! WebGPU-incompatible code is caught without a browser.
//!
//! The WGSL is the exact text cubecl hands to wgpu: this test runs every kernel family's
//! registered exercise (`wgsl_exercise!` in the family's tests.rs: every op on awkward shapes,
//! every comptime variant the model uses, training ops forward and backward) on the f32,
//! f16-weight and f16-activation backends, and captures each module from cubecl-wgpu's trace
//! log. Every family folder with kernels must have registered one, and every kernel it names must
//! have been compiled. Each module must then
//! - parse and validate with naga with no optional capability (no subgroups, no f64; f16 only
//!   in the f16 variants, which need WebGPU's `shader-f16`),
//! - bind at most 8 storage buffers (WebGPU's default; SwiftShader allows 10),
//! - use at most 256 invocations per workgroup and 16 KiB of workgroup memory.

use std::sync::Mutex;

use kernels::testing::{exercises, gpu, gpu_f16, gpu_f16_activations};
use naga::valid::{Capabilities, ValidationFlags, Validator};

static MODULES: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

struct Capture;

const PREFIX: &str = "[cubecl-wgpu] compiling WGSL module `";

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.target().starts_with("cubecl_wgpu")
    }
    fn log(&self, r: &log::Record) {
        let text = r.args().to_string();
        if let Some(rest) = text.strip_prefix(PREFIX) {
            if let Some((name, source)) = rest.split_once("`\n") {
                MODULES.lock().unwrap().push((name.to_string(), source.to_string()));
            }
        }
    }
    fn flush(&self) {}
}

fn workgroup_size(module: &naga::Module) -> u32 {
    module.entry_points.iter().map(|e| e.workgroup_size.iter().product::<u32>()).max().unwrap_or(0)
}

#[test]
fn every_kernel_validates_as_webgpu_wgsl() {
    static CAPTURE: Capture = Capture;
    log::set_logger(&CAPTURE).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    let families: Vec<&str> = exercises().map(|e| e.family).collect();
    for b in [gpu(), gpu_f16(), gpu_f16_activations()] {
        for e in exercises() {
            (e.run)(&b);
        }
    }
    // Every family folder that holds kernels has registered its exercise.
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
    for entry in std::fs::read_dir(src).unwrap() {
        let dir = entry.unwrap().path();
        let Ok(text) = std::fs::read_to_string(dir.join("mod.rs")) else { continue };
        let family = dir.file_name().unwrap().to_string_lossy().to_string();
        if text.contains("#[cube") && family != "gpu" {
            assert!(families.contains(&family.as_str()), "kernels/src/{family} has kernels but registers no wgsl_exercise!; registered: {families:?}");
        }
    }
    let modules = MODULES.lock().unwrap().clone();
    let names: Vec<&str> = modules.iter().map(|(n, _)| n.as_str()).collect();
    assert!(modules.iter().any(|(_, s)| s.contains("enable f16;")), "no f16 module was compiled");
    for e in exercises() {
        for expected in e.kernels {
            assert!(names.iter().any(|n| n.contains(expected)), "{}: no module for {expected}; captured {names:?}", e.family);
        }
    }
    let mut failures = Vec::new();
    for (name, source) in &modules {
        let module = match naga::front::wgsl::parse_str(source) {
            Ok(m) => m,
            Err(e) => {
                failures.push(format!("{name}: does not parse: {}", e.emit_to_string(source)));
                continue;
            }
        };
        // f16 kernels need WebGPU's `shader-f16` feature (and are only used where it exists).
        let f16 = source.contains("enable f16;");
        let caps = if f16 { Capabilities::SHADER_FLOAT16 } else { Capabilities::empty() };
        if let Err(e) = Validator::new(ValidationFlags::all(), caps).validate(&module) {
            failures.push(format!("{name}: invalid under WebGPU's baseline capabilities{}: {e:?}", if f16 { " + shader-f16" } else { "" }));
        }
        let storage = module.global_variables.iter().filter(|(_, g)| matches!(g.space, naga::AddressSpace::Storage { .. })).count();
        if storage > 8 {
            failures.push(format!("{name}: binds {storage} storage buffers (WebGPU's default limit is 8)"));
        }
        let wg = workgroup_size(&module);
        if wg > 256 {
            failures.push(format!("{name}: {wg} invocations per workgroup (WebGPU allows 256)"));
        }
        let mut layouter = naga::proc::Layouter::default();
        layouter.update(module.to_ctx()).unwrap();
        let shared: u32 = module.global_variables.iter().filter(|(_, g)| g.space == naga::AddressSpace::WorkGroup).map(|(_, g)| layouter[g.ty].size).sum();
        if shared > 16 * 1024 {
            failures.push(format!("{name}: {shared} bytes of workgroup memory (WebGPU guarantees 16384)"));
        }
    }
    assert!(failures.is_empty(), "{} of {} modules fail:\n{}", failures.len(), modules.len(), failures.join("\n"));
    eprintln!("{} WGSL modules validated: {}", modules.len(), names.join(", "));
}
