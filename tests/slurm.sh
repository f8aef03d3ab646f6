#!/usr/bin/env bash
# The cluster recipes run for real on a one-node Slurm cluster made from Debian's packages
# (.ci/slurm.sh, started here and stopped on the way out):
#   1. examples/cluster/submit.sh: a job array of 4 resumable shards over 300 synthetic notes,
#      then the merge as a dependent job (sbatch --wait); the merged file must be byte-identical
#      to one process's `runtime-cli deid` over the same notes, and every job must have
#      COMPLETED;
#   2. data-parallel pretraining started by srun (PMIx) on 2 ranks, equal to one process with
#      the same global batch (the trainer built with --features mpi by the MPI test before).
# Uses the binaries in target/debug built by the tests before it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bin=$root/target/debug
work=$(mktemp -d /tmp/slurm-test.XXXXXX)
trap '.ci/slurm.sh down >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
.ci/slurm.sh up
eval "$(.ci/slurm.sh env)"

# 300 notes with names, dates, ids and places, none of them seen in training.
"$bin/trainer" synth-deid --data data --split test --notes 300 --seed 20 -o "$work/synthetic.jsonl" >/dev/null
python3 - "$work/synthetic.jsonl" "$work/notes.jsonl" <<'PY'
import json, sys
with open(sys.argv[1]) as f, open(sys.argv[2], "w") as out:
    for i, line in enumerate(f):
        out.write(json.dumps({"id": f"note-{i:04d}", "text": json.loads(line)["text"]}) + "\n")
PY
"$bin/runtime-cli" deid "$work/notes.jsonl" -o "$work/single.jsonl" --threads 2 2>/dev/null

# The array and the merge, as a user submits them (the merge waits for every shard).
out=$work/out
submitted=$(INPUT=$work/notes.jsonl OUT=$out TASKS=4 WAIT=1 RUNTIME_CLI=$bin/runtime-cli examples/cluster/submit.sh) \
  || { echo "slurm test: the array or the merge failed"; cat "$out"/logs/* 2>/dev/null; exit 1; }
echo "$submitted"
for job in $(echo "$submitted" | sed -n 's/^\(array\|merge\) job \([0-9]*\).*/\2/p'); do
  .ci/slurm.sh check "$job" || { echo "slurm test: job $job did not complete"; cat "$out"/logs/*; exit 1; }
done
grep -h "^shard" "$out"/logs/deid-*.log | sort
cmp "$out/deid.jsonl" "$work/single.jsonl"
echo "slurm test: 4 array tasks + merge = one process, byte for byte ($(wc -l < "$out/deid.jsonl") notes)"

# Data-parallel pretraining under srun (the MPI test before this one built the trainer with MPI).
if ! ldd "$bin/trainer" | grep libmpi >/dev/null; then
  echo "slurm test: $bin/trainer is not built with MPI (cargo test --workspace --features trainer/mpi --test mpi builds it)"
  exit 1
fi
{
  "$bin/trainer" prepare data/aci-bench/valid.csv --tokenizer tests/fixtures/tiny-modernbert-mlm \
    --max-seq-len 128 --eval-fraction 0.15 --text-column note -o "$work/data" >/dev/null
  for name in one two; do
    cat > "$work/$name.toml" <<TOML
output = "$work/$name"
seed = 3
metrics_every = 5
[model]
init = "$root/tests/fixtures/tiny-modernbert-mlm"
[optimizer]
kind = "stableadamw"
lr = 3e-3
[[phase]]
name = "p"
data = "$work/data"
steps = 10
batch_tokens = 384
grad_accum = 2
mask_rate = 0.3
schedule = { kind = "constant" }
TOML
  done
  "$bin/trainer" pretrain --config "$work/one.toml" --threads 1 2>/dev/null >/dev/null
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_pml=ob1 OMPI_MCA_btl=self,vader
  srun --mpi=pmix --kill-on-bad-exit=1 -n 2 --overcommit "$bin/trainer" pretrain --config "$work/two.toml" --threads 1 >/dev/null 2>"$work/srun.log" \
    || { cat "$work/srun.log"; exit 1; }
  grep -q "data-parallel over 2 ranks" "$work/srun.log" || { cat "$work/srun.log"; echo "slurm test: srun did not start 2 ranks"; exit 1; }
  cmp "$work/one/final/model.safetensors" "$work/two/final/model.safetensors"
  echo "slurm test: srun --mpi=pmix -n 2 trainer pretrain = one process, bit for bit"
}
