"""What a study will cost, before it runs: ``healthtransfer run STUDY --dry-run``.

The plan counts the units ((target, seed) pairs), the label budgets and the method fits, and
estimates each method's fit time by timing it on the study's own rows at two sample sizes and
extrapolating to the full training size (the measured growth exponent, so a kernel method that
grows with n^2 or n^3 is not priced like logistic regression). The selection's refits are
counted and priced too (they are most of a study's CPU: each candidate is refitted once per
target cross-validation fold and repeat, or per source fold without labels); bootstrap
intervals, diagnostics and the report come on top and are small beside them.

Example
-------
>>> from healthtransfer.study import Study
>>> s = Study.model_validate({"study": {"name": "x"}, "data": {"dataset": "uci_heart"},
...     "transfer": {"sources": ["cleveland"], "target": "va", "seeds": 2, "methods": ["source_lr"]}})
>>> p = plan_study(s, time_fits=False)
>>> p["units"], p["fits"]
(2, 8)
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from ..methods import get_method, make_method
from ..methods._registry import resolve_method
from .config import Study

__all__ = ["plan_study", "format_plan"]

# a method whose fit is this many times the median method's is called out in the plan
EXPENSIVE = 10.0


def plan_study(study: Study, *, methods: list[str] | None = None, data_dir=None, dataset=None,
               n_jobs: int = 1, time_fits: bool = True) -> dict[str, Any]:
    """Units, fits and an estimate of the fit time of ``study`` (nothing is written)."""
    from .run import _methods, load_study_data, prepare_unit, targets_of

    ds = dataset if dataset is not None else load_study_data(study, data_dir)
    names = _methods(study, methods, ds.reference_score)
    tr = study.transfer
    dom = ds.frame[ds.domain].astype(str)
    n_classes = int(ds.frame[ds.label].nunique())
    n_src = int(dom.isin(tr.sources).sum())
    targets = []
    fits_by_method: dict[str, int] = {}
    refits_by_method: dict[str, int] = {}
    sel = study.selection
    for t in targets_of(study):
        n_t_rows = int((dom == t).sum())
        n_train = n_src + int(round(n_t_rows * (1 - tr.test_fraction)))
        resolved = {m: resolve_method(m, n_train) for m in names}
        per_budget = {}
        for b in tr.labeled_target:
            run = [resolved[m] for m in names if _runs(get_method(resolved[m]), b, n_classes, ds.reference_score)]
            per_budget[b] = run
            for m in run:
                fits_by_method[m] = fits_by_method.get(m, 0) + tr.seeds
                if sel.enabled:
                    refits_by_method[m] = refits_by_method.get(m, 0) + tr.seeds * _selection_refits(
                        get_method(m), b, sel)
        targets.append({"target": t, "rows": n_t_rows, "train_rows": n_train, "budgets": per_budget,
                        "swapped": {m: r for m, r in resolved.items() if r != m}})
    plan: dict[str, Any] = {
        "study": study.study.name, "targets": targets, "seeds": tr.seeds, "budgets": list(tr.labeled_target),
        "units": len(targets) * tr.seeds, "methods": names, "fits": sum(fits_by_method.values()),
        "fits_by_method": fits_by_method, "selection_refits": sum(refits_by_method.values()),
        "selection_refits_by_method": refits_by_method, "n_jobs": n_jobs, "per_fit_seconds": {}, "estimated_fit_seconds": None,
        "estimated_wall_seconds": None, "expensive": [],
    }
    if not time_fits or not targets:
        return plan
    u = prepare_unit(ds, tr.sources, targets[0]["target"], 0, tr.test_fraction)
    X = np.vstack([u.Xs, u.Xp])
    y = np.r_[u.ys, np.where(np.arange(len(u.yp)) < max(tr.labeled_target), u.yp, -1)]
    sd = u.sd
    if ds.reference_score:  # reference methods read the score's logit as the last column
        X = np.c_[X, np.zeros(len(X))]
    full = max(t["train_rows"] for t in targets)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # as the runner fits: one thread per unit (see run_unit)
        for m in fits_by_method:
            plan["per_fit_seconds"][m] = _price(m, X, y, sd, full)
    fit_s = sum(plan["per_fit_seconds"][m] * k for m, k in fits_by_method.items())
    refit_s = sum(plan["per_fit_seconds"][m] * k for m, k in refits_by_method.items())
    plan["estimated_fit_seconds"] = fit_s
    plan["estimated_selection_seconds"] = refit_s
    plan["estimated_wall_seconds"] = (fit_s + refit_s) / max(1, min(n_jobs, plan["units"]))
    med = float(np.median(list(plan["per_fit_seconds"].values())))
    plan["expensive"] = sorted((m for m, s in plan["per_fit_seconds"].items() if med > 0 and s > EXPENSIVE * med),
                               key=lambda m: -plan["per_fit_seconds"][m])
    return plan


def _runs(spec, budget: int, n_classes: int, reference) -> bool:
    if spec.needs_labels and budget == 0:
        return False
    if n_classes > 2 and not spec.multiclass:
        return False
    return not (spec.uses_reference and not reference)


def _selection_refits(spec, budget: int, sel) -> int:
    """Refits the selection makes of one candidate at one budget of one unit (an upper bound:
    with fewer labelled rows of a class than folds, fewer folds run; see selection.select)."""
    if budget == 0:
        return 0 if spec.needs_labels else int(sel.folds_source)
    if spec.uses_target not in ("labelled", "both"):
        return 1  # never reads a target label: one fit serves every fold
    repeats = int(np.clip(np.ceil(100 / budget), 1, 3))
    return int(sel.folds_target) * repeats


def _price(name: str, X, y, sd, n_full: int) -> float:
    """Seconds for one fit on ``n_full`` rows, from timed fits on two stratified samples."""
    rng = np.random.default_rng(0)
    src, tgt = np.flatnonzero(sd > 0), np.flatnonzero(sd < 0)
    sizes = sorted({min(len(X), 150), min(len(X), 450)})
    times = []
    for n in sizes:
        k_t = max(2, int(n * len(tgt) / len(X)))
        rows = np.r_[rng.choice(src, min(len(src), n - k_t), replace=False), rng.choice(tgt, min(len(tgt), k_t), replace=False)]
        yy = y[rows]
        est = make_method(name, random_state=0)
        t0 = time.process_time()  # CPU seconds: one thread, so not inflated by a busy machine
        try:
            est.fit(X[rows], yy, sample_domain=sd[rows])
        except Exception:  # a method that cannot fit a tiny sample is priced as free, not fatal
            return 0.0
        times.append((len(rows), time.process_time() - t0))
    (n1, t1), (n2, t2) = times[0], times[-1]
    if n2 <= n1 or t1 <= 0 or t2 <= 0:
        return t2 * n_full / max(n2, 1)
    # growth exponent between the two sizes, kept between constant and cubic (timer noise);
    # not floored at linear: boosting's fixed number of rounds costs nearly the same at 450 and
    # 2,500 rows, and a linear floor priced it 4x too high
    b = min(3.0, max(0.0, math.log(t2 / t1) / math.log(n2 / n1)))
    return t2 * (n_full / n2) ** b


def format_plan(plan: dict[str, Any]) -> str:
    """The plan as a few lines of text (80 columns)."""
    lines = [f"plan for '{plan['study']}': {plan['units']} units ({len(plan['targets'])} target(s) x "
             f"{plan['seeds']} seeds), budgets {plan['budgets']}, {len(plan['methods'])} methods, "
             f"{plan['fits']} method fits"]
    for t in plan["targets"]:
        counts = ", ".join(f"n_t={b}: {len(ms)}" for b, ms in t["budgets"].items())
        lines.append(f"  {t['target']}: {t['rows']} rows, {t['train_rows']} training rows; methods per budget: {counts}")
        for m, r in t["swapped"].items():
            lines.append(f"    {m} runs as its scalable variant {r} at this size")
    if plan["estimated_fit_seconds"] is not None:
        lines.append(f"estimated CPU: {_dur(plan['estimated_fit_seconds'])} for the fits + "
                     f"{_dur(plan['estimated_selection_seconds'])} for the selection's {plan['selection_refits']} "
                     f"refits; about {_dur(plan['estimated_wall_seconds'])} wall with {plan['n_jobs']} job(s)")
        lines.append("  (timed on samples of this data, so rough; a method's label-free stage is shared by")
        lines.append("   its refits, which the estimate does not count; intervals and the report come on top)")
        for m in plan["expensive"]:
            s = plan["per_fit_seconds"][m]
            k = plan["fits_by_method"][m] + plan["selection_refits_by_method"].get(m, 0)
            lines.append(f"  {m}: about {_dur(s)} per fit, {k} fits with the selection's = "
                         f"{_dur(s * k)}; more than {EXPENSIVE:.0f}x the median method")
    return "\n".join(lines)


def _dur(s: float) -> str:
    return f"{s:.1f} s" if s < 90 else f"{s / 60:.1f} min"
