#!/usr/bin/env bash
# Run a study's [federated] job on a real Flower deployment on this machine (loopback only):
#   scripts/federated_loopback.sh STUDY.toml [OUT.json]
# starts `flower-superlink --insecure` on 127.0.0.1 (one free port: Fleet, Control and Runtime
# APIs), one `flower-supernode --insecure --superlink 127.0.0.1:PORT --node-config "site='...'"`
# per site, submits the run with `flwr run APP loopback --stream`, streams the run log, prints
# the report and stops every process. Logs, the generated app and result.json stay in
# $HT_FLOWER_WORKDIR (default: a new folder under /tmp). Same as
#   healthtransfer federate STUDY.toml --deploy
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: $0 STUDY.toml [OUT.json]" >&2
  exit 2
fi
STUDY="$1"
OUT="${2:-}"
PY="${PYTHON:-python}"
WORKDIR="${HT_FLOWER_WORKDIR:-$(mktemp -d /tmp/ht-flower-XXXXXX)}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
echo "loopback deployment; logs in $WORKDIR" >&2
exec "$PY" - "$STUDY" "$OUT" "$WORKDIR" <<'PYEOF'
import json
import sys

from healthtransfer.federated import federate

study, out, workdir = sys.argv[1], sys.argv[2] or None, sys.argv[3]
r = federate(study, simulate=False, out=out, workdir=workdir, echo=True)
r["deployment"].pop("run_log", None)
print(json.dumps({k: r[k] for k in ("per_site", "summary", "rounds_log", "events", "deployment")},
                 indent=2, default=str))
PYEOF
