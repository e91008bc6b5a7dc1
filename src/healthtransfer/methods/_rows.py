"""Which rows a method trains on: source rows (weighted) plus the labelled target rows, the
unlabelled target rows, and the base learner. Shared by the instance and feature methods.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import clone

from ._base import DomainSplit
from .baselines import make_base_estimator

__all__ = ["fit_weighted"]


def _base(estimator, random_state):
    if estimator is None:
        return make_base_estimator("lr", random_state)
    return clone(estimator)


def _combine(split: DomainSplit, w_source, target_weight=1.0):
    """Rows, labels and weights for source (weighted ``w_source``) + labelled target rows."""
    ws = np.ones(len(split.ys)) if w_source is None else np.asarray(w_source, float)
    if split.ws is not None:
        ws = ws * split.ws
    wt = np.full(len(split.ytl), float(target_weight))
    if split.wtl is not None:
        wt = wt * split.wtl
    if len(split.ytl) == 0:
        return split.Xs, split.ys, ws
    return split.X_labelled, split.y_labelled, np.concatenate([ws, wt])


def fit_weighted(est, X, y, w):
    """``est.fit(X, y, sample_weight=w)``, leaving the weights out when they are all 1.

    scikit-learn's histogram boosting bins with weighted percentiles whenever weights are
    given: on continuous features (e.g. after CORAL) that took 1.4 s instead of 0.15 s on a
    heart pair, for what is the unweighted model (as the baselines fit it)."""
    if w is not None and np.all(np.asarray(w) == 1.0):
        w = None
    return est.fit(X, y, sample_weight=w)


def _unlabelled_rows(split: DomainSplit) -> np.ndarray:
    """Target rows without a label (``Xt`` holds all target rows, ``Xtl`` the labelled)."""
    if split.Xtl.shape[0] == 0:
        return split.Xt
    # remove one occurrence of every labelled row from Xt
    keep = np.ones(len(split.Xt), bool)
    index = {}
    for i, row in enumerate(map(bytes, np.ascontiguousarray(split.Xt))):
        index.setdefault(row, []).append(i)
    for row in map(bytes, np.ascontiguousarray(split.Xtl)):
        if index.get(row):
            keep[index[row].pop()] = False
    return split.Xt[keep]
