#!/usr/bin/env bash
# The demo, end to end: install what is missing, get the State of the Union corpus, tokenize it with GPT-2 BPE,
# train a small GPT for a few minutes on the best device here, then write text with it.
#   DEMO_STEPS=600 DEMO_MODEL=small ./scripts/demo.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
sc=./supercluster
steps="${DEMO_STEPS:-600}"
model="${DEMO_MODEL:-small}"
data=data/sotu
run="runs/demo-$(date +%Y%m%d-%H%M%S)"
start=$(date +%s)

[ -f "$data/meta.json" ] || $sc prepare --sample sotu --tokenizer gpt2 --out "$data"
$sc env
$sc train --data "$data" --model "$model" --batch-size 16 --steps "$steps" --lr 2e-3 --warmup 30 \
  --eval-every 100 --eval-tokens 65536 --sample-every 200 --checkpoint-every 200 --out "$run"
echo
echo "=== samples from $run ==="
$sc sample --checkpoint "$run" --prompt "My fellow citizens," --max-new-tokens 80 --num-samples 2 --temperature 0.8 --top-k 100
$sc eval --checkpoint "$run" --data "$data"
echo
echo "demo finished in $(( $(date +%s) - start )) s"
echo "checkpoints: $root/$run/checkpoints   metrics: $root/$run/metrics.jsonl   config: $root/$run/config.json"
