#!/usr/bin/env bash
# Data-parallel scaling over MPI on this machine: continued pretraining of the bundled
# clinical-small (hidden 256, 30 k vocabulary) on clinical notes, the same global batch
# (2 micro-batches of 2,048 tokens per step) taken by 1 rank × 1 thread (accumulating both) and by
# 2 ranks × 1 thread (one each, gradients summed with MPI_Allreduce), measured in the same run.
# Prints tokens/s of both, their ratio (goal ≥ 1.8×), and the time and bytes per step spent in
# allreduce; writes the table to bench/mpi-latest.md.
# Needs Open MPI (openmpi-bin, libopenmpi-dev) and the trainer built with MPI:
#   cargo build -p trainer --features mpi --bin trainer && bench/mpi_scaling.sh
set -euo pipefail
cd "$(dirname "$0")/.."
TRAINER=${TRAINER:-target/debug/trainer}
STEPS=${STEPS:-24}
ldd "$TRAINER" | grep libmpi >/dev/null || { echo "$TRAINER is not built with MPI: cargo build -p trainer --features mpi --bin trainer" >&2; exit 2; }
work=$(mktemp -d /tmp/mpi-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
"$TRAINER" prepare data/aci-bench/train.csv data/aci-bench/valid.csv --tokenizer models/clinical-small \
  --max-seq-len 512 --eval-fraction 0.05 --text-column note -o "$work/data" >/dev/null
for ranks in 1 2; do
  cat > "$work/r$ranks.toml" <<TOML
output = "$work/r$ranks"
seed = 5
metrics_every = $((STEPS / 4))
[model]
init = "$PWD/models/clinical-small"
[optimizer]
kind = "stableadamw"
lr = 1e-4
[[phase]]
name = "bench"
data = "$work/data"
steps = $STEPS
batch_tokens = 2048
grad_accum = 2
mask_rate = 0.3
schedule = { kind = "constant" }
TOML
done
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader
"$TRAINER" pretrain --config "$work/r1.toml" --threads 1 >/dev/null 2>&1
mpirun -np 2 --bind-to core "$TRAINER" pretrain --config "$work/r2.toml" --threads 1 >/dev/null 2>&1
python3 - "$work" "$STEPS" <<'PY'
import json, os, platform, sys
work, steps = sys.argv[1], int(sys.argv[2])
def report(ranks):
    lines = [json.loads(l) for l in open(os.path.join(work, f"r{ranks}", "metrics.jsonl"))]
    train = [m for m in lines if m["split"] == "train"][1:]  # the first window warms up
    rate = sum(m["tokens_per_s"] for m in train) / len(train)
    return rate, sum(m["allreduce_s_per_step"] for m in train) / len(train), train[-1]["allreduce_bytes_per_step"], train[-1]["tokens"] / steps
r1, r2 = report(1), report(2)
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
rows = [
    "| ranks × threads | tokens/s | vs 1 rank | allreduce per step | bytes per step |",
    "|---|---|---|---|---|",
    f"| 1 × 1 | {r1[0]:,.0f} | 1.00× | – | – |",
    f"| 2 × 1 | {r2[0]:,.0f} | {r2[0] / r1[0]:.2f}× | {r2[1] * 1e3:.1f} ms | {r2[2] / 1e6:.1f} MB |",
]
text = (f"Data-parallel pretraining of clinical-small over Open MPI (shared memory), {cpu}, "
        f"{os.cpu_count()} cores; global batch 2 × 2,048 tokens ({r1[3]:,.0f} real tokens per step), "
        f"{steps} steps, the first quarter not counted.\n\n" + "\n".join(rows) + "\n")
print(text)
open("bench/mpi-latest.md", "w").write("# bench/mpi_scaling.sh\n\n" + text)
PY
