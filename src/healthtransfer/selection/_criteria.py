"""Criteria that score a candidate without the target's test labels.

With labelled target rows (n_t > 0): out-of-fold predictions on them (stratified K-fold; the
held-out fold's labels are masked, its rows stay as unlabelled target data).

Without target labels (n_t = 0), on held-out *source* rows, reweighted toward the target:
- IWCV (Sugiyama et al. 2007): importance-weighted AUROC / log loss, weights p_t(x)/p_s(x)
  from a cross-fitted logistic domain classifier;
- DEV (You et al. 2019): IWCV's weighted loss with a control variate, which cuts its variance;
- reverse validation (Zhong et al. 2010): pseudo-label the target with the candidate, train a
  reverse model on the pseudo-labels, score it on held-out source rows;
- prediction entropy on the target rows (lower = more confident), a documented heuristic only:
  confident is not the same as right.

Each returns per-row out-of-fold predictions so that the selection stage can compare
candidates *paired* on the same rows and estimate the noise of the difference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import RepeatedStratifiedKFold, StratifiedKFold

from ..methods._base import proba_full

__all__ = ["OOF", "target_cv_oof", "source_cv_oof", "importance_weights", "dev_risk", "entropy"]


@dataclass
class OOF:
    """Out-of-fold predictions of one candidate: rows, labels, probabilities, weights."""

    y: np.ndarray
    proba: np.ndarray  # (n, K)
    weight: np.ndarray  # 1 for target CV, importance weights for source CV
    criterion: str
    reverse_proba: np.ndarray | None = None  # reverse validation, source CV only
    target_entropy: float | None = None
    rows: np.ndarray | None = None  # positions of these rows in the fit matrix

    def rows_mask(self, mask: np.ndarray) -> np.ndarray:
        return np.asarray(mask, bool)[self.rows] if self.rows is not None else np.ones(len(self.y), bool)

    def subset(self, keep: np.ndarray) -> "OOF":
        return OOF(y=self.y[keep], proba=self.proba[keep], weight=self.weight[keep], criterion=self.criterion,
                   reverse_proba=None if self.reverse_proba is None else self.reverse_proba[keep],
                   target_entropy=self.target_entropy, rows=None if self.rows is None else self.rows[keep])


def target_cv_possible(y, sd, n_classes) -> bool:
    """Whether the labelled target rows allow K-fold CV: two classes, two rows of each."""
    counts = np.bincount(y[(sd < 0) & (y != -1)], minlength=n_classes)
    present = counts[counts > 0]
    return len(present) >= 2 and present.min() >= 2


def target_cv_oof(factory, X, y, sd, n_classes, *, seed=0, n_splits=5, uses_target_labels=True,
                  n_repeats=1) -> OOF | None:
    """Repeated K-fold over the labelled target rows; each row's prediction is averaged over the
    repeats (fewer fold-assignment artefacts at n_t of 10-40). None if too few per class."""
    if not target_cv_possible(y, sd, n_classes):
        return None
    lab = np.flatnonzero((sd < 0) & (y != -1))
    yl = y[lab]
    counts = np.bincount(yl, minlength=n_classes)
    present = counts[counts > 0]
    k = int(min(n_splits, present.min()))
    proba = np.zeros((len(lab), n_classes))
    if not uses_target_labels:
        # the model never sees target labels, so every fold would fit the same model: fit once
        est = factory(random_state=seed)
        est.fit(X, np.where(sd < 0, -1, y), sample_domain=sd)
        proba[:] = proba_full(est, X[lab], n_classes, sample_domain=sd[lab])
        return OOF(y=yl, proba=proba, weight=np.ones(len(lab)), criterion="target_cv", rows=lab)
    splitter = RepeatedStratifiedKFold(n_splits=k, n_repeats=max(1, int(n_repeats)), random_state=seed)
    for tr, te in splitter.split(lab, yl):
        y_fold = y.copy()
        y_fold[lab[te]] = -1  # held-out fold: labels hidden, rows stay as unlabelled target data
        est = factory(random_state=seed)
        est.fit(X, y_fold, sample_domain=sd)
        proba[te] += proba_full(est, X[lab[te]], n_classes, sample_domain=sd[lab[te]])
    proba /= max(1, int(n_repeats))
    return OOF(y=yl, proba=proba, weight=np.ones(len(lab)), criterion="target_cv", rows=lab)


def importance_weights(X, sd, *, seed=0, clip=20.0) -> np.ndarray:
    """Cross-fitted p_t(x)/p_s(x) for the source rows (target rows get weight 0)."""
    src = sd > 0
    d = (~src).astype(int)
    w = np.zeros(len(X))
    p = np.zeros(len(X))
    k = int(min(5, np.bincount(d).min()))
    if k < 2:
        w[src] = 1.0
        return w
    for tr, te in StratifiedKFold(k, shuffle=True, random_state=seed).split(X, d):
        clf = LogisticRegression(C=0.3, max_iter=1000).fit(X[tr], d[tr])
        p[te] = clf.predict_proba(X[te])[:, 1]
    prior = src.sum() / max((~src).sum(), 1)
    ratio = prior * p / np.clip(1 - p, 1e-6, None)
    ratio = np.clip(ratio, 0, np.quantile(ratio[src], 0.99) if src.any() else clip)
    ratio = np.minimum(ratio, clip)
    w[src] = ratio[src] / ratio[src].mean()
    return w


def source_cv_oof(factory, X, y, sd, n_classes, weights, *, seed=0, n_splits=3, n_features=None) -> OOF:
    """K-fold over the source rows: fit on the other source folds plus every target row, predict
    the held-out source rows, and carry their importance weights. ``n_features``: the leading
    columns that are features (the reverse model leaves out an appended reference score)."""
    n_features = X.shape[1] if n_features is None else int(n_features)
    src = np.flatnonzero(sd > 0)
    ys = y[src]
    counts = np.bincount(ys, minlength=n_classes)
    k = int(min(n_splits, counts[counts > 0].min()))
    k = max(k, 2)
    proba = np.zeros((len(src), n_classes))
    reverse = np.zeros((len(src), n_classes))
    tgt = np.flatnonzero(sd < 0)
    ents = []
    for tr, te in StratifiedKFold(k, shuffle=True, random_state=seed).split(src, ys):
        keep = np.ones(len(X), bool)
        keep[src[te]] = False
        est = factory(random_state=seed)
        est.fit(X[keep], y[keep], sample_domain=sd[keep])
        proba[te] = proba_full(est, X[src[te]], n_classes, sample_domain=-np.ones(len(te), int))
        # reverse validation: the candidate pseudo-labels the target, a plain model learns
        # from those pseudo-labels, and is scored back on the held-out source rows
        pt = proba_full(est, X[tgt], n_classes, sample_domain=sd[tgt])
        ents.append(entropy(pt))
        pseudo = pt.argmax(axis=1)
        if len(np.unique(pseudo)) > 1:
            rev = LogisticRegression(C=1.0, max_iter=1000).fit(X[tgt][:, :n_features], pseudo)
            reverse[te] = proba_full(rev, X[src[te]][:, :n_features], n_classes)
        else:
            reverse[te] = np.eye(n_classes)[pseudo[0]]
    return OOF(y=ys, proba=proba, weight=weights[src], criterion="iwcv", reverse_proba=reverse,
               target_entropy=float(np.mean(ents)), rows=src)


def log_loss_rows(y, proba) -> np.ndarray:
    return -np.log(np.clip(proba[np.arange(len(y)), y], 1e-12, None))


def dev_risk(y, proba, w) -> float:
    """Deep embedded validation's control-variate estimate of the target log loss."""
    loss = log_loss_rows(y, proba)
    wl = w * loss
    var_w = np.var(w)
    eta = -np.cov(wl, w)[0, 1] / var_w if var_w > 1e-12 else 0.0
    return float(np.mean(wl) + eta * np.mean(w) - eta)


def entropy(proba) -> float:
    p = np.clip(proba, 1e-12, 1)
    return float(np.mean(-(p * np.log(p)).sum(axis=1)))
