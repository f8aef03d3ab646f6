//! What the CPU can do, detected once at run time: AVX-512 F/BW/VL (f32 microkernels), AVX512-BF16
//! (bf16 dot products at twice the f32 rate), AVX512-VNNI and AVX-VNNI (int8 dot products). Without
//! them the backend falls back to the `gemm` crate (AVX2/FMA or scalar) and portable loops.

use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Isa {
    pub avx512: bool,
    pub avx512_bf16: bool,
    /// `vpdpbusd` on 512-bit vectors (int8 products).
    pub avx512_vnni: bool,
    /// `vpdpbusd` on 256-bit vectors, VEX-encoded (machines with AVX-VNNI but no AVX-512).
    pub avx_vnni: bool,
}

impl Isa {
    /// The machine's features. `KERNELS_CPU_ISA=generic` forces the portable paths,
    /// `KERNELS_CPU_ISA=avx512` AVX-512 without its BF16 and VNNI dot products, and
    /// `KERNELS_CPU_ISA=avx-vnni` only AVX-VNNI (an AVX2 machine's int8 path), never more than the
    /// machine has: CI runs the CPU tests under each, so every path is covered on one machine.
    pub fn get() -> Isa {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            let found = Isa::detect();
            match std::env::var("KERNELS_CPU_ISA").as_deref() {
                Ok("generic") => Isa::generic(),
                Ok("avx512") => Isa { avx512_bf16: false, avx512_vnni: false, avx_vnni: false, ..found },
                Ok("avx-vnni") => Isa { avx_vnni: found.avx_vnni, ..Isa::generic() },
                _ => found,
            }
        })
    }

    pub fn generic() -> Isa {
        Isa { avx512: false, avx512_bf16: false, avx512_vnni: false, avx_vnni: false }
    }

    #[cfg(target_arch = "x86_64")]
    fn detect() -> Isa {
        let avx512 = std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl");
        Isa {
            avx512,
            avx512_bf16: avx512 && std::arch::is_x86_feature_detected!("avx512bf16"),
            avx512_vnni: avx512 && std::arch::is_x86_feature_detected!("avx512vnni"),
            avx_vnni: std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("avxvnni"),
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn detect() -> Isa {
        Isa::generic()
    }

    pub fn describe(&self) -> String {
        let parts: Vec<&str> = [(self.avx512, "AVX-512"), (self.avx512_bf16, "AVX512-BF16"), (self.avx512_vnni, "AVX512-VNNI"), (self.avx_vnni && !self.avx512_vnni, "AVX-VNNI")]
            .into_iter()
            .filter_map(|(on, name)| on.then_some(name))
            .collect();
        if parts.is_empty() {
            "portable (gemm crate, scalar)".into()
        } else {
            parts.join(" + ")
        }
    }
}
