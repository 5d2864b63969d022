#!/usr/bin/env bash
# The lent GPU's one command (see benchmarks/gpu_session.py): carry .carry, results under $OUT.
#   device run: bash benchmarks/gpu_session.sh            (extra arguments go to `gpu_session.py run`)
set -uo pipefail
cd "$(dirname "$0")/.."
exec python3 benchmarks/gpu_session.py run --out "${OUT:-gpu-session}" "$@"
