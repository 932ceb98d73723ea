#!/usr/bin/env bash
# `plan` checked against our own engine: for each layout train supports on CPU ranks (1 rank; DP and ZeRO-1/2/3 on 2 ranks;
# TP2 with sequence parallelism; PP2 over 4 micro-batches; TP2 × PP2 on 4 ranks), `plan --device cpu --calibrate` measures
# this machine under the same mpirun and predicts train's step, then `train` runs it. REPEATS rounds (default 3), each
# round every layout once (interleaved, so a change of load hits every layout and both sides); then per layout:
#   pred ms / train ms   median over the rounds of plan's predicted step and of train's median timed step (after 3
#                        warm-up steps; per step the slowest rank's rank_step_ms, as the calibration counts the slowest
#                        rank per repetition); the error compares these medians: the calibration reports the median of
#                        its repetitions as train's steps are summarised here, so median-of-N on both sides;
#   min pred / min train the minimum over the rounds (what a quieter machine approaches), and the error of the minima;
#   pred comm / train comm median predicted and measured seconds inside collectives (rank_comm_ms, slowest rank), ms;
#   load                 the load average before each round's pair, min–max;
#   then per layout the step by phase (data, forward, backward, optimizer with the gradient sync), the calibration's deep
#   cut (the whole model when a stage holds ≤ 4 layers) vs train's rank_phase_ms, and train's time between steps.
#   bench/plan-vs-train.sh [model] [batch-size] [steps] [seq-len] [layers]   (defaults: small 8 12 128, the preset's layers;
#   ~4-6 min per round on 2 idle cores). plan times train's step cut to D = min(4, layers per stage) and D/2 layers per stage and
#   extends it to the model's depth: small's 4 layers need no extension; a 5th argument (e.g. 8) deepens model and plan alike.
#   LAYOUTS="2 0 1 1 1,2 1 1 1 1" REPEATS=5 bench/plan-vs-train.sh   (per layout: ranks, ZeRO stage, TP, PP, micro-batches per step)
#   ROUNDS=FILE keeps every round's record (JSON lines); DOTNET_TieredCompilation=1 keeps the runtime's tiered JIT (default 0, below).
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-small}"; mb="${2:-8}"; steps="${3:-12}"; ctx="${4:-128}"   # ctx: train --seq-len (small's context)
repeats="${REPEATS:-3}"
[[ "$repeats" =~ ^[1-9][0-9]*$ ]] || { echo "REPEATS=$repeats: expected a positive integer (rounds per layout)" >&2; exit 2; }
[[ "$steps" =~ ^[0-9]+$ ]] && [ "$steps" -ge 5 ] || { echo "steps=$steps: expected an integer ≥ 5 (3 warm-up steps are skipped)" >&2; exit 2; }
depth=(); depth_train=(); [ -n "${5:-}" ] && { depth=(--layers "$5"); depth_train=(--n-layer "$5"); }
out=$(mktemp -d); trap '[ -n "${ROUNDS:-}" ] && cp "$out/rounds.jsonl" "$ROUNDS"; rm -rf "$out"' EXIT   # ROUNDS=FILE keeps every round's record
./supercluster prepare --sample sotu --tokenizer byte --out "$out/data" > /dev/null
vocab=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['vocab_size'])" "$out/data/meta.json")
cli=(dotnet .build/cli/Supercluster.Cli.dll)
root=(); [ "$(id -u)" -eq 0 ] && root=(--allow-run-as-root)
# Both sides in the steady state: with tiered compilation the runtime re-JITs hot methods in the background for the
# first ~30-60 steps (a method called once per step reaches the 30-call threshold at step 30), on the cores the ranks
# use, and train's timed steps 4..N caught 2-4x the calibration's JIT time (docs/planning.md). Off, everything is
# compiled once, optimised, in the first step. DOTNET_TieredCompilation=1 runs the default runtime for an A/B.
export DOTNET_TieredCompilation="${DOTNET_TieredCompilation:-0}"
env=(-x DOTNET_TieredCompilation)
run() { local n=$1; shift; if [ "$n" -eq 1 ]; then "${cli[@]}" "$@"; else mpirun -np "$n" "${root[@]}" "${env[@]}" --oversubscribe --bind-to none "${cli[@]}" "$@"; fi; }
IFS=, read -r -a layouts <<< "${LAYOUTS:-1 0 1 1 1,2 0 1 1 1,2 1 1 1 1,2 2 1 1 1,2 3 1 1 1,2 0 2 1 1,2 0 1 2 4,4 0 2 2 4}"
for round in $(seq 1 "$repeats"); do
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
    rm -rf "$out/run"
    run "$n" train --data "$out/data" --model "$model" --batch-size "$mb" --seq-len "$ctx" --steps "$steps" --zero "$zero" --tp "$tp" --pp "$pp" "${mp[@]}" "${depth_train[@]}" \
      --total-batch-tokens $((mb * dp * micro * ctx)) --device cpu --out "$out/run" > "$out/train.log" 2>&1 || { cat "$out/train.log" >&2; exit 1; }
    python3 - "$out/plan.json" "$out/run/metrics.jsonl" "$name" "$load" "$round" >> "$out/rounds.jsonl" <<'PY'
import json, statistics, sys
text = open(sys.argv[1]).read()
doc = json.loads(text[text.index("{"):])   # mpirun may prefix terminal escape codes
p = doc["predicted"]
rows = [json.loads(l) for l in open(sys.argv[2])]
rows = [r for r in rows if r.get("type", "train") == "train" and "step_ms" in r][3:]   # skip warm-up steps
comm = statistics.median(max(r["rank_comm_ms"]) for r in rows) if rows[0].get("rank_comm_ms") else 0.0
# phases: the calibration's deep cut (the whole model when a stage has ≤ 4 layers) vs train's, each the slowest rank's, median
phases = {k: v * 1e3 for k, v in (doc["measured"].get("deepPhaseSeconds") or {}).items()}
train_phases = {k: statistics.median(max(x for x in r["rank_phase_ms"][k] if x is not None) for r in rows)
                for k in rows[0].get("rank_phase_ms", {})}
print(json.dumps({"layout": sys.argv[3], "round": int(sys.argv[5]), "load": float(sys.argv[4]), "pred": p["step"] * 1e3,
                  "train": statistics.median(max(r.get("rank_step_ms") or [r["step_ms"]]) for r in rows), "pred_comm": p["communication"] * 1e3, "train_comm": comm,
                  "pred_phases": phases, "train_phases": train_phases}))
PY
    tail -n 1 "$out/rounds.jsonl" | python3 -c "import json,sys; r=json.load(sys.stdin); print(f\"round {r['round']}: {r['layout']:<22} pred {r['pred']:7.1f} train {r['train']:7.1f} ms ({r['pred']/r['train']-1:+.1%}), load {r['load']}\")" >&2
  done
done
python3 - "$out/rounds.jsonl" <<'PY'
import json, statistics as st, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"{'layout':<22} {'pred ms':>8} {'train ms':>8} {'error':>7} {'min pred':>8} {'min train':>9} {'error':>7} {'pred comm':>9} {'train comm':>10} {'load':>9}")
for name in dict.fromkeys(r["layout"] for r in rows):
    rs = [r for r in rows if r["layout"] == name]
    med = {k: st.median(r[k] for r in rs) for k in ("pred", "train", "pred_comm", "train_comm")}
    lo = {k: min(r[k] for r in rs) for k in ("pred", "train")}
    loads = [r["load"] for r in rs]
    print(f"{name:<22} {med['pred']:8.1f} {med['train']:8.1f} {med['pred'] / med['train'] - 1:+7.1%} {lo['pred']:8.1f} {lo['train']:9.1f} "
          f"{lo['pred'] / lo['train'] - 1:+7.1%} {med['pred_comm']:9.1f} {med['train_comm']:10.1f} {min(loads):4.1f}–{max(loads):<4.1f}")
print(f"{len(rows) // max(1, len(set(r['layout'] for r in rows)))} rounds; error = median pred / median train − 1 (median-of-N on both sides)")
names = ["data", "forward", "backward", "optimizer", "jit"]
if all(r.get("pred_phases") and r.get("train_phases") for r in rows):
    print(f"\nphases, ms, calibration's deep cut / train (medians over the rounds; optimizer holds the gradient sync; jit: the runtime compiling during the step; between: train's work between steps)")
    print(f"{'layout':<22} " + " ".join(f"{n:>15}" for n in names) + f" {'between':>8}")
    for name in dict.fromkeys(r["layout"] for r in rows):
        rs = [r for r in rows if r["layout"] == name]
        cells = [f"{st.median(r['pred_phases'][n] for r in rs):6.1f} / {st.median(r['train_phases'][n] for r in rs):6.1f}" for n in names]
        print(f"{name:<22} " + " ".join(f"{c:>15}" for c in cells) + f" {st.median(r['train_phases']['between'] for r in rs):8.1f}")
PY
