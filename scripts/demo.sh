#!/usr/bin/env bash
# The demo, end to end: install what is missing, get the State of the Union corpus, tokenize it with GPT-2 BPE,
# train a small GPT for a few minutes on the best device here, then write text with it.
#   DEMO_STEPS=600 DEMO_MODEL=small ./scripts/demo.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
sc=./supercluster
# Best device present: on a GPU, GPT-2 BPE and a GPT-2-shaped model; on a CPU, bytes and the 'small' preset
# (a 50k-token output layer alone would make CPU training ~50x slower per token).
if $sc env | grep -q '^cuda available *yes'; then
  tokenizer=gpt2; model="${DEMO_MODEL:-gpt2}"; steps="${DEMO_STEPS:-1000}"; batch=16; extra=(--dtype bf16)
else
  tokenizer=byte; model="${DEMO_MODEL:-small}"; steps="${DEMO_STEPS:-1500}"; batch=16; extra=()
fi
data="data/sotu-$tokenizer"
run="runs/demo-$(date +%Y%m%d-%H%M%S)"
start=$(date +%s)

[ -f "$data/meta.json" ] || $sc prepare --sample sotu --tokenizer "$tokenizer" --out "$data"
$sc env
$sc train --data "$data" --model "$model" --batch-size "$batch" --steps "$steps" --lr 2e-3 --warmup 50 \
  --eval-every 250 --eval-tokens 65536 --sample-every 500 --checkpoint-every 500 --out "$run" "${extra[@]}"
echo
echo "=== samples from $run ==="
$sc sample --checkpoint "$run" --prompt "My fellow citizens," --max-new-tokens 80 --num-samples 2 --temperature 0.8 --top-k 100
$sc eval --checkpoint "$run" --data "$data"
echo
echo "demo finished in $(( $(date +%s) - start )) s"
echo "checkpoints: $root/$run/checkpoints   metrics: $root/$run/metrics.jsonl   config: $root/$run/config.json"
