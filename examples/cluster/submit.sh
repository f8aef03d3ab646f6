#!/bin/bash
# De-identify a note archive on a Slurm cluster: an array of TASKS shards, then the merge as a
# job that runs only when every shard succeeded (afterok).
#   INPUT=notes.jsonl OUT=/shared/deid TASKS=64 examples/cluster/submit.sh
#   WAIT=1 ...   waits for the merge and exits non-zero unless every job completed
# Also: RUNTIME_CLI (the binary), MODEL (a model folder), DEID_KEY (a surrogate key file),
# TEXT_COLUMN (CSV), SBATCH_ARGS (partition, account, time limit, …).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
: "${INPUT:?INPUT: the notes}"
: "${OUT:?OUT: an output directory every node can write}"
TASKS=${TASKS:-8}
mkdir -p "$OUT/logs"
INPUT=$(realpath "$INPUT"); OUT=$(realpath "$OUT")
export INPUT OUT
# shellcheck disable=SC2086
array=$(sbatch --parsable ${SBATCH_ARGS:-} --array=0-$((TASKS - 1)) --export=ALL \
  --output="$OUT/logs/deid-%A_%a.log" "$here/deid-array.sbatch")
echo "array job $array: $TASKS shards of $INPUT"
wait=()
[ -n "${WAIT:-}" ] && wait=(--wait)
# shellcheck disable=SC2086
merge=$(sbatch --parsable ${SBATCH_ARGS:-} --dependency=afterok:"$array" --kill-on-invalid-dep=yes \
  --export=ALL --output="$OUT/logs/merge-%j.log" ${wait[@]+"${wait[@]}"} "$here/merge.sbatch")
echo "merge job $merge: $OUT/deid.jsonl once every shard succeeded"
