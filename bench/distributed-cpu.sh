#!/usr/bin/env bash
# Data-parallel step time on 1, 2 and 3 CPU ranks of this machine (same global batch), with the time spent in
# collectives, and the time from a SIGKILLed rank to training again under `launch`.
#   bench/distributed-cpu.sh [model] [steps]
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-small}"; steps="${2:-30}"
out=$(mktemp -d)
sc=./supercluster
$sc prepare --sample sotu --tokenizer byte --out "$out/data" > /dev/null
flags=(-np); root=(); [ "$(id -u)" -eq 0 ] && root=(--allow-run-as-root)
for n in 1 2 3; do
  args=(train --data "$out/data" --model "$model" --batch-size $((12 / n)) --steps "$steps" --device cpu --out "$out/r$n")
  if [ "$n" -eq 1 ]; then $sc "${args[@]}" > /dev/null
  else mpirun -np "$n" "${root[@]}" --oversubscribe --bind-to none dotnet .build/cli/Supercluster.Cli.dll "${args[@]}" > /dev/null; fi
  python3 - "$out/r$n/metrics.jsonl" "$n" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"train"' in l][5:]
comm = statistics.median(max(r["rank_comm_ms"]) for r in rows) if rows[0].get("rank_comm_ms") else 0.0
print(f"{sys.argv[2]} rank(s): {statistics.median(r['step_ms'] for r in rows):7.1f} ms/step, {comm:6.1f} ms in collectives, {statistics.median(r['tokens_per_s'] for r in rows):8,.0f} tokens/s")
PY
done
$sc launch --nproc 2 --max-restarts 1 --hang-timeout 30 -- train --data "$out/data" --model "$model" --batch-size 6 --steps 12 \
  --checkpoint-every 4 --device cpu --out "$out/kill" --fault kill:rank=1:step=6 | grep -E "^\[launch\]"
rm -rf "$out"
