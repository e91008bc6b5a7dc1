"""Benchmark units: the configuration, the (pair, seed) unit's split and preprocessing, and the
runner of one unit (our methods, ``selected``, skada, extras) that yields its records.

One *unit* is one (pair, seed). Inside a unit:

1. our registered methods are fitted through :func:`healthtransfer.study.run.run_unit` (the
   product's own runner: same split, same preprocessing fitted on source + target pool only,
   the reference score appended for reference-score methods, scored on the rows the protocol
   scores);
2. ``selected``: a second ``run_unit`` call over a small candidate pool with selection on
   (``healthtransfer.selection.select`` on the fit rows only, then its calibration step),
   exactly as a study runs it; its test metrics are those of the chosen candidate;
3. skada's DA pipelines (:mod:`_skada_runner`) on the very same preprocessed matrices, rebuilt
   here with the same ``target_split`` / ``make_preprocessor`` calls;
4. optional dataset-specific extras (e.g. APACHE IV recal-ITL, protocol LightGBM).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Callable

import numpy as np
import pandas as pd

from _skada_runner import run_skada

# The selection candidate pool: the six baselines plus cheap members of each family. Selection
# refits each candidate per CV fold, so the deep methods (seconds per fit) are left out.
SELECTION_POOL = [
    "source_lr", "source_gbm", "target_lr", "target_gbm", "pooled_lr", "pooled_gbm",
    "iw_domain_lr", "coral_lr", "sa_lr", "label_shift_em_lr", "feat_aug_lr", "linear_prior",
    "stacking_lr", "recalibration_lr",
]

BASELINES = ["source_lr", "source_gbm", "target_lr", "target_gbm", "pooled_lr", "pooled_gbm"]


# The parts of a unit, and the record ``side`` each one writes.
PHASES = ("ours", "selection", "skada", "extra")
PHASE_SIDES = {"ours": {"ours", "reference"}, "selection": {"selected"}, "skada": {"skada"}, "extra": {"extra"}}


def pair_key(sources, target) -> str:
    """The label of a (sources → target) pair, e.g. ``Midwest→South``; a benchmark unit is a
    (pair, seed)."""
    return f"{'+'.join(sources)}→{target}"


def make_pairs(sources_by_target: dict[str, list[str]] | None = None,
               ordered: list[tuple[list[str], str]] | None = None) -> dict[str, tuple[list[str], str]]:
    """``{pair_key: (sources, target)}`` from ``{target: sources}`` and/or a list of pairs."""
    items = [(list(v), t) for t, v in (sources_by_target or {}).items()] + [(list(s), t) for s, t in ordered or []]
    return {pair_key(s, t): (s, t) for s, t in items}


@dataclass
class BenchConfig:
    name: str
    title: str
    protocol: str
    pairs: dict[str, tuple[list[str], str]]  # pair_key -> (its source domains, its target)
    budgets_by_target: dict[str, list[int]]
    seeds: list[int]
    methods: list[str]
    skada: list[str]
    selection: bool = True
    selection_pool: list[str] = field(default_factory=lambda: list(SELECTION_POOL))
    headline: str = "auroc"
    secondary: tuple[str, ...] = ("brier", "ece")
    higher_better: dict[str, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    n_jobs: int = 2
    test_fraction: float = 0.5
    # which parts of a unit run (a re-run of one phase can be merged into a committed result)
    phases: tuple[str, ...] = PHASES

    def budgets(self, pair: str) -> list[int]:
        return self.budgets_by_target[self.pairs[pair][1]]



def _record_pair(r: dict, by_target: dict[str, str]) -> str:
    """A record's pair; results written before pairs were keys carry only sources + target
    (one source set per target then), and their skips / selections only the target."""
    if isinstance(r.get("pair"), str):
        return r["pair"]
    if isinstance(r.get("sources"), (list, tuple)) and r["sources"]:
        return pair_key(r["sources"], r["target"])
    return by_target.get(r["target"], r["target"])


# --------------------------------------------------------------------------------------------
# unit context: the same split / preprocessing as healthtransfer.study.run._run_unit
# --------------------------------------------------------------------------------------------

def unit_context(ds, sources, target, seed, test_fraction=0.5):
    from healthtransfer.data.preprocess import make_preprocessor
    from healthtransfer.data.splits import target_split

    f = ds.frame
    dom = f[ds.domain].astype(str)
    src_rows = f[dom.isin(sources)]
    tgt_rows = f[dom == target]
    yt = tgt_rows[ds.label].to_numpy().astype(int)
    groups = tgt_rows[ds.group].to_numpy() if ds.group and ds.group in tgt_rows else None
    split = target_split(yt, seed=seed, test_fraction=test_fraction, groups=groups)
    pool = tgt_rows.iloc[split.pool]
    test = tgt_rows.iloc[split.test]
    pre = make_preprocessor(ds.numeric, ds.categorical).fit(pd.concat([src_rows, pool])[ds.features])
    Xs = pre.transform(src_rows[ds.features])
    Xp = pre.transform(pool[ds.features])
    Xte = pre.transform(test[ds.features])
    eval_mask = np.ones(len(test), bool)
    if ds.reference_score:
        eval_mask = ~np.isnan(test[ds.reference_score].to_numpy(float))
    n_classes = len(ds.class_names) if ds.class_names else int(f[ds.label].nunique())
    return SimpleNamespace(
        src_rows=src_rows, pool=pool, test=test, Xs=Xs, Xp=Xp, Xte=Xte,
        ys=src_rows[ds.label].to_numpy().astype(int), yp=pool[ds.label].to_numpy().astype(int),
        yte=test[ds.label].to_numpy().astype(int), eval_mask=eval_mask, n_classes=n_classes,
        ds=ds, seed=seed, target=target, sources=sources,
    )


# --------------------------------------------------------------------------------------------
# one unit
# --------------------------------------------------------------------------------------------

def _clean(rec: dict) -> dict:
    out = {}
    for k, v in rec.items():
        if k.endswith("_ci"):
            continue
        if isinstance(v, (np.floating, np.integer)):
            v = v.item()
        out[k] = v
    return out


def _score_record(ctx, name, side, family, n_t, proba, fit_s, **extra) -> dict:
    from healthtransfer.evaluation.metrics import score

    m = ctx.eval_mask
    p = np.asarray(proba, float)[m]
    if ctx.n_classes == 2 and p.ndim == 2:
        p = p[:, 1]
    rec = dict(method=name, side=side, family=family, sources=list(ctx.sources), target=ctx.target,
               pair=pair_key(ctx.sources, ctx.target),
               n_labeled=int(n_t), seed=int(ctx.seed), n_test=int(m.sum()), fit_seconds=float(fit_s))
    rec.update(score(ctx.yte[m], p, ctx.n_classes))
    rec.update(extra)
    return rec


def run_bench_unit(cfg: BenchConfig, ds, pair: str, seed: int,
                   extras: Callable | None = None) -> dict:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        try:
            import torch

            torch.set_num_threads(1)
        except Exception:  # pragma: no cover
            pass
        try:
            return dict(_run_bench_unit(cfg, ds, pair, seed, extras), pair=pair, seed=seed)
        except Exception as exc:  # keep the rest of the run; the unit is reported as skipped
            import traceback

            target = cfg.pairs[pair][1]
            return dict(records=[], selections=[], seconds=0.0, phases={}, pair=pair, seed=seed,
                        skipped=[dict(pair=pair, target=target, seed=seed, n_labeled=None, method="(unit)",
                                      reason=f"unit failed: {type(exc).__name__}: {str(exc)[:300]}",
                                      traceback=traceback.format_exc()[-2000:])])


def _run_bench_unit(cfg, ds, pair, seed, extras):
    from healthtransfer.data.splits import label_budget
    from healthtransfer.methods import get_method
    from healthtransfer.study.config import SelectionSection
    from healthtransfer.study.run import run_unit

    sources, target = cfg.pairs[pair]
    budgets = cfg.budgets(pair)
    t_unit = time.perf_counter()
    phases = {}
    records: list[dict] = []
    skipped: list[dict] = []
    # 1. ours, through the product's runner
    recs, sk = [], []
    if "ours" in cfg.phases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            recs, sk, _, _ = run_unit(ds, sources, target, seed, budgets, cfg.methods, cfg.test_fraction, False,
                                      None)
    for r in recs:
        r = _clean(r)
        r["side"] = "reference" if str(r["method"]).startswith("reference:") else "ours"
        r["pair"] = pair
        records.append(r)
    skipped += [dict(_clean(s), pair=pair) for s in sk]
    phases["ours"] = round(time.perf_counter() - t_unit)
    # 2. selection, exactly as a study runs it, over the candidate pool
    selections = []
    if cfg.selection and "selection" in cfg.phases:
        n_cls = len(ds.class_names) if ds.class_names else 2
        pool = [m for m in cfg.selection_pool if n_cls == 2 or get_method(m).multiclass]
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            srecs, _, _, sels = run_unit(ds, sources, target, seed, budgets, pool, cfg.test_fraction, False,
                                         SelectionSection(diagnose=False))
        sel_s = time.perf_counter() - t0
        phases["selection"] = round(sel_s)
        n_b = max(1, len({r["n_labeled"] for r in srecs}))
        for r in srecs:
            if r["method"] == "selected":
                r = _clean(r)
                r["side"] = "selected"
                r["pair"] = pair
                r["fit_seconds"] = sel_s / n_b  # candidates' fits + CV, per budget
                records.append(r)
        for s in sels:
            selections.append({"pair": pair, **{k: s[k] for k in (
                "target", "seed", "n_labeled", "chosen", "criterion", "reason", "anchor", "best_candidate",
                "best_baseline", "calibration", "bar")}})
    # 3. skada, on the same matrices (fitted once: skada masks target labels)
    ctx = unit_context(ds, sources, target, seed, cfg.test_fraction)
    if len(np.unique(ctx.yte)) < 2:
        return dict(records=records, skipped=skipped, selections=selections, seconds=time.perf_counter() - t_unit)
    done_budgets = sorted({r["n_labeled"] for r in records if r["side"] in ("ours", "selected")}
                          or _feasible_budgets(ctx, budgets))
    t0 = time.perf_counter()
    sk_out = run_skada(ctx, cfg.skada) if cfg.skada and "skada" in cfg.phases else []
    phases["skada"] = round(time.perf_counter() - t0)
    for name, proba, fit_s, err in sk_out:
        if proba is None:
            skipped.append(dict(pair=pair, target=target, seed=seed, n_labeled=None, method=f"skada:{name}",
                                reason=err))
            continue
        for n_t in done_budgets:
            records.append(_score_record(ctx, f"skada:{name}", "skada", "skada", n_t, proba, fit_s,
                                         labels_used=False))
    # 4. dataset-specific extras, per budget, on the same split and labelled draw
    if extras is not None and "extra" in cfg.phases:
        for n_t in done_budgets:
            lab = label_budget(ctx.yp, np.arange(len(ctx.pool)), n_t, seed=seed)
            for name, family, proba, fit_s in extras(ctx, n_t, lab):
                records.append(_score_record(ctx, name, "extra", family, n_t, proba, fit_s))
    return dict(records=records, skipped=skipped, selections=selections, seconds=time.perf_counter() - t_unit,
                phases=phases)


def _feasible_budgets(ctx, budgets) -> list[int]:
    """The budgets the pool can hold (used when the ``ours`` phase did not run in this pass)."""
    return [b for b in budgets if b <= len(ctx.pool)]
