#!/usr/bin/env bash
# Every layout train runs on ≤ 4 CPU ranks of this machine, with the same global batch: step time, time in collectives per
# group, and the bytes each group sent (rank 0, per step) next to `plan`'s prediction for the same model and layout
# (plan --device cpu --calibrate: Planning/CommunicationVolume.cs; for DP/ZeRO-1 layouts it also predicts the step, shown
# as "plan"). Then sequence parallelism's activation saving, measured (resident memory growth over a forward at TP 2, with
# and without --sequence-parallel) next to the Korthikanti et al. formula train prints; then the time from a SIGKILLed
# rank to training again under `launch`.
#   bench/distributed-cpu.sh [model] [steps] [micro-batch] [seq-len]          (defaults: small 4 2 64)
#   LAYOUTS="TP2:2:--tp 2;PP2:2:--pp 2" bench/distributed-cpu.sh              (name:ranks:train flags, ';'-separated)
#   SECTIONS="layouts sp kill"                                                (which parts to run)
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-small}"; steps="${2:-4}"; mb="${3:-2}"; seq="${4:-64}"
sections="${SECTIONS:-layouts sp kill}"
default_layouts="1 rank:1:;DP2:2:;ZeRO-1 DP2:2:--zero 1;ZeRO-2 DP2:2:--zero 2;ZeRO-3 DP2:2:--zero 3;TP2:2:--tp 2;TP2+SP:2:--tp 2 --sequence-parallel"
default_layouts+=";CP2:2:--cp 2;PP2:2:--pp 2;TP2xCP2:4:--tp 2 --cp 2;PP2xDP2:4:--pp 2;TP2xPP2:4:--tp 2 --pp 2;CP2xPP2:4:--cp 2 --pp 2"
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
./supercluster prepare --sample sotu --tokenizer byte --out "$out/data" > /dev/null
vocab=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['vocab_size'])" "$out/data/meta.json")
cli=(dotnet .build/cli/Supercluster.Cli.dll)
root=(); [ "$(id -u)" -eq 0 ] && root=(--allow-run-as-root)
mpi() { local n=$1; shift; if [ "$n" -eq 1 ]; then "${cli[@]}" "$@"; else mpirun -np "$n" "${root[@]}" --oversubscribe --bind-to none "${cli[@]}" "$@"; fi; }
total=$((mb * seq * 4))   # 4 micro-batches per step: DP up to 4, the rest as accumulation (PP's micro-batches)

if [[ " $sections " == *" layouts "* ]]; then
  echo "model $model, micro-batch $mb × $seq tokens, $((4 * mb)) sequences per step, $steps steps (medians over steps 2..)"
  IFS=';' read -r -a layouts <<< "${LAYOUTS:-$default_layouts}"
  for spec in "${layouts[@]}"; do
    IFS=':' read -r name n flags <<< "$spec"
    read -r -a f <<< "$flags"
    # plan's flags for the same layout: its CPU path assumes sequence parallelism with TP unless told otherwise.
    pf=(); sp=0
    for ((i = 0; i < ${#f[@]}; i++)); do
      case "${f[i]}" in --sequence-parallel) sp=1 ;; *) pf+=("${f[i]}") ;; esac
    done
    [[ " ${f[*]} " == *" --tp "* && $sp -eq 0 ]] && pf+=(--no-sequence-parallel)
    mpi "$n" plan --device cpu --calibrate --model "$model" --vocab "$vocab" --micro-batch "$mb" --seq "$seq" --batch $((4 * mb)) "${pf[@]}" --json \
      > "$out/plan.json" 2> "$out/plan.err" || { echo "$name: plan failed: $(tail -1 "$out/plan.err")"; continue; }
    if ! mpi "$n" train --data "$out/data" --model "$model" --batch-size "$mb" --seq-len "$seq" --total-batch-tokens "$total" \
        --steps "$steps" --device cpu --eval-tokens 256 --checkpoint-every 0 --out "$out/run" "${f[@]}" > "$out/train.log" 2>&1; then
      echo "$name: train failed: $(grep -v '^\s*$' "$out/train.log" | tail -1)"; rm -rf "$out/run"; continue
    fi
    python3 - "$out/plan.json" "$out/run/metrics.jsonl" "$name" <<'PY'
import json, statistics, sys
text = open(sys.argv[1]).read()
plan = json.loads(text[text.index("{"):])             # mpirun may prefix terminal escape codes
pred = plan["communicationBytes"]
rows = [json.loads(l) for l in open(sys.argv[2])]
rows = [r for r in rows if r.get("type") == "train"]
timed = rows[1:] or rows
med = lambda xs: statistics.median(xs) if xs else 0.0
step = med([r["step_ms"] for r in timed])
groups = sorted(set(pred) | {g for r in rows for g in (r.get("comm_bytes_by_group") or {})})
ms = {g: med([(r.get("comm_ms_by_group") or {}).get(g, 0.0) for r in timed]) for g in groups}
meas = {g: med([(r.get("comm_bytes_by_group") or {}).get(g, 0.0) for r in timed]) for g in groups}
cells = [f"{g} {ms[g]:.0f} ms {meas[g] / 1e6:.3f}/{pred.get(g, 0) / 1e6:.3f} MB ({(meas[g] / pred[g] - 1) if pred.get(g) else float('nan'):+.1%})" for g in groups]
ps = f" (plan {plan['predicted']['step'] * 1e3:.0f})" if plan.get("predicted") else ""
print(f"{sys.argv[3]:<12} {step:9.1f} ms/step{ps} | " + (" | ".join(cells) if cells else "no communication"))
PY
    rm -rf "$out/run"
  done
  echo "(per group: time in its collectives, measured/predicted MB sent by rank 0 per step, and the difference)"
fi

if [[ " $sections " == *" sp "* ]]; then
  # Large allocations straight from the OS (glibc), so resident memory follows live tensors: the forward's growth is what it keeps.
  for sp in "" --sequence-parallel; do
    mpirun -np 2 "${root[@]}" --oversubscribe --bind-to none -x MALLOC_MMAP_THRESHOLD_=16384 "${cli[@]}" train --data "$out/data" \
      --model "$model" --batch-size 8 --seq-len 128 --steps 3 --device cpu --eval-tokens 256 --checkpoint-every 0 --tp 2 $sp \
      --out "$out/sp$sp" > "$out/sp$sp.log" 2>&1
  done
  python3 - "$out/sp/metrics.jsonl" "$out/sp--sequence-parallel/metrics.jsonl" "$out/sp--sequence-parallel.log" <<'PY'
import json, re, statistics, sys
def fwd(p):
    rows = [json.loads(l) for l in open(p) if '"train"' in l]
    return statistics.median(r["forward_resident_bytes"] for r in rows[1:])
without, with_sp = fwd(sys.argv[1]), fwd(sys.argv[2])
predicted = re.search(r"sequence parallel: saves ([0-9.]+) MB", open(sys.argv[3]).read()).group(1)
print(f"TP2 activations per micro-batch (measured, rank 0): {without / 1e6:.1f} MB without SP, {with_sp / 1e6:.1f} MB with SP; "
      f"saving {(without - with_sp) / 1e6:.1f} MB measured vs {predicted} MB predicted (10·s·b·h·(1−1/t) per layer, fp32)")
PY
fi

if [[ " $sections " == *" kill "* ]]; then
  ./supercluster launch --nproc 2 --max-restarts 1 --hang-timeout 30 -- train --data "$out/data" --model "$model" --batch-size 6 --steps 12 \
    --checkpoint-every 4 --device cpu --out "$out/kill" --fault kill:rank=1:step=6 | grep -E "^\[launch\]"
fi
