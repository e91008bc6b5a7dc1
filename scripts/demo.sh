#!/usr/bin/env bash
# Install healthtransfer (CPU build of torch 2.13.0) and run the demo on the bundled data.
set -euo pipefail
cd "$(dirname "$0")/.."
FIND_LINKS=()
[ -d /opt/wheels ] && FIND_LINKS=(--find-links /opt/wheels)
python -m pip install --quiet "${FIND_LINKS[@]}" "torch==2.13.0"
python -m pip install --quiet "${FIND_LINKS[@]}" -e .
healthtransfer demo --out healthtransfer-demo "$@"
