#!/usr/bin/env bash
# Supercluster vs PyTorch eager vs torch.compile on one GPU, back to back, same model, initial weights, tokens and
# optimizer; plus Supercluster ablations (torch-ops AdamW instead of the fused kernel; the other vocabulary padding) so the
# value of each speed feature is measured in the same run. Prints one table with ratios.
#   B=16 T=1024 STEPS=30 DATA=data/sotu-gpt2 bench/compare.sh
# Without a GPU (DEVICE=cpu, or no nvidia-smi): the same Supercluster rows at a CPU size, so regressions show here too.
# DATA: shards from `supercluster prepare --sample sotu --tokenizer gpt2` (prepare them where npm works and carry them).
# SC: how to run Supercluster (default ./supercluster; a bundle from bench/pack.sh works too).
# OUTDIR: where the JSON results, logs and the table (table.txt) go (default a new temporary folder).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${DATA:-data/sotu-gpt2}"; SC="${SC:-./supercluster}"
DEVICE="${DEVICE:-$(command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo cuda || echo cpu)}"
if [ "$DEVICE" = cuda ]; then
  MODEL="${MODEL:-gpt2}"; B="${B:-16}"; T="${T:-1024}"; STEPS="${STEPS:-30}"; DTYPE="${DTYPE:-bf16}"; PAD="${PAD:-128}"
  export SUPERCLUSTER_LIBTORCH="${SUPERCLUSTER_LIBTORCH:-$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')}"
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv,noheader || true
else
  # CPU size: GPT-2 layout and BPE vocabulary at the `small` preset's width, short context.
  MODEL="${MODEL:-small}"; B="${B:-4}"; T="${T:-128}"; STEPS="${STEPS:-8}"; DTYPE="${DTYPE:-fp32}"; PAD="${PAD:-1}"
fi
[ -f "$DATA/meta.json" ] || { echo "compare.sh: no shards in $DATA (run: $SC prepare --sample sotu --tokenizer gpt2 --out $DATA)" >&2; exit 2; }
out="${OUTDIR:-$(mktemp -d)}"
mkdir -p "$out"
echo "results in $out"

common=(bench --model "$MODEL" --batch-size "$B" --seq-len "$T" --dtype "$DTYPE" --steps "$STEPS" --data "$DATA" --device "$DEVICE")
run_sc() { # name, extra args...
  local name="$1"; shift
  echo "== Supercluster $name" >&2
  $SC "${common[@]}" "$@" --json "$out/sc-$name.json" > "$out/sc-$name.txt" 2> "$out/sc-$name.log" || { cat "$out/sc-$name.log" >&2; return 1; }
  cat "$out/sc-$name.txt"
}
run_sc main --pad-vocab "$PAD" --optimizer auto --save-init "$out/init/model.safetensors"
if [ "$DEVICE" = cuda ]; then
  # The custom kernels against float64 references first (a wrong kernel makes the speed rows meaningless), then the
  # same run with AdamW as torch ops: what the fused kernel is worth.
  $SC bench --check-kernels --device cuda | tee "$out/kernels.txt" || echo "compare.sh: KERNEL CHECK FAILED" >&2
  run_sc torch-adamw --pad-vocab "$PAD" --optimizer torch
fi
OTHER_PAD=$([ "$PAD" = 1 ] && echo 128 || echo 1)
run_sc other-pad --pad-vocab "$OTHER_PAD" --optimizer auto
if [ "$DEVICE" = cuda ]; then
  for variant in eager compile; do
    echo "== PyTorch $variant" >&2
    flag=(); [ "$variant" = compile ] && flag=(--compile)
    python3 bench/pytorch_reference.py --init "$out/init/model.safetensors" --data "$DATA" --batch-size "$B" --seq-len "$T" \
      --steps "$STEPS" --dtype "$DTYPE" "${flag[@]}" > "$out/pt-$variant.json" 2> "$out/pt-$variant.log" || cat "$out/pt-$variant.log" >&2
  done
fi
python3 - "$out" "$DEVICE" "$OTHER_PAD" <<'PY' | tee "$out/table.txt"
import json, os, sys
d, device, other_pad = sys.argv[1], sys.argv[2], int(sys.argv[3])
def load(name):
    p = os.path.join(d, name)
    if not os.path.exists(p) or os.path.getsize(p) == 0:
        return None
    text = open(p).read().strip()
    try:
        return json.loads(text)                      # bench --json: one indented object
    except json.JSONDecodeError:
        return json.loads(text.splitlines()[-1])     # pytorch_reference.py: the last line
rows = []
for name, label in [("sc-main.json", "Supercluster"), ("sc-torch-adamw.json", "  AdamW as torch ops"), ("sc-other-pad.json", "  vocab not padded" if other_pad == 1 else f"  vocab padded to x{other_pad}")]:
    r = load(name)
    if r:
        rows.append((label, r["tokens_per_second"], r["ms_per_step"], r["first_loss"], r["last_loss"], r.get("peak_memory_gi_b") or 0, r))
for name, label in [("pt-eager.json", "PyTorch eager"), ("pt-compile.json", "torch.compile")]:
    r = load(name)
    if r:
        rows.append((label, r["tokens_per_s"], r["ms_per_step"], r["first_loss"], r["last_loss"], r["peak_memory_gib"], None))
sc = rows[0]
print(f"{'':22} {'tokens/s':>10} {'ms/step':>8} {'first loss':>10} {'last loss':>10} {'mem GiB':>8} {'SC/this':>8}")
for label, tps, ms, f, l, mem, _ in rows:
    print(f"{label:22} {tps:10,.0f} {ms:8.1f} {f:10.4f} {l:10.4f} {mem:8.1f} {sc[1] / tps:7.2f}x")
m = sc[6]
mfu = f"MFU {m['mfu']:.1%} of {m['peak_tflops_used']:.0f} TFLOP/s" if m.get("mfu") else "MFU n/a (peak unknown)"
print(f"Supercluster ({m['device']}, {m['dtype']}, {m['parameters']:,} parameters, batch {m['batch_size']} x {m['seq_len']}, vocab {m['vocab']} -> {m['padded_vocab']}): {mfu}")
print(f"  phases ms: data {m['data_ms']:.1f}, forward {m['forward_ms']:.1f}, backward {m['backward_ms']:.1f}, optimizer {m['optimizer_ms']:.1f}; optimizer: {m['optimizer']}")
PY
