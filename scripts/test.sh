#!/usr/bin/env bash
# The README's test command: installs what the suite needs and is missing (scripts/setup.sh: Open MPI, Chromium, npm),
# fetches NVRTC for the CUDA kernels' compile checks when it can (optional), runs `dotnet test` on the solution, and
# ends with one plain line "N passed, N failed, N skipped" summed over the test assemblies. Arguments go to dotnet test:
#   ./scripts/test.sh
#   ./scripts/test.sh --filter "FullyQualifiedName~TrainerTests"
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
# NVRTC compiles CUDA C without a GPU, so the fused kernels' sources are checked here; their tests skip without it.
if [ -z "${SUPERCLUSTER_NVRTC:-}" ] || [ ! -e "$SUPERCLUSTER_NVRTC" ]; then
  if nvrtc=$(bash scripts/fetch-nvrtc.sh 2>/dev/null); then export SUPERCLUSTER_NVRTC="$nvrtc"
  else echo "[test] NVRTC not fetched (needs Debian's non-free archive); the kernel compile tests will be skipped" >&2; fi
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
dotnet test Supercluster.slnx --nologo "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
# One plain closing line: "N passed, N failed, N skipped" summed over the test assemblies.
# The summary is "Passed!  - Failed: 0, Passed: N, ..." at the default verbosity, lines "Passed: N" at a higher one.
awk '/(Passed|Failed)!/ { for (i = 1; i <= NF; i++) { gsub(",", "", $(i+1)); if ($i == "Failed:") f += $(i+1); if ($i == "Passed:") p += $(i+1); if ($i == "Skipped:") s += $(i+1) } }
     /^ *(Passed|Failed|Skipped): *[0-9]+ *$/ { if ($1 == "Passed:") p += $2; if ($1 == "Failed:") f += $2; if ($1 == "Skipped:") s += $2 }
     END { printf "%d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$rc"
