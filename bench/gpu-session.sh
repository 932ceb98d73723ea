#!/usr/bin/env bash
# Everything the GPU-speed work needs measured on one GPU node, in one command (sized for one 10-minute call):
#   1. which libtorch symbols TorchSharp 0.107's shim needs that this PyTorch's torch/lib lacks (bench/check-libtorch.py)
#   2. `supercluster env` on that libtorch, then `env` again with LD_BIND_NOW=1 (every symbol bound at load)
#   3. bench/compare.sh at GPT-2 124M, T = 1024, bf16 for each batch size in $BATCHES: `bench --check-kernels` (fused
#      AdamW vs float64 and vs torch ops), then Supercluster, its ablations, PyTorch eager and torch.compile (same
#      initial weights, tokens and optimizer)
# Inputs, prepared where .NET and npm are (both fit the 64 MiB a device call carries):
#   bench/pack.sh .device/supercluster-bundle.tar.xz
#   ./supercluster prepare --sample sotu --tokenizer gpt2 --out .device/sotu-gpt2
# Then on the GPU node, from the repository root:  OUT=/some/dir bench/gpu-session.sh
set -uo pipefail
cd "$(dirname "$0")/.."
BUNDLE="${BUNDLE:-.device/supercluster-bundle.tar.xz}"; DATA="${DATA:-.device/sotu-gpt2}"; BATCHES="${BATCHES:-16 32}"
OUT="${OUT:-$(mktemp -d)}"; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
tmp=$(mktemp -d)
tar xf "$BUNDLE" -C "$tmp" || { echo "gpu-session: cannot unpack $BUNDLE" >&2; exit 2; }
SC="$tmp/supercluster-bundle/supercluster"
export SUPERCLUSTER_LIBTORCH="${SUPERCLUSTER_LIBTORCH:-$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')}"
{
  date -u +"%Y-%m-%d %H:%M UTC"
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv,noheader
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
} 2>&1 | tee "$OUT/machine.txt"

echo "== 1. libtorch symbols" | tee "$OUT/symbols.txt"
python3 bench/check-libtorch.py "$tmp/supercluster-bundle/libtorchsharp-imports.txt" "$SUPERCLUSTER_LIBTORCH" 2>&1 | tee -a "$OUT/symbols.txt"

echo "== 2. env (lazy binding, then LD_BIND_NOW=1)"
"$SC" env 2>&1 | tee "$OUT/env.txt"
LD_BIND_NOW=1 "$SC" env > "$OUT/env-bind-now.txt" 2>&1; echo "LD_BIND_NOW=1 env: exit $?" | tee -a "$OUT/env.txt"

echo "== 3. comparison (each batch size: kernel check, then the table)"
# Working files (initial weights: 500 MB) stay outside $OUT; the small results come back as one archive.
for b in $BATCHES; do
  echo "-- batch $b" | tee -a "$OUT/tables.txt"
  OUTDIR="$tmp/b$b" SC="$SC" DATA="$DATA" B="$b" DEVICE=cuda bash bench/compare.sh > "$tmp/b$b.log" 2>&1
  grep -A3 '^fused AdamW' "$tmp/b$b.log" | tee -a "$OUT/tables.txt"
  tail -n 7 "$tmp/b$b.log" | tee -a "$OUT/tables.txt"
done
(cd "$tmp" && tar czf "$OUT/results.tar.gz" --exclude='*.safetensors' b*)
