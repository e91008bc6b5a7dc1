"""Baselines every transfer method must beat: source-only, target-only and pooled training.

Each wraps an ordinary scikit-learn classifier (logistic regression or histogram gradient
boosting) and decides which labelled rows it trains on.

Example
-------
>>> import numpy as np
>>> from healthtransfer.methods.baselines import SourceOnly
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(40, 3)); y = (X[:, 0] > 0).astype(int)
>>> d = np.r_[np.ones(30, int), -np.ones(10, int)]
>>> SourceOnly().fit(X, y, sample_domain=d).predict_proba(X[30:]).shape
(10, 2)
"""

from __future__ import annotations

import numpy as np
from sklearn.base import clone
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from ._base import DomainSplit, TransferClassifier

__all__ = ["SourceOnly", "TargetOnly", "Pooled", "make_base_estimator"]


def make_base_estimator(kind: str = "lr", random_state=None):
    """The two base learners of the protocol: ``"lr"`` or ``"gbm"``.

    Logistic regression is lightly regularised (C=1); the gradient-boosted model is
    scikit-learn's HistGradientBoosting with settings that are sensible for a few hundred rows
    (shallow trees, early stopping off so results do not depend on an internal split).
    """
    if kind == "lr":
        return LogisticRegression(C=1.0, max_iter=2000)
    if kind == "gbm":
        return HistGradientBoostingClassifier(
            max_iter=150,
            learning_rate=0.05,
            max_leaf_nodes=15,
            min_samples_leaf=10,
            l2_regularization=1.0,
            early_stopping=False,
            random_state=random_state,
        )
    raise ValueError(f"unknown base estimator {kind!r}; expected 'lr' or 'gbm'.")


class _Baseline(TransferClassifier):
    family = "baseline"

    def __init__(self, estimator=None, random_state=None):
        self.estimator = estimator
        self.random_state = random_state

    def _base(self):
        if self.estimator is None:
            return make_base_estimator("lr", self.random_state)
        return clone(self.estimator)

    def _rows(self, split: DomainSplit):  # pragma: no cover - abstract
        raise NotImplementedError

    def _fit(self, split: DomainSplit) -> None:
        X, y, w = self._rows(split)
        self.estimator_ = self._base().fit(X, y, sample_weight=w)
        self._seen = np.unique(y)

    def _predict_proba(self, X, sample_domain):
        p = self.estimator_.predict_proba(X)
        # A training set may lack a class (e.g. a tiny target budget): put it back at 0.
        out = np.zeros((X.shape[0], len(self.classes_)))
        out[:, self.estimator_.classes_.astype(int)] = p
        return out


class SourceOnly(_Baseline):
    """Train on the labelled source rows only; ignore the target."""

    uses_target = "none"

    def _rows(self, split):
        return split.Xs, split.ys, split.ws


class TargetOnly(_Baseline):
    """Train on the n_t labelled target rows only (falls back to source rows if there are none
    or they hold a single class, so it can be fitted anywhere; the runner skips n_t = 0)."""

    uses_target = "labelled"

    def _rows(self, split):
        if len(np.unique(split.ytl)) < 2:
            return split.Xs, split.ys, split.ws
        return split.Xtl, split.ytl, split.wtl


class Pooled(_Baseline):
    """Train on source rows plus the labelled target rows, unweighted."""

    uses_target = "labelled"

    def _rows(self, split):
        w = None if split.ws is None else np.concatenate([split.ws, split.wtl])
        return split.X_labelled, split.y_labelled, w
