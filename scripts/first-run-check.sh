#!/usr/bin/env bash
# A new user's first run, checked: the README's two commands in a fresh clone of this repository's HEAD, with empty
# NuGet caches (NUGET_PACKAGES, NUGET_HTTP_CACHE_PATH) and an empty Supercluster cache (XDG_CACHE_HOME: npm assets, the
# patched libtorchsharp), then the commands the demo prints as its next steps, as printed:
#   1. ./scripts/demo.sh in short mode (DEMO_STEPS, default 20: every step of the demo, few training steps)
#   2. the printed serve command, the dashboard URL and the printed curl command against it
#   3. the printed GPU training line up to the device check: on a machine without CUDA it must get as far as
#      "CUDA is not available" (its prepare ran, every train flag parsed); with CUDA it is left to the user (minutes)
#   4. ./scripts/test.sh with a smoke filter (FIRST_RUN_FILTER): the classes that need what setup.sh installs (real
#      mpirun, headless Chromium) and the first-run tests. The whole suite runs once, in CI's own checkout (.ci/run);
#      running it a second time here would add ~3 minutes and check nothing new about a fresh clone: restore from an
#      empty cache, the full build and the prerequisites are exercised by the smoke run too (dotnet test builds all).
#   FIRST_RUN_KEEP=1 keeps the clone; DEMO_STEPS=N sets the demo's steps.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
smoke_classes=(DistributedTests DashboardBrowserTests HelpExampleTests EvalTokenTests)
filter="${FIRST_RUN_FILTER:-$(printf 'FullyQualifiedName~%s|' "${smoke_classes[@]}")}"; filter="${filter%|}"
[ -z "$(git -C "$root" status --porcelain --untracked-files=no)" ] || echo "[first-run] note: uncommitted changes are not in the clone (it is of HEAD)" >&2

work="$(mktemp -d)"
server=""
cleanup() {
  [ -z "$server" ] || kill "$server" 2>/dev/null || true
  if [ "${FIRST_RUN_KEEP:-0}" = 1 ]; then echo "[first-run] kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
fail() { echo "[first-run] FAILED: $*" >&2; exit 1; }

git clone -q "$root" "$work/repo"
mkdir -p "$work/nuget" "$work/nuget-http" "$work/cache"
export NUGET_PACKAGES="$work/nuget" NUGET_HTTP_CACHE_PATH="$work/nuget-http" XDG_CACHE_HOME="$work/cache"
export DEMO_STEPS="${DEMO_STEPS:-20}"
DEMO_PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export DEMO_PORT
cd "$work/repo"

echo "[first-run] 1. ./scripts/demo.sh (DEMO_STEPS=$DEMO_STEPS) in $work/repo" >&2
./scripts/demo.sh 2>&1 | tee "$work/demo.log"
grep -q '^=== next ===$' "$work/demo.log" || fail "the demo did not print its next steps"
serve_cmd="$(grep -E '^(\./|/)[^ ]*supercluster serve ' "$work/demo.log" | tail -n 1)"
curl_cmd="$(grep -E '^curl ' "$work/demo.log" | tail -n 1)"
gpu_cmd="$(grep -E 'supercluster train .*--device cuda --dtype bf16' "$work/demo.log" | tail -n 1)"
url="$(grep -oE 'http://127\.0\.0\.1:[0-9]+/' "$work/demo.log" | head -n 1)"
[ -n "$serve_cmd" ] && [ -n "$curl_cmd" ] && [ -n "$gpu_cmd" ] && [ -n "$url" ] || fail "missing serve/curl/GPU command or dashboard URL in the demo's output"
# The demo's last training eval and the eval verb: same token count, same loss (same rows; fp32 on the same device).
train_eval="$(grep -E '^step [0-9]+: val loss' "$work/demo.log" | tail -n 1)"
eval_line="$(grep -E ': val loss .*, perplexity .* over [0-9,]+ tokens$' "$work/demo.log" | tail -n 1)"
[ -n "$train_eval" ] && [ -n "$eval_line" ] || fail "no validation lines with token counts in the demo's output"
[ "${train_eval##* over }" = "${eval_line##* over }" ] || fail "train's last eval ($train_eval) and eval ($eval_line) used different token counts"
echo "[first-run] eval token counts agree: $train_eval | $eval_line" >&2

echo "[first-run] 2. $serve_cmd" >&2
bash -c "exec $serve_cmd" >"$work/serve.log" 2>&1 &
server=$!
for _ in $(seq 240); do
  grep -q 'listening on' "$work/serve.log" && break
  kill -0 "$server" 2>/dev/null || { cat "$work/serve.log" >&2; fail "serve exited"; }
  sleep 0.5
done
grep -q 'listening on' "$work/serve.log" || { cat "$work/serve.log" >&2; fail "serve did not start listening within 2 minutes"; }
curl -sf "$url" | grep -qi '<html' || fail "the dashboard at $url did not return a page"
echo "[first-run] $curl_cmd" >&2
answer="$(bash -c "$curl_cmd")"
echo "$answer"
echo "$answer" | grep -q '"choices"' && echo "$answer" | grep -q '"text"' || fail "the printed curl command got no completion: $answer"
kill "$server"; wait "$server" 2>/dev/null || true; server=""

echo "[first-run] 3. $gpu_cmd" >&2
if ./supercluster env | grep -q '^cuda available *yes'; then
  echo "[first-run] CUDA present: not starting a GPU-sized run here" >&2
else
  # Without CUDA (and without a CUDA PyTorch to point SUPERCLUSTER_LIBTORCH at) the line runs on the CPU libtorch.
  cpu_line="$(sed -E "s/SUPERCLUSTER_LIBTORCH=\\\$\\(python3 -c '[^']*'\\) //" <<<"$gpu_cmd")"
  set +e; out="$(bash -c "$cpu_line" 2>&1)"; code=$?; set -e
  [ "$code" = 2 ] && grep -q 'CUDA is not available' <<<"$out" || fail "the GPU line did not get as far as the device check (exit $code): $out"
fi

echo "[first-run] 4. ./scripts/test.sh --filter \"$filter\"" >&2
./scripts/test.sh --filter "$filter" --logger "console;verbosity=normal" 2>&1 | tee "$work/test.log"
tail -n 1 "$work/test.log" | grep -qE '^[1-9][0-9]* passed, 0 failed' || fail "the test command failed: $(tail -n 1 "$work/test.log")"
# A renamed class would make the filter match nothing of it: each smoke class must have passed tests.
if [ -z "${FIRST_RUN_FILTER:-}" ]; then
  for c in "${smoke_classes[@]}"; do grep -qE "^\s+Passed .*\.$c\." "$work/test.log" || fail "no passed test of $c in the smoke run"; done
fi
echo "[first-run] OK: demo, serve + dashboard + curl, GPU line, test command, from a fresh clone with empty caches" >&2
