#!/usr/bin/env bash
# Interleaved 1F1B against plain 1F1B on CPU ranks, the same model and global batch: median step time (steps 2..), the
# pipeline group's bytes sent by rank 0 per step, and the bubble train prints ((p−1)/(v·m+p−1), plan's formula).
#   bench/pipeline-interleave-cpu.sh [pp] [micro-batches] [n-layer] [model] [steps]     (defaults: 2 8 8 tiny 6)
# On an oversubscribed CPU an idle rank's MPI wait spins and competes for cores, so the bubble's cost (and the v-fold
# saving) shows only on an otherwise quiet machine with a core per rank; the printed bubble is the schedule's, exact.
set -euo pipefail
cd "$(dirname "$0")/.."
pp="${1:-2}"; m="${2:-8}"; layers="${3:-8}"; model="${4:-tiny}"; steps="${5:-6}"
seq=64; mb=2
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
./supercluster prepare --sample sotu --tokenizer byte --out "$out/data" > /dev/null
cli=(dotnet .build/cli/Supercluster.Cli.dll)
root=(); [ "$(id -u)" -eq 0 ] && root=(--allow-run-as-root)
echo "model $model n_layer $layers, PP $pp, $m micro-batches of $mb × $seq tokens, $steps steps; load: $(uptime | sed 's/.*load average: //')"
for v in 1 2; do
  mpirun -np "$pp" "${root[@]}" --oversubscribe --bind-to none "${cli[@]}" train --data "$out/data" --model "$model" --n-layer "$layers" \
    --pp "$pp" --interleave "$v" --batch-size "$mb" --seq-len "$seq" --total-batch-tokens $((mb * seq * m)) --steps "$steps" \
    --device cpu --eval-tokens 128 --checkpoint-every 0 --out "$out/v$v" > "$out/v$v.log" 2>&1 || { echo "v=$v failed: $(tail -1 "$out/v$v.log")"; continue; }
  python3 - "$out/v$v/metrics.jsonl" "$out/v$v.log" "$v" <<'PY'
import json, re, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"train"' in l]
timed = rows[1:] or rows
step = statistics.median(r["step_ms"] for r in timed)
pp = statistics.median((r.get("comm_bytes_by_group") or {}).get("pp", 0.0) for r in timed)
bubble = re.search(r"bubble \S+ = ([\d.]+\s?%)", open(sys.argv[2]).read()).group(1)
print(f"v={sys.argv[3]}: {step:8.1f} ms/step (median, min {min(r['step_ms'] for r in timed):.1f})  pp bytes/step (rank 0) {pp / 1e6:.3f} MB  bubble {bubble}")
PY
done
