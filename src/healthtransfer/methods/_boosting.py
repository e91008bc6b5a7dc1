"""The Newton boosting engine: shallow regression trees on the log-loss gradients, from any
starting raw scores (a source model's, a clinical score's logit, or zeros).

Used by :class:`~healthtransfer.methods.model.ContinuedBoosting` and
:class:`~healthtransfer.methods.model.ReferenceBoosting`; re-exported by
:mod:`healthtransfer.methods.model`.

Example
-------
>>> import numpy as np
>>> X = np.random.default_rng(0).normal(size=(200, 3)); y = (X[:, 0] > 0).astype(int)
>>> F = np.zeros((200, 1))
>>> rounds = newton_boost(X, y, F, 2, np.ones(200), n_iter=5, learning_rate=0.3, max_depth=2,
...                       min_samples_leaf=5, random_state=0)
>>> bool(np.allclose(boosted_raw(rounds, X, 0.3), F))
True
"""

from __future__ import annotations

import numpy as np
from sklearn.tree import DecisionTreeRegressor

from ._linear import _to_proba

__all__ = ["boosted_raw", "newton_boost"]


def newton_boost(X, y, F, n_classes, w, *, n_iter, learning_rate, max_depth, min_samples_leaf,
                 subsample=1.0, max_features=None,
                 random_state=None) -> list[list[DecisionTreeRegressor]]:
    """Newton boosting rounds (shallow regression trees on the log-loss gradients) starting
    from the raw scores ``F`` (``n x 1`` for binary, ``n x K`` otherwise); ``F`` is updated in
    place. ``subsample`` < 1 fits each round on a random share of the rows (stochastic
    gradient boosting). Returns one list of trees per round; :func:`boosted_raw` applies them."""
    K = n_classes
    Y = (y[:, None] == (np.arange(K) if K > 2 else np.array([1]))).astype(float)
    rng = np.random.RandomState(random_state if isinstance(random_state, (int, np.integer)) else 0)
    rounds = []
    for _ in range(n_iter):
        P = _to_proba(F)[:, 1:] if K == 2 else _to_proba(F)
        G = P - Y
        H = np.clip(P * (1 - P), 1e-3, None)
        # all rows: a view, not a copy per round; a subsample: one copy per round, not per class
        rows = slice(None) if subsample >= 1 else rng.random_sample(len(y)) < subsample
        Xr, Gr, Hr, wr = X[rows], G[rows], H[rows], w[rows]
        round_trees = []
        for k in range(F.shape[1]):
            t = DecisionTreeRegressor(
                max_depth=max_depth, min_samples_leaf=min_samples_leaf, max_features=max_features,
                random_state=rng.randint(2**31 - 1),
            ).fit(Xr, np.clip(-Gr[:, k] / Hr[:, k], -4, 4), sample_weight=Hr[:, k] * wr)
            F[:, k] += learning_rate * t.predict(X)
            round_trees.append(t)
        rounds.append(round_trees)
    return rounds


def boosted_raw(rounds, X, learning_rate, start=None) -> np.ndarray:
    """``start`` (default zeros) plus the raw-score corrections of :func:`newton_boost`'s trees
    at ``X``, added tree by tree in fitting order (so results do not depend on how it is called)."""
    out = np.zeros((X.shape[0], len(rounds[0]) if rounds else 1)) if start is None else np.array(start, float)
    for round_trees in rounds:
        for k, t in enumerate(round_trees):
            out[:, k] += learning_rate * t.predict(X)
    return out
