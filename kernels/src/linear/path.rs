//! Which of cubek's GEMMs a GPU backend runs its products on, and what it actually ran.

use cubek::matmul::strategy::Strategy;

/// Which of cubek's GEMMs runs the products.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GemmPath {
    /// Products whose two operands are f16: tensor cores (cubek's SimpleCyclicCmma) where the
    /// device allows them, else the unit path; a device that lacks them is remembered (and
    /// reported) and not asked again, any other refusal falls back for that product only. Every
    /// other product: the unit path, so that f32 stays f32 (tensor cores would round f32 operands
    /// to tf32).
    #[default]
    Auto,
    /// cubek's SimpleUnit: registers only, no accelerator; the only path cubecl's WGSL compiler
    /// has (it emits no cooperative matrices), so what runs on wgpu and in browsers.
    Unit,
    /// cubek's SimpleCyclicCmma (plane-level tensor cores); an error where unavailable.
    Cmma,
    /// cubek's DoubleCyclicCmma (tensor cores, double-buffered stages); an error where unavailable.
    DoubleCmma,
    /// The project's register-tiled kernel (`linear/tiled.rs`) for `linear` (inference's x·Wᵀ,
    /// bias fused): no workgroup memory and no barrier, what CPU implementations of WebGPU
    /// (SwiftShader, lavapipe) run fastest. Training's other products stay on the unit path.
    Tiled,
}

impl GemmPath {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "auto" => GemmPath::Auto,
            "unit" => GemmPath::Unit,
            "cmma" => GemmPath::Cmma,
            "double-cmma" => GemmPath::DoubleCmma,
            "tiled" => GemmPath::Tiled,
            _ => return None,
        })
    }
    pub(crate) fn strategy(self) -> Strategy {
        use cubek::matmul::multi_level::Strategy as M;
        Strategy::MultiLevel(match self {
            GemmPath::Unit | GemmPath::Tiled => M::SimpleUnit(Default::default()),
            GemmPath::Auto | GemmPath::Cmma => M::SimpleCyclicCmma(Default::default()),
            GemmPath::DoubleCmma => M::DoubleCyclicCmma(Default::default()),
        })
    }
}

/// What the GEMMs of a backend actually ran (shared by its clones).
#[derive(Debug, Default)]
pub struct GemmLog {
    state: std::sync::Mutex<GemmState>,
}

#[derive(Debug, Default)]
struct GemmState {
    /// Products run per cubek strategy name.
    ran: std::collections::BTreeMap<String, u64>,
    /// Why the device has no tensor-core path (Auto), the first time it said so.
    refused: Option<String>,
    /// Other refusals of the tensor-core path (a shape or layout), by reason: count.
    fallbacks: std::collections::BTreeMap<String, u64>,
}

impl GemmLog {
    pub(crate) fn record(&self, strategy: &Strategy) {
        self.record_name(&strategy.to_string());
    }
    pub(crate) fn record_name(&self, name: &str) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *s.ran.entry(name.to_string()).or_default() += 1;
    }
    pub(crate) fn refused(&self) -> bool {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).refused.is_some()
    }
    pub(crate) fn refuse(&self, why: String) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).refused.get_or_insert(why);
    }
    pub(crate) fn fall_back(&self, why: String) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()).fallbacks.entry(why).or_default() += 1;
    }
    /// e.g. "matmul_simple_unit… ×36; tensor cores refused: …".
    pub fn summary(&self) -> String {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut parts: Vec<String> = s.ran.iter().map(|(name, n)| format!("{name} ×{n}")).collect();
        if parts.is_empty() {
            parts.push("no product run yet".into());
        }
        if let Some(why) = &s.refused {
            parts.push(format!("tensor cores refused: {why}"));
        }
        for (why, n) in &s.fallbacks {
            parts.push(format!("unit path for {n} product(s) tensor cores refused: {why}"));
        }
        parts.join("; ")
    }
}

