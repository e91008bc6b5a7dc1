"""``diagnose``: how, and how much, a target site differs from its source sites."""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from .._sampling import uniform_rows
from ..errors import UserInputError
from ._features import feature_shift
from ._label import estimate_label_shift
from ._report import ShiftReport
from ._summary import THRESHOLDS, summarise
from ._tests import WEIGHT_CLIP, cv_auroc, domain_classifier_test, importance_ess, mmd_test

__all__ = ["diagnose", "diagnose_study_cli"]


def _target_rows(frame: pd.DataFrame, is_target: np.ndarray, rows_target, target: str) -> np.ndarray:
    """Boolean mask over ``frame`` of the target rows allowed to be used."""
    if rows_target is None:
        return is_target
    arr = np.asarray(rows_target)
    if arr.dtype == bool:
        if len(arr) == len(frame):
            mask = arr & is_target
            if (arr & ~is_target).any():
                raise UserInputError("rows_target selects rows that are not at the target", where=f"target '{target}'",
                                     fix="pass a mask that is True only on target rows")
        elif len(arr) == int(is_target.sum()):
            mask = np.zeros(len(frame), bool)
            mask[np.flatnonzero(is_target)[arr]] = True
        else:
            raise UserInputError(f"rows_target is a boolean mask of length {len(arr)}", where=f"target '{target}'",
                                 fix=f"use length {len(frame)} (all rows) or {int(is_target.sum())} (target rows)")
        return mask
    pos = frame.index.get_indexer(pd.Index(arr.ravel()))
    if (pos < 0).any():
        raise UserInputError("rows_target holds index labels that are not in the dataset", where=f"target '{target}'",
                             fix="pass index labels of dataset.frame (or a boolean mask)")
    mask = np.zeros(len(frame), bool)
    mask[pos] = True
    if (mask & ~is_target).any():
        raise UserInputError("rows_target selects rows that are not at the target", where=f"target '{target}'",
                             fix="pass only target rows (the target pool)")
    return mask


def _base(name: str, feats: list[str]) -> str:
    """The feature a transformed column comes from (``cp=4`` -> ``cp``)."""
    if name in feats:
        return name
    for f in sorted(feats, key=len, reverse=True):
        if name.startswith(f + "=") or name.startswith(f + "__"):
            return f
    return name


def _class_codes(dataset, ys: np.ndarray) -> tuple[list, list]:
    """(label codes, display names) from the dataset's declared classes and the SOURCE labels
    only; the target's labels are never looked at."""
    names = list(dataset.class_names or [])
    seen = pd.unique(ys).tolist()
    K = len(names)
    if K and all(isinstance(v, (int, np.integer)) and 0 <= v < K for v in seen):
        return list(range(K)), names
    if K and set(seen) <= set(names):
        return names, names
    codes = sorted(seen)
    return codes, codes


def diagnose(dataset, sources: list[str], target: str, *, rows_target=None, random_state: int = 0,
             n_permutations: int = 100, n_bootstrap: int = 100,
             max_rows_mmd: int = 1000, features: list[str] | None = None, max_rows: int = 100_000) -> ShiftReport:
    """Measure covariate, missingness and label shift between ``sources`` and ``target``.

    Parameters
    ----------
    dataset : Dataset
        The harmonised dataset.
    sources, target : site names (values of the domain column).
    rows_target : optional boolean mask (over all rows or over the target's rows) or index
        labels of the target rows that may be used, e.g. the target pool only. The target's
        labels are never read: the label-shift estimate uses source labels and target features.
    n_permutations : permutations of the domain-classifier test and of the MMD test (both
        reuse one fitted quantity, so each permutation is cheap).
    n_bootstrap : bootstrap replicates of the target class-prior CI.
    features : optional subset of ``dataset.features``.
    max_rows : above this many rows per side, the whole-table tests (domain classifier, MMD,
        label shift, importance weights) use a uniform sample of that many rows per side; the
        per-feature table always uses every row.

    Example
    -------
    >>> from healthtransfer.data import load_dataset
    >>> rep = diagnose(load_dataset("uci_heart"), ["cleveland"], "switzerland")
    >>> rep.never_measured["switzerland"]
    ['chol']
    """
    t0 = time.perf_counter()
    # small matrices: one BLAS thread is much faster than several fighting for 2 busy cores
    with threadpool_limits(limits=1):
        rep = _diagnose(dataset, sources, target, rows_target=rows_target, random_state=random_state,
                        n_permutations=n_permutations, n_bootstrap=n_bootstrap, max_rows_mmd=max_rows_mmd,
                        features=features, max_rows=max_rows)
    rep.runtime_s = time.perf_counter() - t0
    return rep


def _diagnose(dataset, sources, target, *, rows_target, random_state, n_permutations, n_bootstrap, max_rows_mmd,
              features, max_rows=100_000) -> ShiftReport:
    if isinstance(sources, str):
        sources = [sources]
    sources = [str(s) for s in sources]
    target = str(target)
    frame = dataset.frame
    dom = frame[dataset.domain].astype(str).to_numpy()
    known = set(dom)
    for s in [*sources, target]:
        if s not in known:
            raise UserInputError(f"site '{s}' is not in the dataset", where=f"dataset '{dataset.name}'",
                                 fix=f"choose among {sorted(known)}")
    if not sources:
        raise UserInputError("no source site given", where="diagnose", fix="pass at least one source site")
    if target in sources:
        raise UserInputError(f"site '{target}' is both a source and the target", where="diagnose",
                             fix="remove the target from the sources")
    feats = list(features) if features is not None else list(dataset.features)
    dataset = dataset.with_features(feats) if features is not None else dataset
    numeric, categorical = list(dataset.numeric), list(dataset.categorical)
    is_src = np.isin(dom, sources)
    is_tgt = _target_rows(frame, dom == target, rows_target, target)
    n_t = int(is_tgt.sum())
    if n_t < 5:
        raise UserInputError(f"only {n_t} target rows to compare", where=f"target '{target}'",
                             fix="diagnose needs at least 5 target rows")
    # target rows: features only, the label column is never touched
    tgt = frame.loc[is_tgt, feats]
    src_all = frame.loc[is_src, [*feats, dataset.domain, dataset.label]]
    src_dom = src_all[dataset.domain].astype(str).to_numpy()

    # 1. per feature, per (source, target) pair
    tables = [feature_shift(src_all.loc[src_dom == s, feats], tgt, numeric, categorical, source=s, target=target)
              for s in sources]
    ftab = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    never = {}
    for s in sources:
        never[s] = [f for f in feats if src_all.loc[src_dom == s, f].isna().all()]
    never[target] = [f for f in feats if tgt[f].isna().all()]

    # 2. whole table, on the preprocessed matrix (fitted on the rows used: sources + target rows)
    from ..data.preprocess import feature_names, make_preprocessor

    n_source = {s: int((src_dom == s).sum()) for s in sources}
    if len(src_all) > max_rows or len(tgt) > max_rows:
        # Whole-table tests on a uniform sample per side: their estimates are already precise
        # at 10^5 rows, and the permutation tests hold an (n x permutations) matrix.
        rng = np.random.default_rng(random_state)
        if (keep := uniform_rows(len(src_all), max_rows, rng)) is not None:
            src_all = src_all.iloc[keep]
            src_dom = src_all[dataset.domain].astype(str).to_numpy()
        if (keep := uniform_rows(len(tgt), max_rows, rng)) is not None:
            tgt = tgt.iloc[keep]
    both = pd.concat([src_all[feats], tgt], axis=0)
    pre = make_preprocessor(numeric, categorical).fit(both)
    Xs = np.asarray(pre.transform(src_all[feats]), float)
    Xt = np.asarray(pre.transform(tgt), float)
    dc, oof = domain_classifier_test(Xs, Xt, n_permutations=n_permutations, random_state=random_state,
                                     max_rows=max_rows)
    from sklearn.model_selection import StratifiedKFold

    d = np.r_[np.zeros(len(Xs), int), np.ones(len(Xt), int)]
    folds = list(StratifiedKFold(dc["n_splits"], shuffle=True, random_state=random_state).split(d, d))
    dropped = sorted({f for site in never for f in never[site]} & set(feats))
    if dropped:
        keep = [f for f in feats if f not in dropped]
        if keep:
            pre2 = make_preprocessor([f for f in numeric if f in keep], [c for c in categorical if c in keep]).fit(both)
            X2 = np.vstack([pre2.transform(src_all[feats]), pre2.transform(tgt)]).astype(float)
            dc["auroc_shared_features"] = cv_auroc(X2, d, folds)
        dc["features_not_shared"] = dropped
    # the same classifier on observed values only: no missingness indicators / "missing"
    # categories, and features missing for more than half the rows at either side dropped
    heavy = {f for f in feats if tgt[f].isna().mean() > 0.5 or src_all[f].isna().mean() > 0.5}
    names = feature_names(pre)
    cols = [i for i, n in enumerate(names)
            if not n.endswith("__missing") and not n.endswith("=missing") and _base(n, feats) not in heavy]
    if cols and (heavy or len(cols) < len(names)):
        dc["auroc_values_only"] = cv_auroc(np.vstack([Xs, Xt])[:, cols], d, folds)
        dc["features_mostly_missing"] = sorted(heavy)
    if len(sources) > 1:
        by = {}
        for s in sources:
            m = src_dom == s
            Xp = np.vstack([Xs[m], Xt])
            dp = np.r_[np.zeros(int(m.sum()), int), np.ones(len(Xt), int)]
            fp = list(StratifiedKFold(max(2, min(5, int(m.sum()), len(Xt))), shuffle=True,
                                      random_state=random_state).split(dp, dp))
            by[s] = cv_auroc(Xp, dp, fp)
        dc["auroc_by_source"] = by
    mmd = mmd_test(Xs, Xt, n_permutations=n_permutations, max_rows=max_rows_mmd, random_state=random_state)

    # 3. label shift: source labels + unlabelled target rows
    ys = src_all[dataset.label].to_numpy()
    codes, names = _class_codes(dataset, ys)
    ls = estimate_label_shift(Xs, ys, Xt, classes=codes, n_bootstrap=n_bootstrap, random_state=random_state,
                              max_rows=max_rows)

    # 4. importance weights from the domain classifier's out-of-fold probabilities
    imp = importance_ess(oof[: len(Xs)], len(Xs), len(Xt), clip=WEIGHT_CLIP)

    rep = ShiftReport(
        dataset=dataset.name, sources=sources, target=target,
        n_source=n_source, n_target=n_t,
        features=ftab, never_measured=never, domain_classifier=dc, mmd=mmd, label_shift=ls, importance=imp,
        class_names=names,
        thresholds=THRESHOLDS,
        settings={"random_state": random_state, "n_permutations": int(n_permutations),
                  "n_bootstrap": int(n_bootstrap), "max_rows_mmd": max_rows_mmd, "max_rows": int(max_rows),
                  "rows_target": "all target rows" if rows_target is None else "subset"},
    )
    rep.summary = summarise(rep)
    return rep


def diagnose_study_cli(dataset, sources: list[str], target, as_json: bool = False, **options: Any) -> str:
    """Text (or JSON) for ``healthtransfer diagnose``; ``target`` may be a list of sites.

    ``options`` go to :func:`diagnose` (e.g. ``rows_target``, ``random_state``).
    """
    targets = [target] if isinstance(target, str) else list(target)
    reps = [diagnose(dataset, sources, t, **options) for t in targets]
    if as_json:
        payload = [r.to_dict() for r in reps]
        return json.dumps(payload[0] if isinstance(target, str) else payload, indent=2, allow_nan=False)
    return "\n\n".join(r.to_text() for r in reps)
