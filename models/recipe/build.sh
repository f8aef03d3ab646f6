#!/usr/bin/env bash
# Rebuild the two bundled models from the public text in data/, on the CPU, in about 80 minutes
# on 2 cores (most of it pretraining). Every step is a `trainer` command; the
# scratch files go to target/models/, the results to models/clinical-small, models/deid-small
# and models/*.md (the reports the README quotes). On this machine (2 cores): 60 minutes of
# pretraining, 19 for everything else.
#
#   models/recipe/build.sh            # everything (resumes an interrupted pretraining)
#   THREADS=4 DTYPE=f32 models/recipe/build.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
W=target/models
THREADS=${THREADS:-}
DTYPE=${DTYPE:-bf16}            # CPU mixed precision (f32 master weights); f32 also works
T=(cargo run --release -q -p trainer --bin trainer --)
threads=(); [ -n "$THREADS" ] && threads=(--threads "$THREADS")
mkdir -p "$W"

# 1. Corpus (ACI-BENCH, MTS-Dialog, NegEx, ICD-9) with a 5% held-out split, and an
#    8,192-token byte-level BPE vocabulary trained on the training split.
"${T[@]}" corpus --data data --heldout-fraction 0.05 --seed 42 -o "$W/corpus"
"${T[@]}" tokenizer "$W/corpus/train.jsonl" --vocab-size 8192 -o "$W/tokenizer"
"${T[@]}" prepare "$W/corpus/train.jsonl" --eval-input "$W/corpus/heldout.jsonl" \
    --tokenizer "$W/tokenizer" --max-seq-len 512 -o "$W/dataset"

# 2. Pretraining: two phases (30% masking at a constant rate, then 15% with 1-sqrt decay),
#    StableAdamW (models/recipe/pretrain.toml).
resume=(); [ -d "$W/pretrain/checkpoints" ] && [ ! -d "$W/pretrain/final" ] && resume=(--resume)
if [ ! -d "$W/pretrain/final" ]; then
    "${T[@]}" pretrain --config models/recipe/pretrain.toml --dtype "$DTYPE" "${threads[@]}" "${resume[@]}"
fi
"${T[@]}" export "$W/pretrain/final" --dtype f16 -o models/clinical-small

# 3. Held-out masked-token accuracy, the trained model against its untrained initialisation.
{
    echo "# clinical-small: held-out masked-token accuracy"
    echo
    echo "15% of the tokens of the held-out split masked at seeded positions (the same for both); from \`models/recipe/build.sh\`."
    echo
    echo '```'
    "${T[@]}" evaluate --model models/clinical-small --data "$W/dataset" "${threads[@]}" | sed -n 1p
    "${T[@]}" evaluate --init-of models/recipe/pretrain.toml --data "$W/dataset" "${threads[@]}" | sed -n 1p
    echo '```'
} > models/clinical-small.md

# 4. De-identification: synthetic notes (train, validation; a test split with held-out
#    source notes, names, streets and cities), fine-tuning (14 minutes here), scores on the test
#    split and on the two hand-written sets.
"${T[@]}" synth-deid --split train --notes 3000 --seed 1 -o "$W/deid-train.jsonl"
"${T[@]}" synth-deid --split train --notes 300 --seed 3 -o "$W/deid-valid.jsonl"
"${T[@]}" synth-deid --split test --notes 400 --seed 2 -o "$W/deid-test.jsonl"
"${T[@]}" finetune --task token-classification --model models/clinical-small \
    --train "$W/deid-train.jsonl" --eval "$W/deid-valid.jsonl" -o "$W/deid" \
    --epochs 4 --lr 5e-4 --batch-size 16 --max-seq-len 512 --warmup-ratio 0.1 --seed 42 --dtype "$DTYPE" "${threads[@]}"
"${T[@]}" export "$W/deid" --dtype f16 -o models/deid-small
# Scores of what every tool runs (model + rules + dictionaries), and of the model alone.
"${T[@]}" eval-deid --model models/deid-small --data "$W/deid-test.jsonl" -o models/deid-small.md "${threads[@]}"
"${T[@]}" eval-deid --model models/deid-small --data "$W/deid-test.jsonl" --model-only -o models/deid-small-model-only.md "${threads[@]}"
# The hand-written notes no generator made (data/deid-eval/), scored the same way.
"${T[@]}" eval-deid --model models/deid-small --data data/deid-eval/handwritten.txt -o models/deid-small-handwritten.md "${threads[@]}"
"${T[@]}" eval-deid --model models/deid-small --data data/deid-eval/handwritten-2.txt -o models/deid-small-handwritten-2.md "${threads[@]}"
du -sh models/clinical-small models/deid-small
