#!/usr/bin/env bash
# Builds the de-identification page into web/dist/: the `web` crate for wasm32 (release, or the
# dev profile with --dev), wasm-bindgen's JavaScript glue, and the static files of web/www/.
# Two builds of the crate:
#   pkg/          the main build (WebGPU, and the CPU on one thread), stable Rust;
#   pkg-threads/  the CPU on several threads (www/worker.js loads it where the page is
#                 cross-origin isolated): wasm atomics and shared memory, which need the standard
#                 library rebuilt with them (-Z build-std), so a pinned nightly toolchain. It leaves
#                 wgpu out (its WebGPU types are not Send once wasm has threads): CPU backend only.
# Installs wasm-bindgen-cli at exactly the version of the wasm-bindgen crate in Cargo.lock, and
# the nightly toolchain (with rust-src) if it is missing.
# Serve it with `runtime-cli serve-web --model DIR` (or any static server).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=release; dir=release
[ "${1:-}" = "--dev" ] && { profile=dev; dir=debug; }

rustup target list --installed 2>/dev/null | grep -q wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
want=$(awk '/^name = "wasm-bindgen"$/{getline; gsub(/version = |"/,""); print; exit}' Cargo.lock)
if ! command -v wasm-bindgen >/dev/null || [ "$(wasm-bindgen --version | awk '{print $2}')" != "$want" ]; then
  echo "[web] installing wasm-bindgen-cli $want" >&2
  # Not --locked: one of its locked dependencies is not in this registry (see PLATFORM notes).
  cargo install wasm-bindgen-cli --version "$want"
fi

NIGHTLY=nightly-2026-05-20
rustup run "$NIGHTLY" rustc --version >/dev/null 2>&1 && [ -d "$(rustup run "$NIGHTLY" rustc --print sysroot)/lib/rustlib/src/rust/library" ] \
  || rustup toolchain install "$NIGHTLY" --profile minimal --component rust-src

target=${CARGO_TARGET_DIR:-target}
cargo build -p web --lib --target wasm32-unknown-unknown --profile "$profile"
# Shared memory up to 4 GiB (the linker's default maximum is 1 GiB; an 8,192-token note needs more),
# imported so that every worker instantiates the module on the same memory.
threads_flags="-C target-feature=+simd128,+atomics,+bulk-memory,+mutable-globals -C link-arg=--shared-memory -C link-arg=--import-memory \
 -C link-arg=--max-memory=4294967296 -C link-arg=--export=__wasm_init_tls -C link-arg=--export=__tls_size -C link-arg=--export=__tls_align -C link-arg=--export=__tls_base"
RUSTFLAGS="$threads_flags" CARGO_TARGET_DIR="$target/wasm-threads" cargo "+$NIGHTLY" build -p web --lib --target wasm32-unknown-unknown \
  --profile "$profile" --no-default-features --features threads -Z build-std=panic_abort,std
rm -rf web/dist.tmp && mkdir -p web/dist.tmp/pkg web/dist.tmp/pkg-threads
wasm-bindgen --target web --no-typescript --out-dir web/dist.tmp/pkg --out-name web "$target/wasm32-unknown-unknown/$dir/web.wasm"
wasm-bindgen --target web --no-typescript --out-dir web/dist.tmp/pkg-threads --out-name web "$target/wasm-threads/wasm32-unknown-unknown/$dir/web.wasm"
cp -R web/www/. web/dist.tmp/
rm -rf web/dist && mv web/dist.tmp web/dist
echo "[web] built web/dist ($(du -sh web/dist | cut -f1)); serve it with: runtime-cli serve-web --model DIR" >&2
