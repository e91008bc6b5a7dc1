"""Design-and-tune bench for the selection rule (issue 16), on heart-shift and wearable only.

Selection's cost is the candidates' cross-validation; the *rule* that turns out-of-fold
predictions into a choice is cheap. So this script runs, once per (pair, seed), the product's
runner with selection on (exactly as ``benchmarks/*`` do), captures every ``Selection`` object
(all candidates' out-of-fold predictions on the fit rows) and every candidate's test
predictions, and caches them. Rule variants are then replayed on the cache: each variant sees
only the out-of-fold predictions (fit rows), and the test rows only score the result.

    python benchmarks/selection_tuning.py cache heart      # ~5 min on 2 quiet cores
    python benchmarks/selection_tuning.py cache wearable --seeds 4
    python benchmarks/selection_tuning.py replay heart wearable

The eicu-region protocol is never cached or replayed here: it is the confirmation run.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

CACHE = Path("/tmp/h16_selection_cache")


def _bench(name):
    import importlib

    mod = importlib.import_module({"heart": "heart_shift", "wearable": "wearable_device"}[name])
    return mod


WEARABLE_POOL = ["source_lr", "target_lr", "pooled_lr", "domain_std_lr", "coral_lr", "iw_domain_lr", "sa_lr",
                 "feat_aug_lr", "linear_prior", "stacking_lr"]


def cache_unit(name, pair, seed):
    from healthtransfer import selection as selmod
    from healthtransfer.methods import get_method
    from healthtransfer.study.config import SelectionSection
    from healthtransfer.study.run import run_unit

    mod = _bench(name)
    cfg = mod.config()
    ds = mod.load()
    sources, target = cfg.pairs[pair]
    n_cls = len(ds.class_names) if ds.class_names else 2
    pool = cfg.selection_pool if name == "heart" else WEARABLE_POOL
    pool = [m for m in pool if n_cls == 2 or get_method(m).multiclass]
    captured = []
    real = selmod.select

    def spy(*a, **k):
        s = real(*a, **k)
        captured.append(s)
        return s

    selmod.select = spy
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            recs, _, preds, sels = run_unit(ds, sources, target, seed, cfg.budgets(pair), pool, cfg.test_fraction,
                                            True, SelectionSection(diagnose=False))
    finally:
        selmod.select = real
    out = {"pair": pair, "seed": seed, "n_classes": n_cls, "budgets": {}}
    by_budget = {}
    for p in preds:
        by_budget.setdefault(p["n_labeled"], {})[p["method"]] = p
    for s_rec, s in zip(sels, captured):
        b = s_rec["n_labeled"]
        test = {m: (p["y"], p["proba"]) for m, p in by_budget.get(b, {}).items() if m != "selected"}
        sel_pred = by_budget[b]["selected"]
        out["budgets"][b] = {"selection": _strip(s), "test": test, "selected_now": s_rec["chosen"],
                             "selected_proba": sel_pred["proba"]}
    return out


def _strip(s):
    """A Selection without its back-references' heavy parts (the OOFs are what we replay)."""
    lf = s.label_free
    return {"chosen": s.chosen, "criterion": s.criterion, "bar": s.bar, "anchor": s.anchor, "scores": s.scores,
            "oof": s.oof, "best_candidate": s.best_candidate, "best_baseline": s.best_baseline,
            "label_free": None if lf is None else {"chosen": lf.chosen, "bar": lf.bar, "criterion": lf.criterion},
            "explanation": s.explanation, "reason": s.reason}


def cmd_cache(names, seeds, n_jobs):
    from joblib import Parallel, delayed
    from threadpoolctl import threadpool_limits

    CACHE.mkdir(exist_ok=True)
    jobs = []
    for name in names:
        cfg = _bench(name).config()
        n = seeds if seeds is not None else len(cfg.seeds)
        for seed in range(n):
            for pair in cfg.pairs:
                f = CACHE / f"{name}__{pair}__{seed}.pkl"
                if not f.exists():
                    jobs.append((name, pair, seed, f))

    def run(name, pair, seed, f):
        with threadpool_limits(1):
            res = cache_unit(name, pair, seed)
        tmp = f.with_suffix(".tmp")
        tmp.write_bytes(pickle.dumps(res))
        tmp.rename(f)
        return f.name

    for i, done in enumerate(Parallel(n_jobs=n_jobs, return_as="generator_unordered")(
            delayed(run)(*j) for j in jobs), 1):
        print(f"{i}/{len(jobs)} {done}", flush=True)


# --------------------------------------------------------------------------------------------
# replay: rule variants on the cached out-of-fold predictions
# --------------------------------------------------------------------------------------------

BASELINES = ["source_lr", "source_gbm", "target_lr", "target_gbm", "pooled_lr", "pooled_gbm"]


def _load(names):
    units = []
    for name in names:
        for f in sorted(CACHE.glob(f"{name}__*.pkl")):
            units.append((name, pickle.loads(f.read_bytes())))
    return units


def _metric(name, y, p):
    from healthtransfer.evaluation.metrics import score

    p = np.asarray(p, float)
    if p.ndim == 2 and p.shape[1] == 2:
        p = p[:, 1]
    s = score(y, p, 2 if p.ndim == 1 else p.shape[1])
    return (s["auroc"], s["brier"]) if name == "heart" else (s["accuracy"], s.get("brier", np.nan))


def _evidence(sel, bar, cache, seed):
    from healthtransfer.selection._select import _paired_evidence

    out = {}
    for n, o in sel["oof"].items():
        if n == bar:
            continue
        key = (id(sel), n, bar)
        if key not in cache:
            cache[key] = _paired_evidence(o, sel["oof"][bar], seed=seed)
        out[n] = cache[key]
    return out


def rule(sel, lf, v, cache, seed):
    """One variant of the rule on one cached selection (fit-row evidence only)."""
    from healthtransfer.selection._select import _threshold

    oof = sel["oof"]
    names = list(oof)
    if sel["criterion"] == "target_cv" and lf is not None:
        bar = lf["bar"] if v["bar"] == "lf_bar" else lf["chosen"]
        if bar not in oof:
            bar = sel["bar"]
        if v.get("rare_keep", True) and sel["reason"].startswith("kept the label-free choice") and "rarest" in sel["reason"]:
            return lf["chosen"]
    else:
        bar = sel["bar"]
        if sel["reason"].startswith("kept the label-free choice"):  # target CV impossible
            return sel["chosen"]
    ev = _evidence(sel, bar, cache, seed)
    z = _threshold(v["margin"], len(ev)) if v["bonf"] else v["margin"]
    best, best_key = bar, -np.inf
    for n, e in ev.items():
        lower = e["gain"] - z * e["se"]
        if not (e["gain"] > v["min_gain"] and lower > 0):
            continue
        if v["brier"] and e["brier_diff"] > e["brier_se"]:
            continue
        k = lower if v["pick"] == "lower" else e["gain"]
        if k > best_key:
            best, best_key = n, k
    return best


def stack_weights(sel, lam):
    """Non-negative least squares of the labels on the candidates' out-of-fold probabilities
    (importance-weighted at n_t = 0), normalised, then shrunk toward the bar by ``lam``."""
    from scipy.optimize import nnls

    oof = sel["oof"]
    names = list(oof)
    first = oof[names[0]]
    sw = np.sqrt(first.weight)
    A = np.column_stack([oof[n].proba[:, 1] for n in names]) * sw[:, None]
    w, _ = nnls(A, first.y * sw)
    w = w / w.sum() if w.sum() > 0 else np.ones(len(names)) / len(names)
    out = {n: (1 - lam) * wi for n, wi in zip(names, w)}
    out[sel["bar"]] = out.get(sel["bar"], 0.0) + lam
    return out


def cmd_replay(names, variants):
    import pandas as pd
    from healthtransfer.evaluation.calibration import Recalibrator
    from healthtransfer.selection import recalibration_evidence

    units = _load(names)
    cache = {}
    rows = []
    for name, u in units:
        lf0 = u["budgets"].get(0, {}).get("selection")
        for b, d in u["budgets"].items():
            sel = d["selection"]
            lf = None if b == 0 else (sel["label_free"] or (lf0 and {"chosen": lf0["chosen"], "bar": lf0["bar"],
                                                                      "criterion": lf0["criterion"]}))
            base = dict(bench=name, pair=u["pair"], seed=u["seed"], n_t=b)
            for m, (y, p) in d["test"].items():
                a, br = _metric(name, y, p)
                rows.append(dict(base, method=m, auroc=a, brier=br))
            y_sel = next(iter(d["test"].values()))[0]
            a, br = _metric(name, y_sel, d["selected_proba"])
            rows.append(dict(base, method="shipped_now", auroc=a, brier=br))
            if u["n_classes"] == 2:
                for lam in (0.0, 0.5):
                    w = stack_weights(sel, lam)
                    p = sum(wi * np.asarray(d["test"][n][1])[:, 1] for n, wi in w.items())
                    a, br = _metric(name, y_sel, p)
                    rows.append(dict(base, method=f"stack_shrink{lam}", auroc=a, brier=br,
                                     chosen=max(w, key=w.get)))
            for vname, v in variants.items():
                ch = rule(sel, lf, v, cache, u["seed"])
                y, p = d["test"][ch]
                o = sel["oof"].get(ch)
                if u["n_classes"] == 2 and b > 0 and o is not None and o.criterion == "target_cv" and (
                        v.get("recal", "guard") == "always"
                        or recalibration_evidence(o.y, o.proba[:, 1], seed=u["seed"])["helps"]):
                    cal = Recalibrator().fit(o.y, o.proba[:, 1])
                    p = cal.transform(np.asarray(p)[:, 1])
                a, br = _metric(name, y, p)
                rows.append(dict(base, method=vname, auroc=a, brier=br, chosen=ch))
    df = pd.DataFrame(rows)
    return df


def summary(df, variants):
    import pandas as pd

    out = []
    for (bench, pair, n_t), g in df.groupby(["bench", "pair", "n_t"]):
        m = g.groupby("method")[["auroc", "brier"]].mean()
        bases = [b for b in BASELINES if b in m.index]
        bar = m.loc[bases, "auroc"].idxmax()
        pool = [x for x in m.index if x not in variants and x != "shipped_now" and not x.startswith("stack")]
        oracle = m.loc[pool, "auroc"].max()
        row = dict(bench=bench, pair=pair, n_t=n_t, bar=bar, bar_auroc=m.loc[bar, "auroc"], bar_brier=m.loc[bar, "brier"],
                   oracle=oracle)
        for v in ["shipped_now", *variants, *[x for x in m.index if x.startswith("stack")]]:
            row[f"{v}_d"] = m.loc[v, "auroc"] - m.loc[bar, "auroc"]
            row[f"{v}_db"] = m.loc[v, "brier"] - m.loc[bar, "brier"]
            row[f"{v}_gap"] = m.loc[v, "auroc"] - oracle
        out.append(row)
    return pd.DataFrame(out)


def default_variants():
    V = {}
    for bar in ("lf_bar", "lf_choice"):
        for margin in (0.5, 1.0, 1.5):
            for bonf in (True, False):
                for mg in (0.0, 0.01):
                    V[f"{bar}|m{margin}|{'B' if bonf else 'n'}|g{mg}"] = dict(
                        bar=bar, margin=margin, bonf=bonf, min_gain=mg, brier=True, pick="lower")
    V["lf_bar|m1.0|B|g0.01|nobrier"] = dict(bar="lf_bar", margin=1.0, bonf=True, min_gain=0.01, brier=False, pick="lower")
    V["lf_bar|m1.0|B|g0.01|pickgain"] = dict(bar="lf_bar", margin=1.0, bonf=True, min_gain=0.01, brier=True, pick="gain")
    V["old_like"] = dict(bar="lf_choice", margin=1.0, bonf=False, min_gain=0.01, brier=False, pick="gain",
                         recal="always")
    V["lf_bar|m1.0|B|g0.01|recal_always"] = dict(bar="lf_bar", margin=1.0, bonf=True, min_gain=0.01, brier=True,
                                                 pick="lower", recal="always")
    V["bar_only"] = dict(bar="lf_bar", margin=99.0, bonf=False, min_gain=1.0, brier=True, pick="lower")
    return V


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["cache", "replay"])
    ap.add_argument("names", nargs="+")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--n-jobs", type=int, default=2)
    a = ap.parse_args()
    if a.cmd == "cache":
        cmd_cache(a.names, a.seeds, a.n_jobs)
    else:
        V = default_variants()
        s = summary(cmd_replay(a.names, V), V)
        import pandas as pd

        pd.set_option("display.width", 250)
        agg = []
        for v in ["shipped_now", *V, "stack_shrink0.0", "stack_shrink0.5"]:
            if f"{v}_d" not in s:
                continue
            agg.append(dict(variant=v, mean_d=s[f"{v}_d"].mean(), worst_d=s[f"{v}_d"].min(),
                            cells_miss=int((s[f"{v}_d"] < -0.005).sum()), mean_db=s[f"{v}_db"].mean(),
                            brier_miss=int((s[f"{v}_db"] > 0.002).sum()), mean_gap=s[f"{v}_gap"].mean()))
        print(pd.DataFrame(agg).sort_values("mean_d").to_string())


