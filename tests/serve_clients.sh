#!/usr/bin/env bash
# `runtime-cli serve` against real clients from PyPI (huggingface_hub, openai, requests), in a
# virtual environment kept in .ci/cache. Uses the runtime-cli that `cargo test --workspace` built.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.ci/cache/serve-venv
PINS="huggingface_hub==2.4.0 openai==3.63.0 requests==2.34.2 numpy==2.4.6"
if [ ! -f "$VENV/pins" ] || [ "$(cat "$VENV/pins")" != "$PINS" ]; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check $PINS
  echo "$PINS" > "$VENV/pins"
fi
[ -x target/debug/runtime-cli ] || cargo build -q -p runtime-cli
"$VENV/bin/python" tests/serve_clients.py target/debug/runtime-cli
