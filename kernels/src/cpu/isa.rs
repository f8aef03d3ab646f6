//! What the CPU can do, detected once at run time: AVX-512 F/BW/VL (f32 microkernels), AVX512-BF16
//! (bf16 dot products at twice the f32 rate). Without them the backend falls back to the `gemm`
//! crate (AVX2/FMA or scalar) and scalar loops.

use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Isa {
    pub avx512: bool,
    pub avx512_bf16: bool,
}

impl Isa {
    /// The machine's features. `KERNELS_CPU_ISA=generic` forces the portable paths and
    /// `KERNELS_CPU_ISA=avx512` AVX-512 without its BF16 dot products (never more than the machine
    /// has): CI runs the CPU tests under each, so every path is covered on one machine.
    pub fn get() -> Isa {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            let found = Isa::detect();
            match std::env::var("KERNELS_CPU_ISA").as_deref() {
                Ok("generic") => Isa::generic(),
                Ok("avx512") => Isa { avx512_bf16: false, ..found },
                _ => found,
            }
        })
    }

    pub fn generic() -> Isa {
        Isa { avx512: false, avx512_bf16: false }
    }

    #[cfg(target_arch = "x86_64")]
    fn detect() -> Isa {
        let avx512 = std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl");
        Isa { avx512, avx512_bf16: avx512 && std::arch::is_x86_feature_detected!("avx512bf16") }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn detect() -> Isa {
        Isa::generic()
    }

    pub fn describe(&self) -> &'static str {
        match (self.avx512, self.avx512_bf16) {
            (true, true) => "AVX-512 + AVX512-BF16",
            (true, false) => "AVX-512",
            _ => "portable (gemm crate, scalar)",
        }
    }
}
