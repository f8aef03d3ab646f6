//! The register-tiled GEMM of `GemmPath::Tiled`: y = x·Wᵀ (+ b), for the WebGPU implementations
//! that run on the CPU (SwiftShader, the browsers' fallback adapter, and Mesa's lavapipe).
//!
//! Each invocation computes a `TM` × `TN` tile of y in registers, walking k with plain loads from
//! global memory: no workgroup memory, no barrier. On a CPU implementation a workgroup barrier
//! suspends and resumes every group of lanes (SwiftShader runs them as coroutines), and a tiled
//! shared-memory GEMM such as cubek's meets one per k-step; this kernel leaves the caching to the
//! CPU's own caches. Rows and columns past the end are clamped for the loads and skipped at the
//! store, so the k loop has no branch. The bias, when given, is added at the store (one launch
//! instead of two).

use cubecl::prelude::*;

/// Rows and columns of y per invocation.
pub const TM: usize = 4;
pub const TN: usize = 4;
/// Invocations per workgroup along columns (x) and rows (y).
pub const WG_X: u32 = 8;
pub const WG_Y: u32 = 8;

#[cube(launch_unchecked)]
pub(crate) fn linear_tiled_kernel<A: Float, W: Float>(x: &[A], w: &[W], b: &[f32], y: &mut [A], n: usize, k: usize, m: usize, #[comptime] bias: bool) {
    let c0 = (CUBE_POS_X * CUBE_DIM_X + UNIT_POS_X) as usize * TN;
    let r0 = (CUBE_POS_Y * CUBE_DIM_Y + UNIT_POS_Y) as usize * TM;
    if r0 < n && c0 < m {
        let mut acc = Array::<f32>::new(TM * TN);
        let mut xr = Array::<usize>::new(TM);
        let mut wr = Array::<usize>::new(TN);
        #[unroll]
        for i in 0..TM {
            xr[i] = min(r0 + i, n - 1) * k;
        }
        #[unroll]
        for j in 0..TN {
            wr[j] = min(c0 + j, m - 1) * k;
        }
        #[unroll]
        for t in 0..TM * TN {
            acc[t] = 0.0f32;
        }
        let mut xv = Array::<f32>::new(TM);
        let mut wv = Array::<f32>::new(TN);
        for kk in 0..k {
            #[unroll]
            for i in 0..TM {
                xv[i] = f32::cast_from(x[xr[i] + kk]);
            }
            #[unroll]
            for j in 0..TN {
                wv[j] = f32::cast_from(w[wr[j] + kk]);
            }
            #[unroll]
            for i in 0..TM {
                #[unroll]
                for j in 0..TN {
                    acc[i * TN + j] += xv[i] * wv[j];
                }
            }
        }
        #[unroll]
        for i in 0..TM {
            #[unroll]
            for j in 0..TN {
                let (r, c) = (r0 + i, c0 + j);
                if r < n && c < m {
                    let mut v = acc[i * TN + j];
                    if bias {
                        v += b[c];
                    }
                    y[r * m + c] = A::cast_from(v);
                }
            }
        }
    }
}
