"""Scale benchmark: the scalable transfer methods against skada's exact counterparts.

Synthetic two-domain data: 50 mixed-type features (30 numeric, 10 binary, 10 categorical with
three levels, one-hot encoded drop-first -> 60 columns), 10% of the values missing at random,
a known covariate shift (target means shifted and scales changed on 15 numeric features) and
a label shift (class-1 prior about 0.30 at the source, 0.50 at the target). Unsupervised
adaptation (no target labels); target AUROC on 50k (at most n) fresh target rows.

Every cell (method x size) runs in its own subprocess, stopped at ``--timeout`` seconds
(default 600) or when the resident memory of its process tree passes ``--max-gib`` (default
16). Fit time is measured around ``fit`` in the child; peak memory is the child's
``ru_maxrss`` (it includes the memory-mapped data the cell touches) and, for killed cells,
the largest RSS the parent saw.

Usage::

    python benchmarks/scale.py --sizes 10000 100000            # both tables, all methods
    python benchmarks/scale.py --sizes 1000000 --no-skada      # scalable methods only
    python benchmarks/scale.py --sizes 10000 --methods coral_streamed

Writes ``benchmarks/results/scale.json`` (merged with earlier runs: cells keyed by
method/size) and ``benchmarks/results/scale.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _limits import run_limited  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DATA_DIR = Path(os.environ.get("HT_SCALE_DATA", "/tmp/healthtransfer_scale"))

SCALABLE = ["iw_domain_chunked", "kmm_nystroem", "kliep_nystroem", "tca_nystroem",
            "ot_minibatch", "coral_streamed", "joint_mmd_minibatch"]
SKADA = {  # scalable name -> skada counterpart (cell name "skada:<adapter>")
    "iw_domain_chunked": "DiscriminatorReweightAdapter",
    "kmm_nystroem": "KMMReweightAdapter",
    "kliep_nystroem": "KLIEPReweightAdapter",
    "tca_nystroem": "TransferComponentAnalysisAdapter",
    "ot_minibatch": "OTMappingAdapter",
    "coral_streamed": "CORALAdapter",
    # joint_mmd_minibatch: skada.deep.DAN needs skorch, which is not installed -> no cell
}


# -- data --------------------------------------------------------------------------------------
def make_data(n: int, seed: int = 0, n_test: int | None = None):
    """(X, y, sample_domain, X_test, y_test): n source + n target rows, n_test target test rows."""
    rng = np.random.default_rng(seed)
    n_test = min(n, 50_000) if n_test is None else n_test
    p_num, p_bin, p_cat = 30, 10, 10
    w_num = rng.normal(scale=0.6, size=p_num) * (rng.random(p_num) < 0.6)
    w_bin = rng.normal(scale=0.5, size=p_bin)
    w_cat = rng.normal(scale=0.5, size=(p_cat, 3))
    shift_mu = np.zeros(p_num)
    shift_mu[:15] = rng.choice([-0.6, 0.6], size=15)
    shift_sd = np.ones(p_num)
    shift_sd[:15] = rng.uniform(0.7, 1.3, size=15)

    def draw(m, target, prior):
        # rejection-free label shift: draw 3x candidates, keep a class mix with the prior
        k = int(m * 3)
        Z = rng.normal(size=(k, p_num)).astype(np.float64)
        if target:
            Z = Z * shift_sd + shift_mu
        B = (rng.random((k, p_bin)) < (0.3 + 0.4 * (Z[:, :p_bin] > 0))).astype(float)
        C = np.clip(np.floor((Z[:, p_bin:p_bin + p_cat] + 1.5) / 1.0 + rng.normal(scale=0.5, size=(k, p_cat))), 0, 2).astype(int)
        eta = Z @ w_num + B @ w_bin + w_cat[np.arange(p_cat), C].sum(axis=1) \
            + 0.8 * np.sin(2 * Z[:, 0]) - 0.5 * Z[:, 1] ** 2 - 1.2
        y = (rng.random(k) < 1 / (1 + np.exp(-eta))).astype(int)
        n1 = int(round(prior * m))
        i1, i0 = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
        n1 = min(n1, len(i1))
        keep = np.sort(np.r_[rng.choice(i1, n1, replace=False), rng.choice(i0, m - n1, replace=False)])
        onehot = np.zeros((m, p_cat * 2))
        Ck = C[keep]
        for j in range(p_cat):
            onehot[:, 2 * j] = Ck[:, j] == 1
            onehot[:, 2 * j + 1] = Ck[:, j] == 2
        X = np.hstack([Z[keep], B[keep], onehot])
        # 10% missing at random; a categorical's one-hot pair goes missing together
        miss = rng.random((m, p_num + p_bin + p_cat)) < 0.10
        X[:, : p_num + p_bin][miss[:, : p_num + p_bin]] = np.nan
        cm = np.repeat(miss[:, p_num + p_bin:], 2, axis=1)
        X[:, p_num + p_bin:][cm] = np.nan
        return X, y[keep]

    Xs, ys = draw(n, False, 0.30)
    Xt, yt = draw(n, True, 0.50)
    Xte, yte = draw(n_test, True, 0.50)
    X = np.vstack([Xs, Xt])
    y = np.r_[ys, np.full(n, -1)]
    sd = np.r_[np.ones(n, int), -np.ones(n, int)]
    return X, y, sd, Xte, yte


def data_files(n: int) -> Path:
    d = DATA_DIR / f"n{n}"
    if not (d / "done").exists():
        d.mkdir(parents=True, exist_ok=True)
        X, y, sd, Xte, yte = make_data(n)
        for name, arr in dict(X=X, y=y, sd=sd, Xte=Xte, yte=yte).items():
            np.save(d / f"{name}.npy", arr)
        (d / "done").write_text("ok")
    return d


# -- one cell (child process) ------------------------------------------------------------------
def _skada_pipeline(adapter: str, n_features: int):
    import skada
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if adapter == "DiscriminatorReweightAdapter":
        a = skada.DiscriminatorReweightAdapter()
    elif adapter == "KMMReweightAdapter":
        a = skada.KMMReweightAdapter(gamma=1.0 / n_features, max_iter=1000)
    elif adapter == "KLIEPReweightAdapter":
        a = skada.KLIEPReweightAdapter(gamma=[0.1 / n_features, 0.3 / n_features, 1.0 / n_features,
                                              3.0 / n_features], n_centers=100, random_state=0)
    elif adapter == "TransferComponentAnalysisAdapter":
        a = skada.TransferComponentAnalysisAdapter(n_components=n_features, mu=0.1)
    elif adapter == "OTMappingAdapter":
        a = skada.OTMappingAdapter()
    elif adapter == "CORALAdapter":
        a = skada.CORALAdapter()
    else:
        raise ValueError(adapter)
    lr = LogisticRegression(max_iter=2000)
    if "Reweight" in adapter:
        lr = lr.set_fit_request(sample_weight=True)
    return skada.make_da_pipeline(SimpleImputer(strategy="median", add_indicator=True),
                                  StandardScaler(), a, lr)


def run_cell(method: str, n: int) -> dict:
    import resource
    import warnings

    from sklearn.metrics import roc_auc_score
    from threadpoolctl import threadpool_limits

    d = data_files(n)
    X = np.load(d / "X.npy", mmap_mode="r")
    y = np.load(d / "y.npy")
    sd = np.load(d / "sd.npy")
    Xte = np.load(d / "Xte.npy")
    yte = np.load(d / "yte.npy")
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    warnings.simplefilter("ignore")
    with threadpool_limits(int(os.environ.get("HT_THREADS", "2"))):
        if method.startswith("skada:"):
            import sklearn

            from healthtransfer.methods._skada import import_skada

            import_skada()
            Xa = np.asarray(X)
            with sklearn.config_context(enable_metadata_routing=True):
                # set_fit_request only exists with routing on: build the pipeline inside
                est = _skada_pipeline(method.split(":", 1)[1], X.shape[1])
                t0 = time.perf_counter()
                est.fit(Xa, y, sample_domain=sd)
                fit_s = time.perf_counter() - t0
                proba = est.predict_proba(Xte, sample_domain=-np.ones(len(Xte), int))[:, 1]
        else:
            from healthtransfer.methods import make_method

            est = make_method(method, random_state=0)
            Xa = np.asarray(X)
            t0 = time.perf_counter()
            est.fit(Xa, y, sample_domain=sd)
            fit_s = time.perf_counter() - t0
            proba = est.predict_proba(Xte)[:, 1]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"method": method, "n": n, "status": "ok", "fit_seconds": fit_s,
            "peak_gib": peak, "data_gib": rss0, "auroc": float(roc_auc_score(yte, proba))}


# -- the driver -------------------------------------------------------------------------------------
def launch(method: str, n: int, timeout: float, max_gib: float) -> dict:
    cmd = [sys.executable, __file__, "--cell", method, str(n)]
    r = run_limited(cmd, timeout=timeout, max_gib=max_gib)
    out, err, wall, seen, status = r.out, r.err, r.wall_seconds, r.peak_gib, r.status
    if status is None:
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        if r.returncode == 0 and lines:
            rec = json.loads(lines[-1])
            rec["wall_seconds"] = wall
            return rec
        tail = (err.strip().splitlines() or ["?"])[-1][:200]
        status = f"failed: {tail}"
    return {"method": method, "n": n, "status": status, "fit_seconds": None,
            "peak_gib": seen, "auroc": None, "wall_seconds": wall}


def write_md(cells: list[dict], path: Path) -> None:
    by = {(c["method"], c["n"]): c for c in cells}
    sizes = sorted({c["n"] for c in cells})
    lines = ["# Scale benchmark", "",
             "Synthetic two-domain data (50 mixed-type features, 10% missing, covariate + label "
             "shift), unsupervised adaptation, 2 cores. Each cell in its own process, stopped at "
             "10 min or 16 GiB. `fit s` = fit time, `GiB` = peak RSS of the cell process "
             "(includes the data), `AUROC` = target AUROC on fresh target rows. "
             "`speed-up` = skada fit time / scalable fit time.", ""]
    for n in sizes:
        lines += [f"## {n:,} rows per domain", "",
                  "| method | fit s | GiB | AUROC | skada counterpart | skada fit s | skada GiB | skada AUROC | speed-up | dAUROC |",
                  "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|"]
        total = 0.0
        for m in SCALABLE:
            c = by.get((m, n))
            if c is None:
                continue
            sk = SKADA.get(m)
            s = by.get((f"skada:{sk}", n)) if sk else None

            def f(x, fmt):
                return "-" if x is None else format(x, fmt)

            if c["status"] == "ok":
                total += c["fit_seconds"]
                row = [m, f(c["fit_seconds"], ".1f"), f(c["peak_gib"], ".2f"), f(c["auroc"], ".4f")]
            else:
                row = [m, c["status"], f(c["peak_gib"], ".2f"), "-"]
            if s is None:
                row += [sk or "(none run)", "-", "-", "-", "-", "-"]
            elif s["status"] == "ok":
                sp = s["fit_seconds"] / c["fit_seconds"] if c["status"] == "ok" and c["fit_seconds"] else None
                da = c["auroc"] - s["auroc"] if c["status"] == "ok" else None
                row += [sk, f(s["fit_seconds"], ".1f"), f(s["peak_gib"], ".2f"), f(s["auroc"], ".4f"),
                        f(sp, ".1f") + ("x" if sp else ""), f(da, "+.4f")]
            else:
                row += [sk, s["status"], f(s["peak_gib"], ".2f"), "-", "skada cannot finish", "-"]
            lines.append("| " + " | ".join(row) + " |")
        lines += ["", f"Sum of scalable fit times at {n:,} rows: {total:.0f} s.", ""]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cell", nargs=2, metavar=("METHOD", "N"))
    ap.add_argument("--sizes", nargs="+", type=int, default=[10_000, 100_000])
    ap.add_argument("--methods", nargs="+", default=SCALABLE)
    ap.add_argument("--no-skada", action="store_true")
    ap.add_argument("--only-skada", action="store_true")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--max-gib", type=float, default=16.0)
    ap.add_argument("--out", default=str(RESULTS / "scale.json"))
    args = ap.parse_args(argv)
    if args.cell:
        print(json.dumps(run_cell(args.cell[0], int(args.cell[1]))), flush=True)
        return
    from rich.progress import Progress

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cells = json.loads(out.read_text())["cells"] if out.exists() else []
    plan = []
    for n in args.sizes:
        for m in args.methods:
            if not args.only_skada:
                plan.append((m, n))
            if not args.no_skada and m in SKADA:
                plan.append((f"skada:{SKADA[m]}", n))
    with Progress() as progress:
        task = progress.add_task("generating data", total=len(plan))
        for n in args.sizes:
            data_files(n)
        for m, n in plan:
            progress.update(task, description=f"{m} @ {n:,}")
            rec = launch(m, n, args.timeout, args.max_gib)
            progress.console.print(json.dumps(rec))
            cells = [c for c in cells if (c["method"], c["n"]) != (m, n)] + [rec]
            out.write_text(json.dumps({"cells": cells, "cores": os.cpu_count()}, indent=1))
            write_md(cells, out.with_suffix(".md"))
            progress.advance(task)


if __name__ == "__main__":
    main()
