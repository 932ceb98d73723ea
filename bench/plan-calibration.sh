#!/usr/bin/env bash
# `plan` against every published training run (docs/planning.md, "Calibration"): prints each row predicted vs published
# with its error, then the mean absolute error and the worst row. Pure arithmetic (no timing), so load does not matter.
#   bench/plan-calibration.sh
set -euo pipefail
cd "$(dirname "$0")/.."
./supercluster plan --calibration
