"""The recommendation and the model to deploy, from a finished study.

The recommended candidate for a target is the one the selection stage chose most often at the
largest label budget (ties: the better mean selection score). The deployable model is that
candidate refitted on every source row plus the labelled target rows of seed 0's largest
budget, with the preprocessing fitted on source + target pool rows (never test rows).

Explanations are computed on that model: permutation importance (AUROC drop) on source rows and
on seed 0's target test rows, and which feature-outcome relations changed between the sites
(per-feature univariate AUROC at the source against the target).
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..data.splits import label_budget
from .._sampling import uniform_rows
from ..selection import expand_candidates
from .run import prepare_unit

__all__ = ["FinalModel", "recommend", "fit_final_model"]


@dataclass
class FinalModel:
    target: str
    candidate: str
    method: str
    family: str
    n_labeled: int
    preprocessor: Any
    model: Any
    training_frame: pd.DataFrame
    evidence: dict[str, Any] = field(default_factory=dict)
    importance: pd.DataFrame | None = None
    relations: pd.DataFrame | None = None


def recommend(result, target: str) -> dict[str, Any]:
    """Which candidate to use at ``target``, with the evidence behind it."""
    sels = [s for s in result.selections if s["target"] == target]
    if not sels:
        return {}
    top = max(s["n_labeled"] for s in sels)
    at_top = [s for s in sels if s["n_labeled"] == top]
    counts = Counter(s["chosen"] for s in at_top)
    chosen, n_chosen = counts.most_common(1)[0]
    df = result.frame()
    g = df[(df["target"] == target) & (df["n_labeled"] == top)]
    sel = g[g["method"] == "selected"]
    base = g[g["family"] == "baseline"].groupby("method")["auroc"].mean()
    cand = g[g["method"] != "selected"].groupby("method")["auroc"].mean()
    return {
        "target": target,
        "n_labeled": int(top),
        "candidate": chosen,
        "times_chosen": int(n_chosen),
        "seeds": len(at_top),
        "choices": dict(counts),
        "criterion": Counter(s["criterion"] for s in at_top).most_common(1)[0][0],
        "selected_auroc": float(sel["auroc"].mean()) if len(sel) else None,
        "best_baseline": base.idxmax() if len(base) else None,
        "best_baseline_auroc": float(base.max()) if len(base) else None,
        "oracle": cand.idxmax() if len(cand) else None,
        "oracle_auroc": float(cand.max()) if len(cand) else None,
        "adapts": bool(next(c for c in expand_candidates([chosen.split("[")[0]])).family != "baseline"),
    }


def _univariate_auroc(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    from ..evaluation.metrics import _auroc_rows

    out = np.full(X.shape[1], np.nan)
    if len(np.unique(y)) < 2:
        return out
    for j in range(X.shape[1]):
        col = X[:, j]
        ok = np.isfinite(col)
        if ok.sum() > 5 and len(np.unique(y[ok])) == 2:
            out[j] = _auroc_rows(y[ok][None].astype(int), col[ok][None])[0]
    return out


def fit_final_model(result, target: str, *, seed: int = 0, n_repeats: int = 5) -> FinalModel | None:
    """Refit the recommended candidate for ``target`` and explain it."""
    rec = recommend(result, target)
    if not rec:
        return None
    ds, st = result.dataset, result.study
    sources = st.transfer.sources
    cand = next(c for c in expand_candidates([rec["candidate"].split("[")[0]], grid=True) if c.name == rec["candidate"])
    u = prepare_unit(ds, sources, target, seed, st.transfer.test_fraction)
    src, pool, test, pre = u.src, u.pool, u.test, u.pre
    n_t = min(rec["n_labeled"], len(pool))
    lab = label_budget(u.yp, np.arange(len(pool)), n_t, seed=seed)
    X = np.vstack([u.Xs, u.Xp])
    y_pool = np.full(len(pool), -1)
    y_pool[lab] = u.yp[lab]
    y = np.r_[u.ys, y_pool]
    sd = u.sd
    if cand.uses_reference:
        return None  # deployable bundles hold models of the features only
    model = cand.factory(random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X, y, sample_domain=sd)
    training = pd.concat([src, pool.iloc[lab]])
    final = FinalModel(target=target, candidate=cand.name, method=cand.method, family=cand.family,
                       n_labeled=int(n_t), preprocessor=pre, model=model, training_frame=training, evidence=rec)
    if ds.n_classes == 2:
        final.importance = _importance(final, src, test, ds, n_repeats, seed)
        final.relations = _relations(pre, src, test, ds)
    return final


def _importance(final: FinalModel, src: pd.DataFrame, test: pd.DataFrame, ds, n_repeats: int, seed: int,
                max_rows: int = 20_000) -> pd.DataFrame:
    """Permutation importance: mean AUROC drop when one harmonised feature is shuffled (on at
    most ``max_rows`` rows per site)."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    rows = {}
    for site, frame in (("source", src), ("target", test)):
        if (keep := uniform_rows(len(frame), max_rows, rng)) is not None:  # a sample keeps it seconds
            frame = frame.iloc[keep]
        y = frame[ds.label].to_numpy().astype(int)
        if len(np.unique(y)) < 2:
            continue
        base_p = final.model.predict_proba(final.preprocessor.transform(frame[ds.features]))[:, 1]
        base = roc_auc_score(y, base_p)
        drops = {}
        for feat in ds.features:
            d = []
            for _ in range(n_repeats):
                shuffled = frame[ds.features].copy()
                shuffled[feat] = rng.permutation(shuffled[feat].to_numpy())
                p = final.model.predict_proba(final.preprocessor.transform(shuffled))[:, 1]
                d.append(base - roc_auc_score(y, p))
            drops[feat] = float(np.mean(d))
        rows[site] = drops
    return pd.DataFrame(rows)


def _relations(pre, src: pd.DataFrame, test: pd.DataFrame, ds) -> pd.DataFrame:
    """Univariate AUROC of each numeric feature for the outcome, at the source and the target:
    a relation that flips or fades between sites is one a transferred model gets wrong."""
    out = {}
    for name, frame in (("source", src), ("target", test)):
        X = frame[ds.numeric].to_numpy(float)
        out[name] = _univariate_auroc(X, frame[ds.label].to_numpy().astype(int))
    df = pd.DataFrame(out, index=ds.numeric)
    df["change"] = df["target"] - df["source"]
    return df.reindex(df["change"].abs().sort_values(ascending=False).index)
