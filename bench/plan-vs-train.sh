#!/usr/bin/env bash
# `plan` checked against our own engine: for each layout train supports on CPU ranks (1 rank, DP on 2 ranks, ZeRO-1 on 2
# ranks), `plan --device cpu --calibrate` measures this machine under the same mpirun and predicts train's step, then
# `train` runs it; prints predicted vs measured step time and communication time (median over the timed steps).
#   bench/plan-vs-train.sh [model] [batch-size] [steps]      (defaults: small 8 12; ~1-2 min of CPU on 2 idle cores)
#   LAYOUTS="2 0,2 1" bench/plan-vs-train.sh               (ranks and ZeRO stage of each layout; default "1 0,2 0,2 1")
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-small}"; mb="${2:-8}"; steps="${3:-12}"
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
./supercluster prepare --sample sotu --tokenizer byte --out "$out/data" > /dev/null
vocab=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['vocab_size'])" "$out/data/meta.json")
cli=(dotnet .build/cli/Supercluster.Cli.dll)
root=(); [ "$(id -u)" -eq 0 ] && root=(--allow-run-as-root)
run() { local n=$1; shift; if [ "$n" -eq 1 ]; then "${cli[@]}" "$@"; else mpirun -np "$n" "${root[@]}" --oversubscribe --bind-to none "${cli[@]}" "$@"; fi; }
printf "%-22s %12s %12s %7s %12s %12s\n" layout "pred ms" "train ms" error "pred comm" "train comm"
IFS=, read -r -a layouts <<< "${LAYOUTS:-1 0,2 0,2 1}"
for spec in "${layouts[@]}"; do
  read -r n zero <<< "$spec"
  name="$([ "$n" -eq 1 ] && echo "1 rank" || echo "$n ranks $([ "$zero" -eq 1 ] && echo ZeRO-1 || echo DP)")"
  run "$n" plan --device cpu --calibrate --model "$model" --vocab "$vocab" --micro-batch "$mb" --zero "$zero" --json \
    > "$out/plan.json" 2> "$out/plan.err" || { cat "$out/plan.err" >&2; exit 1; }
  run "$n" train --data "$out/data" --model "$model" --batch-size "$mb" --steps "$steps" --zero "$zero" --device cpu \
    --out "$out/run-$n-$zero" > "$out/train.log" 2>&1 || { cat "$out/train.log" >&2; exit 1; }
  python3 - "$out/plan.json" "$out/run-$n-$zero/metrics.jsonl" "$name" <<'PY'
import json, statistics, sys
text = open(sys.argv[1]).read()
p = json.loads(text[text.index("{"):])["predicted"]   # mpirun may prefix terminal escape codes
rows = [json.loads(l) for l in open(sys.argv[2])]
rows = [r for r in rows if r.get("type", "train") == "train" and "step_ms" in r][3:]   # skip warm-up steps
step = statistics.median(r["step_ms"] for r in rows)
comm = statistics.median(max(r["rank_comm_ms"]) for r in rows) if rows[0].get("rank_comm_ms") else 0.0
pred = p["step"] * 1e3
print(f"{sys.argv[3]:<22} {pred:12.1f} {step:12.1f} {pred / step - 1:+7.1%} {p['communication'] * 1e3:12.2f} {comm:12.2f}")
PY
done
