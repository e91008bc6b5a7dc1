#!/usr/bin/env bash
# Install healthtransfer with its test extras (CPU build of torch 2.13.0), the system packages
# the browser and PostgreSQL tests need, and run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export HEALTHTRANSFER_DATA="${HEALTHTRANSFER_DATA:-$(cd .. && pwd)/shared/data}"
export MPLBACKEND=Agg

# System packages: headless Chromium + chromedriver (report and web-page tests) and the
# PostgreSQL server binaries (audit-log test). Installed only when missing. Without root (or
# passwordless sudo) we cannot install them: the affected tests then skip, and we say so here.
need_pkgs=()
command -v chromium >/dev/null 2>&1 || need_pkgs+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_pkgs+=(chromium-driver)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null 2>&1 \
    || need_pkgs+=(postgresql)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
    SUDO=()
    [ "$(id -u)" -eq 0 ] || SUDO=(sudo -n)
    echo "Installing the system packages the tests need: ${need_pkgs[*]} (apt-get)..."
    apt_log="$(mktemp)"
    if ! { "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
           && "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                --no-install-recommends "${need_pkgs[@]}"; } >"$apt_log" 2>&1; then
        tail -n 15 "$apt_log" >&2
        cat >&2 <<MSG

############################################################################
WARNING: could not install ${need_pkgs[*]} with apt-get (not root, no sudo, or
WARNING: no package index). These tests will be SKIPPED, not run:
WARNING:   tests/reports/test_report_browser.py, tests/serve/test_page_browser.py
WARNING:   (need chromium + chromium-driver),
WARNING:   tests/serve/test_audit_postgres.py (needs postgresql).
WARNING: Install those packages as root and run this command again to run them.
############################################################################

MSG
    fi
    rm -f "$apt_log"
fi

# torch==2.13.0, CPU build: it lies in /opt/wheels on our machines (see README for other
# machines). A plain `pip install torch` would pull a multi-GB CUDA build.
FIND_LINKS=()
[ -d /opt/wheels ] && FIND_LINKS=(--find-links /opt/wheels)
python -m pip install --quiet "${FIND_LINKS[@]}" "torch==2.13.0"
python -m pip install --quiet "${FIND_LINKS[@]}" -e ".[test]"
# one thread per worker: two xdist workers already fill the two cores
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
status=0
python -m pytest -n 2 --dist loadfile -q "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "ERROR: pytest collected no test (exit 5): the test run proves nothing." >&2
fi
exit "$status"
