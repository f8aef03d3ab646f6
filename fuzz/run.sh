#!/usr/bin/env bash
# Fuzzes the parsers users feed files to, each target for a bounded time (FUZZ_SECONDS, default
# 60) from the committed seed corpus (fuzz/corpus/<target>; new inputs go to
# target/fuzz-corpus/<target>, so the committed corpus stays as it is). Stable Rust: cargo-fuzz
# with --sanitizer none (libFuzzer's coverage-guided search; Rust's own checks catch out-of-bounds
# access), debug assertions on. A panic, a run longer than 10 s, or more than 2 GB of memory for
# one input fails the run and leaves the input in fuzz/artifacts/<target>/; replay it with
#   cargo fuzz run --sanitizer none <target> fuzz/artifacts/<target>/<file>
# Installs cargo-fuzz when missing.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${FUZZ_SECONDS:-60}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --quiet
cargo fuzz build --sanitizer none
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for target in $(cargo fuzz list); do
  mkdir -p "../target/fuzz-corpus/$target"
  status=0
  cargo fuzz run --sanitizer none "$target" "../target/fuzz-corpus/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 >"$log" 2>&1 || status=$?
  runs=$(grep -oE "stat::number_of_executed_units: *[0-9]+" "$log" | grep -oE "[0-9]+$" || echo "?")
  peak=$(grep -oE "stat::peak_rss_mb: *[0-9]+" "$log" | grep -oE "[0-9]+$" || echo "?")
  echo "[fuzz] $target: ${seconds} s, $runs inputs, peak RSS $peak MB, exit $status"
  if [ "$status" -ne 0 ]; then
    tail -n 60 "$log"
    exit "$status"
  fi
done
