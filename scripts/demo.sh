#!/usr/bin/env bash
# Install healthtransfer (base install: CPU build of torch 2.13.0, no extras) and run the demo
# on the bundled data. The base install alone must run `demo` and `run` end to end, bundle
# included; CI runs this script exactly as README.md gives it.
set -euo pipefail
cd "$(dirname "$0")/.."
FIND_LINKS=()
[ -d /opt/wheels ] && FIND_LINKS=(--find-links /opt/wheels)
python -m pip install --quiet "${FIND_LINKS[@]}" "torch==2.13.0"
python -m pip install --quiet "${FIND_LINKS[@]}" -e .
healthtransfer demo --out healthtransfer-demo "$@"
