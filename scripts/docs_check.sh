#!/usr/bin/env bash
# Build the documentation site strictly (warnings fail) and run its tutorials:
#   scripts/docs_check.sh            # needs: pip install -e ".[docs]"
# 1. `mkdocs build --strict` into site/ (generated pages: docs/_gen/hooks.py);
# 2. every page marked `<!-- docs-check: run -->` runs its code blocks in one scratch folder, in
#    nav order (scripts/docs_tutorials.py), on the bundled heart data and $HEALTHTRANSFER_DATA
#    (default ../shared/data); then the example of every estimator on the API pages.
# Exits non-zero, naming the page and block, when the build warns or a tutorial breaks.
set -euo pipefail
cd "$(dirname "$0")/.."
export HEALTHTRANSFER_DATA="${HEALTHTRANSFER_DATA:-$(cd .. && pwd)/shared/data}"
export MPLBACKEND=Agg NO_MKDOCS_2_WARNING=1
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}" \
       OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
PY="${PYTHON:-python}"
start=$(date +%s)
"$PY" -m mkdocs build --strict --quiet
echo "site built in $(( $(date +%s) - start )) s (site/)"
WORK="$(mktemp -d /tmp/ht-docs-XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
"$PY" scripts/docs_tutorials.py --api --workdir "$WORK"
echo "docs check passed in $(( $(date +%s) - start )) s"
