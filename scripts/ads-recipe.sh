#!/usr/bin/env bash
# The ad-copy recipe (docs/recipes/ads.md): ad examples (product, audience, copy) → chat SFT set → LoRA fine-tune of a
# base model → serve base + adapter → ask /v1/chat/completions for an ad. On a CPU this is a short demonstration and
# the ads are weak; the GPU command line it prints at the end is what a real run uses.
#   ./scripts/ads-recipe.sh                                  # the shipped examples, a short base model trained here
#   ADS_DATA=my-ads.jsonl ADS_BASE=runs/demo-… ADS_TOKENIZER=byte ./scripts/ads-recipe.sh
#   ADS_STEPS=60 ADS_BASE_STEPS=150 ADS_PORT=8090 ./scripts/ads-recipe.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
data_in="$(realpath "${ADS_DATA:-$root/docs/recipes/ads-examples.jsonl}")"
cd "$root"
bash scripts/setup.sh
sc=./supercluster
steps="${ADS_STEPS:-40}"; port="${ADS_PORT:-8090}"
run="runs/ads-lora-$(date +%Y%m%d-%H%M%S)"

# 1. A base model. Yours (ADS_BASE: a run or checkpoint of any family), else a small byte-level GPT trained here on the
#    State of the Union corpus for a minute: enough to show the pipeline, far too small to write good ads.
base="${ADS_BASE:-}"
if [ -z "$base" ]; then
  base="runs/ads-base"
  [ -f data/sotu-byte/meta.json ] || $sc prepare --sample sotu --tokenizer byte --out data/sotu-byte
  [ -d "$base/checkpoints" ] || $sc train --data data/sotu-byte --model small --batch-size 4 --steps "${ADS_BASE_STEPS:-100}" --lr 2e-3 --warmup 10 --out "$base"
fi
# The SFT set must use the base's tokenizer (train refuses another in one line).
tokenizer="${ADS_TOKENIZER:-$([ -n "${ADS_BASE:-}" ] && echo gpt2 || echo byte)}"

# 2. The chat SFT set: one conversation per example, rendered with the template serve uses; only the copy is trained.
mkdir -p data
python3 - "$data_in" data/ads-chat.jsonl <<'PY'
import json, sys
src, dst = sys.argv[1], sys.argv[2]
with open(src, encoding="utf-8") as f, open(dst, "w", encoding="utf-8") as out:
    for n, line in enumerate(f, 1):
        if not line.strip():
            continue
        try:
            ad = json.loads(line)
            user = f"Product: {ad['product']}\nAudience: {ad['audience']}"
            out.write(json.dumps({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": ad["copy"]}]}) + "\n")
        except (ValueError, KeyError, TypeError) as e:
            sys.exit(f"{src}:{n}: expected an object with product, audience and copy ({e})")
PY
# The base's context bounds a packed sequence (byte tokens: 128 characters for the small model); longer examples are
# truncated and counted.
$sc prepare --format chat --input data/ads-chat.jsonl --tokenizer "$tokenizer" --seq-len "${ADS_SEQ_LEN:-128}" --val-fraction 0.1 --out data/ads-chat

# 3. LoRA: the base is frozen; only rank-8 adapters on every projection train (it prints their share and the optimizer bytes).
$sc train --data data/ads-chat --init-from "$base" --lora-rank 8 --lora-alpha 16 --lora-targets q,k,v,o,up,down \
  --batch-size 4 --steps "$steps" --lr 3e-3 --warmup 4 --eval-every 20 --out "$run"

# 4. Serve the base with the adapter under the name "ads", ask it, stop.
$sc serve --checkpoint "$base" --adapter "ads=$run" --port "$port" > "$run/serve.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 1; done
echo; echo "=== /v1/models ==="
curl -s "http://127.0.0.1:$port/v1/models"; echo
echo; echo "=== an ad from the adapter ==="
curl -s "http://127.0.0.1:$port/v1/chat/completions" -H 'Content-Type: application/json' -d '{
  "model": "ads", "max_tokens": 60, "temperature": 0.7, "seed": 1,
  "messages": [{"role": "user", "content": "Product: solar garden lights\nAudience: retirees"}]}'
echo
kill $server; wait $server 2>/dev/null || true; trap - EXIT

cat <<NEXT

=== next ===
# merge the adapter into a plain checkpoint (served, sampled or fine-tuned like any):
./supercluster merge --adapter $run --out ${run}-merged
# the same from Python with the official client (pip install openai), with the server running:
python3 -c 'from openai import OpenAI; c = OpenAI(base_url="http://127.0.0.1:$port/v1", api_key="none"); print(c.chat.completions.create(model="ads", messages=[{"role": "user", "content": "Product: solar garden lights\nAudience: retirees"}], max_tokens=60).choices[0].message.content)'
# a real run, on an NVIDIA GPU: GPT-2 BPE, a GPT-2 base of your own posts, bf16 (see docs/recipes/ads.md)
./supercluster prepare --format chat --input data/ads-chat.jsonl --tokenizer gpt2 --seq-len 512 --out data/ads-chat-gpt2
./supercluster train --data data/ads-chat-gpt2 --init-from runs/posts-gpt2 --lora-rank 16 --lora-alpha 32 --lora-targets q,k,v,o,up,down --lora-dropout 0.05 --device cuda --dtype bf16 --batch-size 16 --steps 600 --lr 2e-4 --warmup 30 --eval-every 100 --out runs/ads-lora
NEXT
