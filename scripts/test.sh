#!/usr/bin/env bash
# Install healthtransfer with its test extras (CPU build of torch 2.13.0) and run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export HEALTHTRANSFER_DATA="${HEALTHTRANSFER_DATA:-$(cd .. && pwd)/shared/data}"
# torch==2.13.0, CPU build: it lies in /opt/wheels on our machines (see README for other
# machines). A plain `pip install torch` would pull a multi-GB CUDA build.
FIND_LINKS=()
[ -d /opt/wheels ] && FIND_LINKS=(--find-links /opt/wheels)
python -m pip install --quiet "${FIND_LINKS[@]}" "torch==2.13.0"
python -m pip install --quiet "${FIND_LINKS[@]}" -e ".[test]"
# one thread per worker: two xdist workers already fill the two cores
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
python -m pytest -n 2 --dist loadfile -q "$@"
