#!/usr/bin/env bash
# Builds the de-identification page into web/dist/: the `web` crate for wasm32 (release, or the
# dev profile with --dev), wasm-bindgen's JavaScript glue, and the static files of web/www/.
# Installs wasm-bindgen-cli at exactly the version of the wasm-bindgen crate in Cargo.lock.
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

cargo build -p web --lib --target wasm32-unknown-unknown --profile "$profile"
rm -rf web/dist.tmp && mkdir -p web/dist.tmp/pkg
wasm-bindgen --target web --no-typescript --out-dir web/dist.tmp/pkg --out-name web "${CARGO_TARGET_DIR:-target}/wasm32-unknown-unknown/$dir/web.wasm"
cp -R web/www/. web/dist.tmp/
rm -rf web/dist && mv web/dist.tmp web/dist
echo "[web] built web/dist ($(du -sh web/dist | cut -f1)); serve it with: runtime-cli serve-web --model DIR" >&2
