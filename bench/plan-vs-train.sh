#!/usr/bin/env bash
# `plan` checked against our own engine: for each layout train supports on CPU ranks (1 rank; DP and ZeRO-1/2/3 on 2 ranks;
# TP2 with sequence parallelism; PP2 over 4 micro-batches; TP2 × PP2 on 4 ranks), `plan --device cpu --calibrate` measures
# this machine under the same mpirun and predicts train's step, then `train` runs it; prints predicted vs measured step
# time and communication time (median over the timed steps) and the load average before each pair.
#   bench/plan-vs-train.sh [model] [batch-size] [steps] [seq-len] [layers]   (defaults: small 8 12 128, the preset's layers;
#   ~4-6 min on 2 idle cores). plan times train's step cut to D = min(4, layers per stage) and D/2 layers per stage and
#   extends it to the model's depth: small's 4 layers need no extension; a 5th argument (e.g. 8) deepens model and plan alike.
#   LAYOUTS="2 0 1 1 1,2 1 1 1 1" bench/plan-vs-train.sh     (per layout: ranks, ZeRO stage, TP, PP, micro-batches per step)
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-small}"; mb="${2:-8}"; steps="${3:-12}"; ctx="${4:-128}"   # ctx: train --seq-len (small's context)
depth=(); depth_train=(); [ -n "${5:-}" ] && { depth=(--layers "$5"); depth_train=(--n-layer "$5"); }
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
./supercluster prepare --sample sotu --tokenizer byte --out "$out/data" > /dev/null
vocab=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['vocab_size'])" "$out/data/meta.json")
cli=(dotnet .build/cli/Supercluster.Cli.dll)
root=(); [ "$(id -u)" -eq 0 ] && root=(--allow-run-as-root)
run() { local n=$1; shift; if [ "$n" -eq 1 ]; then "${cli[@]}" "$@"; else mpirun -np "$n" "${root[@]}" --oversubscribe --bind-to none "${cli[@]}" "$@"; fi; }
printf "%-22s %10s %10s %7s %10s %10s %6s\n" layout "pred ms" "train ms" error "pred comm" "train comm" load
IFS=, read -r -a layouts <<< "${LAYOUTS:-1 0 1 1 1,2 0 1 1 1,2 1 1 1 1,2 2 1 1 1,2 3 1 1 1,2 0 2 1 1,2 0 1 2 4,4 0 2 2 4}"
for spec in "${layouts[@]}"; do
  read -r n zero tp pp micro <<< "$spec"
  tp=${tp:-1}; pp=${pp:-1}; micro=${micro:-1}; dp=$((n / tp / pp))
  name="$n rank$([ "$n" -gt 1 ] && echo s || true)"
  [ "$dp" -gt 1 ] && name+=" DP$dp$([ "$zero" -gt 0 ] && echo " ZeRO-$zero" || true)"
  [ "$tp" -gt 1 ] && name+=" TP$tp"; [ "$pp" -gt 1 ] && name+=" PP$pp"; [ "$micro" -gt 1 ] && name+=" m=$micro"
  load=$(cut -d' ' -f1 /proc/loadavg)
  mp=(); [ "$tp" -gt 1 ] && mp=(--sequence-parallel)
  run "$n" plan --device cpu --calibrate --model "$model" --vocab "$vocab" --micro-batch "$mb" --seq "$ctx" --zero "$zero" --tp "$tp" --pp "$pp" \
    "${depth[@]}" --batch $((mb * dp * micro)) --json > "$out/plan.json" 2> "$out/plan.err" || { cat "$out/plan.err" >&2; exit 1; }
  run "$n" train --data "$out/data" --model "$model" --batch-size "$mb" --seq-len "$ctx" --steps "$steps" --zero "$zero" --tp "$tp" --pp "$pp" "${mp[@]}" "${depth_train[@]}" \
    --total-batch-tokens $((mb * dp * micro * ctx)) --device cpu --out "$out/run-${spec// /-}" > "$out/train.log" 2>&1 || { cat "$out/train.log" >&2; exit 1; }
  python3 - "$out/plan.json" "$out/run-${spec// /-}/metrics.jsonl" "$name" "$load" <<'PY'
import json, statistics, sys
text = open(sys.argv[1]).read()
p = json.loads(text[text.index("{"):])["predicted"]   # mpirun may prefix terminal escape codes
rows = [json.loads(l) for l in open(sys.argv[2])]
rows = [r for r in rows if r.get("type", "train") == "train" and "step_ms" in r][3:]   # skip warm-up steps
step = statistics.median(r["step_ms"] for r in rows)
comm = statistics.median(max(r["rank_comm_ms"]) for r in rows) if rows[0].get("rank_comm_ms") else 0.0
pred = p["step"] * 1e3
print(f"{sys.argv[3]:<22} {pred:10.1f} {step:10.1f} {pred / step - 1:+7.1%} {p['communication'] * 1e3:10.2f} {comm:10.2f} {sys.argv[4]:>6}")
PY
done
