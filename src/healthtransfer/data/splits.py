"""Target splits and label budgets, reproducible from (study, seed).

The target is split into a *pool* and a *test* half (stratified on the label and, when a
group column exists, grouped so a patient never straddles the split). Label budgets ``n_t``
are stratified prefixes of per-class random orders of the pool, so budgets are nested: the
10 labelled rows of a seed are inside its 20. The rest of the pool is unlabelled target data.

Example
-------
>>> import numpy as np
>>> y = np.array([0] * 30 + [1] * 30)
>>> s = target_split(y, seed=0)
>>> len(s.pool), len(s.test)
(30, 30)
>>> lab = label_budget(y, s.pool, 10, seed=0)
>>> len(lab), set(label_budget(y, s.pool, 20, seed=0)) >= set(lab)
(10, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

__all__ = ["TargetSplit", "target_split", "label_budget"]


@dataclass(frozen=True)
class TargetSplit:
    """Row positions (into the target's rows) of the pool and the test half."""

    pool: np.ndarray
    test: np.ndarray
    seed: int


def target_split(y, *, seed: int, test_fraction: float = 0.5, groups=None) -> TargetSplit:
    """Split target rows into pool and test, stratified and (if ``groups``) grouped."""
    y = np.asarray(y)
    idx = np.arange(len(y))
    if groups is not None:
        n_splits = max(2, int(round(1 / test_fraction)))
        cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        pool, test = next(cv.split(idx, y, groups=np.asarray(groups)))
        if test_fraction > 0.5:  # the small side is the fold: swap so test has the larger share
            pool, test = test, pool
    else:
        _, counts = np.unique(y, return_counts=True)
        strat = y if counts.min() >= 2 else None
        pool, test = train_test_split(idx, test_size=test_fraction, stratify=strat, random_state=seed)
    return TargetSplit(pool=np.sort(pool), test=np.sort(test), seed=seed)


def label_budget(y, pool, n_labeled: int, *, seed: int) -> np.ndarray:
    """The ``n_labeled`` pool rows whose labels are revealed (nested across budgets).

    Per class, the count is ``round(n * pool share)`` and at least 1 (when the class occurs
    in the pool), adjusted so counts sum to ``n``. Draws use ``RandomState(10000 + seed)``,
    as in the eicu-region protocol. Returns row positions, sorted.
    """
    y = np.asarray(y)
    pool = np.asarray(pool)
    if n_labeled <= 0:
        return np.array([], dtype=int)
    if n_labeled >= len(pool):
        return np.sort(pool)
    rs = np.random.RandomState(10000 + seed)
    classes, counts = np.unique(y[pool], return_counts=True)
    # a random order per class, drawn in class order so budgets are nested prefixes
    orders = {c: pool[y[pool] == c][rs.permutation(int(n))] for c, n in zip(classes, counts)}
    share = counts / counts.sum()
    want = np.maximum(1, np.round(n_labeled * share)).astype(int)
    want = np.minimum(want, counts)
    while want.sum() > n_labeled:  # trim the most over-served class, never below one row
        excess = np.where(want > 1, want - share * n_labeled, -np.inf)
        if not np.isfinite(excess).any():
            break  # fewer rows than classes: keep one of each
        want[np.argmax(excess)] -= 1
    while want.sum() < n_labeled:
        room = counts - want
        want[np.argmax(np.where(room > 0, share * n_labeled - want, -np.inf))] += 1
    chosen = np.concatenate([orders[c][:k] for c, k in zip(classes, want)])
    return np.sort(chosen)
