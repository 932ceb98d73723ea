#!/usr/bin/env bash
# CPU training throughput of the small presets and prepare speed, on this machine.
#   bench/cpu-train.sh [steps]
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-60}"
out=$(mktemp -d)
sc=./supercluster
$sc prepare --sample sotu --tokenizer gpt2 --out "$out/sotu-gpt2" | grep -E "time|train|val"
$sc prepare --sample sotu --tokenizer byte --out "$out/sotu-byte" | grep -E "time"
for spec in "tiny byte 16" "small byte 16" "tiny gpt2 8" "small gpt2 8"; do
  set -- $spec
  $sc train --data "$out/sotu-$2" --model "$1" --batch-size "$3" --steps "$steps" --device cpu --out "$out/run-$1-$2" > /dev/null
  # Median tokens/s over the second half of the steps (the first ones warm up allocators and caches).
  python3 - "$out/run-$1-$2/metrics.jsonl" "$1" "$2" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"train"' in l]
tail = rows[len(rows) // 2:]
print(f"{sys.argv[2]:6} {sys.argv[3]:5} tokenizer: {statistics.median(r['tokens_per_s'] for r in tail):>9,.0f} tokens/s  ({statistics.median(r['step_ms'] for r in tail):.1f} ms/step)")
PY
done
rm -rf "$out"
