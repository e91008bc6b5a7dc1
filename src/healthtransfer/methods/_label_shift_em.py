"""Label-shift correction as a method: the class prior re-estimated on the target (EM / MLLS or
BBSE, from :mod:`healthtransfer._label_shift`, the estimators the shift diagnostics use).
Re-exported by :mod:`healthtransfer.methods.instance`.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedKFold, cross_val_predict

from .._label_shift import bbse_prior, em_prior
from ._base import TransferClassifier, proba_full
from ._rows import _base, _combine, _unlabelled_rows, fit_weighted

__all__ = ["LabelShiftEM"]


class LabelShiftEM(TransferClassifier):
    """Correct the class prior for label shift: EM / MLLS (Saerens et al. 2002) or BBSE.

    The base learner is trained on the source rows plus the labelled target rows; its class
    prior ``source_prior_`` is the (weighted) label frequency of those rows. The target prior
    ``target_prior_`` is estimated from the unlabelled target rows (EM, or BBSE with held-out
    source predictions), with the labelled target rows entering as known labels. Target
    probabilities are ``p(y|x) * target_prior_ / source_prior_``, renormalised. ``shrink``
    pulls the estimated prior towards the training prior (0 = no shrinkage). Source rows
    (``sample_domain > 0`` at predict) keep the unadjusted probabilities.

    Parameters
    ----------
    estimator : classifier or None
        Base learner; ``None`` = logistic regression. Should be reasonably calibrated.
    method : {"em", "bbse"}
    shrink : float in [0, 1)
    max_iter : int
        EM iterations (more than two classes; two classes are solved exactly).
    random_state : int or None

    The estimators are :mod:`healthtransfer._label_shift`'s, the ones the shift diagnostics
    report: EM, or soft BBSE (out-of-fold probabilities, non-negative least squares).

    Example
    -------
    >>> from healthtransfer.data.synthetic import make_shifted_domains
    >>> d = make_shifted_domains("label", n_source=300, n_target=200, random_state=0)
    >>> m = LabelShiftEM().fit(d.X, d.masked_y(0), sample_domain=d.sample_domain)
    >>> bool(m.target_prior_[1] > m.source_prior_[1])
    True
    """

    family = "instance"
    uses_target = "both"

    def __init__(self, estimator=None, method="em", shrink=0.0, max_iter=200, random_state=None):
        self.estimator = estimator
        self.method = method
        self.shrink = shrink
        self.max_iter = max_iter
        self.random_state = random_state

    def _fit(self, split):
        if self.method not in ("em", "bbse"):
            raise ValueError(f"method must be 'em' or 'bbse', got {self.method!r}")
        nc = split.n_classes
        self.n_iter_ = 1  # EM iterations (1 when there is nothing to iterate on)
        X, y, w = _combine(split, None, 1.0)
        self.estimator_ = fit_weighted(_base(self.estimator, self.random_state), X, y, w)
        prior_s = np.bincount(y, weights=w, minlength=nc) / np.sum(w)
        self.source_prior_ = np.clip(prior_s, 1e-6, None) / np.clip(prior_s, 1e-6, None).sum()
        # the unlabelled target rows: Xt minus the labelled ones
        Xu = _unlabelled_rows(split)
        counts = np.bincount(split.ytl, minlength=nc).astype(float)
        if Xu.shape[0] == 0:
            if counts.sum() > 0:
                prior = (counts + self.source_prior_) / (counts.sum() + 1.0)
            else:
                prior = self.source_prior_.copy()
        elif self.method == "em":
            proba = proba_full(self.estimator_, Xu, nc)
            prior, _, self.n_iter_ = em_prior(proba, self.source_prior_, labelled_counts=counts,
                                              max_iter=self.max_iter, return_n_iter=True)
        else:
            prior = self._bbse(split, X, y, Xu, counts)
        # a prior of exactly 0 would zero a class's probability on every target row
        prior = np.clip(prior, 1e-6, None)
        prior = (1 - self.shrink) * prior / prior.sum() + self.shrink * self.source_prior_
        self.target_prior_ = prior / prior.sum()

    def _bbse(self, split, X, y, Xu, counts):
        nc = split.n_classes
        n_splits = int(min(5, np.bincount(y, minlength=nc).min()))
        proba = proba_full(self.estimator_, Xu, nc)
        if n_splits >= 2:
            cv = StratifiedKFold(n_splits, shuffle=True, random_state=self.random_state)
            held = cross_val_predict(_base(self.estimator, self.random_state), X, y, cv=cv, method="predict_proba")
            prior = bbse_prior(held, y, proba, self.source_prior_, labelled_counts=counts)
            if np.all(np.isfinite(prior)):
                return prior
        # too few rows per class for held-out predictions, or a degenerate solve: EM
        return em_prior(proba, self.source_prior_, labelled_counts=counts, max_iter=self.max_iter)[0]

    def _predict_proba(self, X, sample_domain):
        p = proba_full(self.estimator_, X, len(self.classes_))
        adj = p * (self.target_prior_ / self.source_prior_)
        adj /= np.clip(adj.sum(axis=1, keepdims=True), 1e-300, None)
        tgt = np.asarray(sample_domain) < 0
        return np.where(tgt[:, None], adj, p)
