"""A whole transfer study at 10^6 rows per domain, through the product's own command.

The scale benchmark (``scale.py``) times single fits. This one times what a user runs:
``healthtransfer run study.toml`` on a Parquet table with ``--n`` source rows and ``--n``
target rows (the data of ``scale.py``: 50 mixed-type features, 10% missing, covariate + label
shift), one seed, target split 50/50 into pool and test. The study does everything a study
does: harmonisation, site-aware preprocessing, every scalable method (chosen automatically
above 10,000 rows), model selection without test labels, calibration, evaluation with CIs on
the test half, shift diagnostics, the report, and the bundle with the refitted recommended
model and its explanations.

Wall time and peak memory are those of the ``healthtransfer`` process (peak RSS of the
process tree, polled every 0.5 s, and the child's own ``ru_maxrss``); it is stopped at
``--timeout`` seconds or ``--max-gib``.

    python benchmarks/scale_study.py                    # 10^6 rows per domain (the goal)
    python benchmarks/scale_study.py --n 20000 --quick  # smoke run

Writes ``benchmarks/results/scale_study.{json,md}`` (``results/quick/`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _limits import run_limited  # noqa: E402
from scale import make_data  # noqa: E402

DATA_DIR = Path(os.environ.get("HT_SCALE_DATA", "/tmp/healthtransfer_scale"))
# the exact names; above 10,000 rows the runner swaps in iw_domain_chunked, kmm_nystroem, ...
# (unsupervised adaptation, as in scale.py: the source-only baseline and the seven methods
# that have a scalable variant)
METHODS = ["source_lr", "iw_domain_lr", "kmm_lr", "kliep_lr", "tca_lr", "ot_map_lr", "coral_lr", "joint_mmd"]


def write_table(n: int, path: Path) -> dict:
    """n source rows and n labelled target rows as one Parquet file (float32 features)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.exists():
        return json.loads(path.with_suffix(".json").read_text())
    X, y, sd, Xte, yte = make_data(n, seed=0, n_test=n)
    Xs, ys = X[:n], y[:n]
    del X
    cols = {f"f{j:02d}": np.r_[Xs[:, j], Xte[:, j]].astype(np.float32) for j in range(Xs.shape[1])}
    cols["site"] = np.r_[np.full(n, "source"), np.full(n, "target")]
    cols["y"] = np.r_[ys, yte].astype(np.int8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pq.write_table(pa.table(cols), tmp, row_group_size=250_000)
    tmp.rename(path)
    info = {"rows": 2 * n, "features": Xs.shape[1], "bytes": path.stat().st_size,
            "source_positive_rate": float(ys.mean()), "target_positive_rate": float(yte.mean())}
    path.with_suffix(".json").write_text(json.dumps(info))
    return info


def write_study(data: Path, out: Path, methods: list[str], budgets: list[int]) -> Path:
    feats = ", ".join(f'"f{j:02d}"' for j in range(60))
    toml = f'''[study]
name = "scale-study"
description = "Synthetic two-domain data, {data.name}"

[data]
path = "{data}"
domain = "site"
label = "y"
features = [{feats}]
categorical = []

[transfer]
sources = ["source"]
target = "target"
labeled_target = {budgets}
seeds = 1
test_fraction = 0.5
methods = {json.dumps(methods)}
'''
    out.mkdir(parents=True, exist_ok=True)
    path = out / "study.toml"
    path.write_text(toml)
    return path


def run(study: Path, out: Path, timeout: float, max_gib: float) -> dict:
    exe = Path(sys.executable).with_name("healthtransfer")
    cmd = [str(exe), "run", str(study), "--out", str(out / "run"), "--jobs", "1"]
    env = dict(os.environ, OMP_NUM_THREADS="2", COLUMNS="160")
    with open(out / "run.log", "w") as log:
        r = run_limited(cmd, timeout=timeout, max_gib=max_gib, env=env, stdout=log, poll=0.5)
    status = r.status or "ok"
    if status == "ok" and r.returncode != 0:
        status = f"failed (exit {r.returncode}): see run.log"
    child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    return {"status": status, "wall_seconds": r.wall_seconds, "peak_gib_polled": r.peak_gib,
            "peak_gib_child": child_peak, "rss_trace": r.trace[:: max(1, len(r.trace) // 200)]}


def summarise(out: Path) -> dict:
    res = json.loads((out / "run" / "results.json").read_text())
    recs = res.get("results", [])
    methods = {}
    for r in recs:
        key = f"{r['method']} (n_t={r['n_labeled']})"
        methods[key] = {"auroc": r.get("auroc"), "brier": r.get("brier"), "fit_seconds": r.get("fit_seconds"),
                        "chosen": r.get("chosen"), "auroc_ci": r.get("auroc_ci")}
    sels = [{k: s.get(k) for k in ("n_labeled", "chosen", "criterion", "reason", "calibration")}
            for s in res.get("selected", [])]
    shift = res.get("shift", {}).get("target", {})
    return {"methods": methods, "selections": sels, "runner_seconds": res.get("runtime_seconds"),
            "diagnostics_seconds": shift.get("runtime_s"),
            "domain_classifier_auroc": (shift.get("domain_classifier") or {}).get("auroc")}


def markdown(rec: dict) -> str:
    n = rec["n"]
    lines = [f"# Scale study: `healthtransfer run` at {n:,} rows per domain", "",
             f"Synthetic data of `scale.py` ({rec['data']['rows']:,} rows, 60 columns, Parquet "
             f"{rec['data']['bytes'] / 2**20:.0f} MiB): source {n:,} labelled rows, target {n:,} rows split 50/50 "
             f"into pool and test; one seed; budgets {rec['budgets']}; 2 cores. One `healthtransfer run` process: "
             "harmonisation, preprocessing, every method below (the runner swaps in the scalable variant above "
             "10,000 rows), selection, calibration, evaluation with bootstrap CIs, shift diagnostics, report, "
             "bundle with the refitted recommended model and permutation importance.", "",
             "Goal (issue 8): under 10 minutes and under 8 GiB peak memory at 10^6 rows per domain.", "",
             "| status | wall | peak memory (polled tree) | peak memory (child ru_maxrss) |", "|---|---:|---:|---:|",
             f"| {rec['status']} | {rec['wall_seconds'] / 60:.1f} min | {rec['peak_gib_polled']:.2f} GiB | "
             f"{rec['peak_gib_child']:.2f} GiB |", ""]
    s = rec.get("summary")
    if s:
        lines += ["| method (n_t) | target AUROC [95% CI] | Brier | fit s |", "|---|---:|---:|---:|"]
        for k, v in sorted(s["methods"].items(), key=lambda kv: -(kv[1]["auroc"] or 0)):
            ci = v["auroc_ci"]
            ci_s = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and ci[0] is not None else ""
            name = k + (f" → {v['chosen']}" if v.get("chosen") else "")
            lines.append(f"| {name} | {v['auroc']:.4f}{ci_s} | {v['brier']:.4f} | {v['fit_seconds'] or 0:.1f} |")
        lines += [""]
        for sel in s["selections"]:
            lines.append(f"- selection at n_t={sel['n_labeled']}: **{sel['chosen']}** ({sel['criterion']}; "
                         f"calibration {sel['calibration']}): {sel['reason']}")
        lines += ["", f"Runner (fits, selection, evaluation) {s['runner_seconds'] or 0:.0f} s of the wall time; "
                  f"shift diagnostics {s['diagnostics_seconds'] or 0:.0f} s (domain-classifier AUROC "
                  f"{s['domain_classifier_auroc'] or float('nan'):.3f}).", ""]
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="rows per domain")
    ap.add_argument("--budgets", nargs="+", type=int, default=[0])
    ap.add_argument("--methods", nargs="+", default=METHODS)
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--max-gib", type=float, default=16.0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--work-dir", default=None)
    args = ap.parse_args(argv)
    results = HERE / "results" / ("quick" if args.quick else "")
    results.mkdir(parents=True, exist_ok=True)
    work = Path(args.work_dir) if args.work_dir else DATA_DIR / f"study_n{args.n}"
    t0 = time.perf_counter()
    data = write_table(args.n, work / "data.parquet")
    gen_s = time.perf_counter() - t0
    study = write_study(work / "data.parquet", work, args.methods, args.budgets)
    rec = {"n": args.n, "budgets": args.budgets, "methods": args.methods, "data": data,
           "data_generation_seconds": gen_s, "cores": os.cpu_count()}
    rec.update(run(study, work, args.timeout, args.max_gib))
    if rec["status"] == "ok":
        rec["summary"] = summarise(work)
    rec["log_tail"] = (work / "run.log").read_text(errors="replace")[-3000:]
    (results / "scale_study.json").write_text(json.dumps(rec, indent=1, default=str))
    (results / "scale_study.md").write_text(markdown(rec))
    print(markdown(rec))
    return rec


if __name__ == "__main__":
    main()
