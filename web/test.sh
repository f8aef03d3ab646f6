#!/usr/bin/env bash
# The browser tests of the de-identification page, in Debian's headless Chromium:
#   1. wasm-bindgen-test: the `web` crate's Rust API in the browser (WebGPU and the wasm CPU path);
#   2. the page itself, driven by playwright-core (web/tests/browser.mjs): WebGPU on SwiftShader,
#      then WebGPU off, each checked against `runtime-cli deid`, with screenshots in target/web-test.
# Needs chromium, chromium-driver, node/npm and a built runtime-cli (target/debug); .ci/run
# installs them. Builds the page with web/build.sh --dev.
set -euo pipefail
cd "$(dirname "$0")/.."
export CHROMEDRIVER=${CHROMEDRIVER:-/usr/bin/chromedriver}
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
export WASM_BINDGEN_TEST_TIMEOUT=${WASM_BINDGEN_TEST_TIMEOUT:-600}

web/build.sh --dev
(cd web && cargo test --target wasm32-unknown-unknown --test wasm)
# runtime-cli as `cargo test --workspace` builds it (a plain `cargo build` would resolve the
# dependencies' features without the dev-dependencies and rebuild cubecl): a no-op after it.
cargo test --workspace --no-run -q
(cd web && { [ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund; })
RUNTIME_CLI=$PWD/target/debug/runtime-cli MODEL=$PWD/tests/fixtures/tiny-modernbert-tokcls \
  NOTES=$PWD/tests/data/deid-sample-notes/obi_robust_deid_notes.jsonl ROOT=$PWD/web/dist OUT=$PWD/target/web-test \
  EXAMPLE=$PWD/examples/notes.txt \
  node web/tests/browser.mjs
