#!/usr/bin/env bash
# The demo, end to end: install what is missing, get the State of the Union corpus, tokenize it with GPT-2 BPE,
# train a small GPT for a few minutes on the best device here, write text with it, and print the next three commands
# (serve + dashboard, curl, GPU-sized training).
#   DEMO_STEPS=600 DEMO_MODEL=small ./scripts/demo.sh
#   DEMO_STEPS=20 ./scripts/demo.sh        # short mode (CI's first-run check): same commands, a few steps
#   DEMO_PORT=8081 ./scripts/demo.sh       # port in the printed serve/curl commands (default 8080)
set -euo pipefail
caller="$(pwd -P)"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$root"
bash scripts/setup.sh
sc=./supercluster
# Best device present: on a GPU, GPT-2 BPE and a GPT-2-shaped model; on a CPU, bytes and the 'small' preset
# (a 50k-token output layer alone would make CPU training ~50x slower per token).
if $sc env | grep -q '^cuda available *yes'; then
  on_gpu=1; tokenizer=gpt2; model="${DEMO_MODEL:-gpt2}"; steps="${DEMO_STEPS:-1000}"; batch=16; extra=(--dtype bf16)
else
  on_gpu=0; tokenizer=byte; model="${DEMO_MODEL:-small}"; steps="${DEMO_STEPS:-1500}"; batch=16; extra=()
fi
port="${DEMO_PORT:-8080}"
data="data/sotu-$tokenizer"
run="runs/demo-$(date +%Y%m%d-%H%M%S)"
start=$(date +%s)

[ -f "$data/meta.json" ] || $sc prepare --sample sotu --tokenizer "$tokenizer" --out "$data"
$sc env
# Validation uses train's default --eval-tokens, the same as the eval verb's below, so their losses agree.
$sc train --data "$data" --model "$model" --batch-size "$batch" --steps "$steps" --lr 2e-3 --warmup "$(( steps < 500 ? steps / 10 : 50 ))" \
  --eval-every 250 --sample-every 500 --checkpoint-every 500 --out "$run" "${extra[@]}"
echo
echo "=== samples from $run ==="
$sc sample --checkpoint "$run" --prompt "My fellow citizens," --max-new-tokens 80 --num-samples 2 --temperature 0.8 --top-k 100
$sc eval --checkpoint "$run" --data "$data"
echo
echo "demo finished in $(( $(date +%s) - start )) s"
echo "checkpoints: $root/$run/checkpoints   metrics: $root/$run/metrics.jsonl   config: $root/$run/config.json"

# The next three commands, runnable as printed: relative to the repository root when the demo was started there,
# absolute otherwise.
if [ "$caller" = "$root" ]; then p=""; else p="$root/"; fi
libtorch=""
[ "$on_gpu" = 1 ] || libtorch="SUPERCLUSTER_LIBTORCH=\$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), \"lib\"))') "
cat <<NEXT

=== next ===
# 1. serve the model (OpenAI-compatible API) with the dashboard of your runs at http://127.0.0.1:$port/  (Ctrl+C stops)
${p:-./}supercluster serve --checkpoint $p$run --runs ${p}runs --port $port
# 2. in another terminal, ask it
curl -s http://127.0.0.1:$port/v1/completions -H 'Content-Type: application/json' -d '{"prompt": "My fellow citizens,", "max_tokens": 60}'
# 3. train GPT-2 (124M) with GPT-2 BPE on an NVIDIA GPU$([ "$on_gpu" = 1 ] || echo " (a machine with PyTorch; its CUDA libtorch is loaded)")
${p:-./}supercluster prepare --sample sotu --tokenizer gpt2 --out ${p}data/sotu-gpt2 && ${libtorch}${p:-./}supercluster train --data ${p}data/sotu-gpt2 --model gpt2 --device cuda --dtype bf16 --batch-size 16 --total-batch-tokens 65536 --steps 500 --lr 6e-4 --eval-every 100 --sample-every 250 --checkpoint-every 250 --out ${p}runs/sotu-gpt2
NEXT
