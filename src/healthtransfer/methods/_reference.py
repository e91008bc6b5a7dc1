"""Reference-score methods: recalibration, stacking and continued boosting around an external
clinical score (e.g. APACHE IV predicted mortality) that the runner appends as its logit in the
LAST column of ``X`` (``MethodSpec.uses_reference``). Binary only; where the score is missing
a local logistic regression stands in. Re-exported by :mod:`healthtransfer.methods.model`.
"""

from __future__ import annotations

import numpy as np
from sklearn.impute import SimpleImputer

from ._base import TransferClassifier
from ._boosting import boosted_raw, newton_boost
from ._linear import (
    _enough_for_slope,
    _standardiser,
    _to_proba,
    _weights,
    fit_bias_temperature,
    fit_offset_stacking,
    penalised_logistic,
    stacking_prior,
)

__all__ = ["ReferenceBoosting", "ReferenceRecalibration", "ReferenceStacking"]


class _LocalFallback:
    """Median-impute + standardise + ridge logistic regression on the local features, with
    the labelled target rows weighted ``target_weight``; the fallback where the score is
    missing."""

    def fit(self, Xs, ys, Xtl, ytl, K, ws=None, wtl=None, target_weight=1.0, C=1.0):
        X = np.vstack([Xs, Xtl])
        y = np.r_[ys, ytl].astype(int)
        w = np.r_[_weights(ws, len(ys)), target_weight * _weights(wtl, len(ytl))]
        if X.shape[1] == 0:  # only the reference column: fall back to the prevalence
            X = np.zeros((X.shape[0], 1))
        self.imputer_ = SimpleImputer(strategy="median", keep_empty_features=True).fit(X)
        Xi = self.imputer_.transform(X)
        self.mu_, self.sd_ = _standardiser(Xi, w)
        self.W_, self.b_ = penalised_logistic(self._z(X), y, K, coef_penalty=1.0 / C,
                                              sample_weight=w)
        return self

    def _z(self, X):
        if X.shape[1] == 0:
            X = np.zeros((X.shape[0], 1))
        return (self.imputer_.transform(X) - self.mu_) / self.sd_

    def logit(self, X):
        return (self._z(X) @ self.W_.T + self.b_)[:, 0]


class _ReferenceBase(TransferClassifier):
    handles_nan = True

    def _check_binary(self, split):
        if split.n_classes != 2:
            raise ValueError(
                f"Only binary classification is supported. {type(self).__name__} recalibrates a "
                f"reference score, the probability of one outcome; got {split.n_classes} classes."
            )
        if split.Xs.shape[1] < 1:
            raise ValueError("no reference column: the runner appends logit(score) as last column")

    @staticmethod
    def _parts(X):
        r = X[:, -1]
        L = X[:, :-1] if X.shape[1] > 1 else np.zeros((X.shape[0], 1))
        return L, np.where(np.isfinite(r), r, np.nan)

    def _fit_fallback(self, split, Ls, Lt):
        """Where the score is missing: a source model on the local features, its intercept
        recalibrated on the labelled target rows."""
        self.fallback_ = _LocalFallback().fit(Ls, split.ys, Ls[:0], split.ys[:0], 2, split.ws)
        self.fallback_shift_ = 0.0
        if len(split.ytl):
            _, bias = fit_bias_temperature(
                np.column_stack([np.zeros(len(Lt)), self.fallback_.logit(Lt)]), split.ytl,
                slope=False, sample_weight=split.wtl,
            )
            self.fallback_shift_ = float(bias[1] - bias[0])

    def _fallback_logit(self, L, tgt):
        return self.fallback_.logit(L) + np.where(tgt, self.fallback_shift_, 0.0)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags


class ReferenceRecalibration(_ReferenceBase):
    """Recalibrate an external clinical score (e.g. APACHE IV) on the labelled target rows.

    The LAST column of ``X`` is ``logit(score)`` (NaN where the score is missing; the runner
    adds it for methods registered with ``uses_reference=True``). Target probability =
    ``sigmoid(a + b * logit(score))``: ``a`` only for tiny n (< ``min_n_slope`` rows with a
    score, or < ``min_per_class`` in a class), ``a`` and ``b`` otherwise, fitted on the
    labelled target rows that have a score (if there are none, on the source rows with a score;
    if there are none either, the score is taken as is). Rows without a score get a fallback:
    a source logistic model on the other features with its intercept recalibrated on the
    labelled target rows. Binary only.

    Parameters
    ----------
    min_n_slope : int, default=20
    min_per_class : int, default=5
    random_state : ignored

    Example
    -------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 3)); y = (rng.random(200) < 1 / (1 + np.exp(-X[:, 2]))).astype(int)
    >>> d = np.r_[np.ones(100, int), -np.ones(100, int)]; y[150:] = -1
    >>> m = ReferenceRecalibration().fit(X, y, sample_domain=d)
    >>> bool(m.slope_ > 0)
    True
    """

    family = "model"
    uses_target = "labelled"

    def __init__(self, min_n_slope=20, min_per_class=5, random_state=None):
        self.min_n_slope = min_n_slope
        self.min_per_class = min_per_class
        self.random_state = random_state

    def _fit(self, split):
        self._check_binary(split)
        Ls, rs = self._parts(split.Xs)
        Lt, rt = self._parts(split.Xtl)
        ok_t = np.isfinite(rt)
        ok_s = np.isfinite(rs)
        if ok_t.any():
            r, y, w = rt[ok_t], split.ytl[ok_t], None if split.wtl is None else split.wtl[ok_t]
        elif ok_s.any():
            r, y, w = rs[ok_s], split.ys[ok_s], None if split.ws is None else split.ws[ok_s]
        else:
            r = y = w = None
        self.intercept_, self.slope_ = 0.0, 1.0
        if r is not None:
            slope = _enough_for_slope(y, 2, self.min_n_slope, self.min_per_class)
            beta, bias = fit_bias_temperature(np.column_stack([np.zeros_like(r), r]), y,
                                              slope=slope, sample_weight=w)
            self.slope_, self.intercept_ = beta, float(bias[1] - bias[0])
        self._fit_fallback(split, Ls, Lt)

    def _predict_proba(self, X, sample_domain):
        L, r = self._parts(X)
        tgt = sample_domain < 0
        fb = self._fallback_logit(L, tgt)
        z = np.where(np.isfinite(r), self.intercept_ + self.slope_ * np.nan_to_num(r), fb)
        return _to_proba(z[:, None])


class ReferenceBoosting(_ReferenceBase):
    """Boosting that starts from an external clinical score and learns the local correction.

    The LAST column of ``X`` is ``logit(score)`` (NaN where missing). On the source rows and the
    labelled target rows that have a score, ``n_iter`` Newton boosting rounds of shallow trees
    start from ``logit(score)`` as the raw score (LightGBM's ``init_score``), on the local
    features plus a target-row indicator. The score keeps its ranking from the >100k stays it
    was fitted on; the few, small, damped trees only add what the local rows show it misses
    (e.g. a unit type it over-predicts at these hospitals). With no labelled target rows it is
    corrected on the source rows alone. Rows without a score get the same fallback as
    :class:`ReferenceRecalibration`. Binary only.

    Parameters
    ----------
    n_iter : int, default=50
    learning_rate : float, default=0.03
    max_depth : int, default=2
    min_samples_leaf : int, default=30
    subsample, max_features : float, default=0.8
        Share of rows and of features each tree sees (stochastic gradient boosting; the same
        0.8 / 0.8 as the eicu-region protocol's fixed LightGBM baseline).
    target_weight : float, default=1.0
        Weight of a labelled target row relative to a source row.
    random_state : int or None

    Example
    -------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(300, 3)); y = (rng.random(300) < 1 / (1 + np.exp(-X[:, 2]))).astype(int)
    >>> d = np.r_[np.ones(200, int), -np.ones(100, int)]; y[250:] = -1
    >>> m = ReferenceBoosting(random_state=0).fit(X, y, sample_domain=d)
    >>> m.predict_proba(X[:3]).shape
    (3, 2)
    """

    family = "model"
    uses_target = "labelled"

    def __init__(self, n_iter=50, learning_rate=0.03, max_depth=2, min_samples_leaf=30,
                 subsample=0.8, max_features=0.8, target_weight=1.0, random_state=None):
        self.n_iter = n_iter
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.subsample = subsample
        self.max_features = max_features
        self.target_weight = target_weight
        self.random_state = random_state

    def _fit(self, split):
        self._check_binary(split)
        Ls, rs = self._parts(split.Xs)
        Lt, rt = self._parts(split.Xtl)
        L = np.column_stack([np.vstack([Ls, Lt]), np.r_[np.zeros(len(rs)), np.ones(len(rt))]])
        r = np.r_[rs, rt]
        y = np.r_[split.ys, split.ytl]
        w = np.r_[_weights(split.ws, len(rs)), self.target_weight * _weights(split.wtl, len(rt))]
        ok = np.isfinite(r)
        self.trees_ = []
        if ok.sum() >= 2 * self.min_samples_leaf and len(np.unique(y[ok])) == 2:
            self.trees_ = newton_boost(
                L[ok], y[ok], r[ok][:, None].copy(), 2, w[ok], n_iter=self.n_iter,
                learning_rate=self.learning_rate, max_depth=self.max_depth,
                min_samples_leaf=self.min_samples_leaf, subsample=self.subsample,
                max_features=self.max_features, random_state=self.random_state,
            )
        self._fit_fallback(split, Ls, Lt)

    def _predict_proba(self, X, sample_domain):
        L, r = self._parts(X)
        tgt = sample_domain < 0
        z = np.nan_to_num(r)
        if self.trees_:
            z = z + boosted_raw(self.trees_, np.column_stack([L, tgt.astype(float)]),
                                self.learning_rate)[:, 0]
        z = np.where(np.isfinite(r), z, self._fallback_logit(L, tgt))
        return _to_proba(z[:, None])


class ReferenceStacking(_ReferenceBase):
    """External score as an offset plus a strongly regularised correction from local features.

    The LAST column of ``X`` is ``logit(score)`` (NaN where missing). On the source rows and the
    labelled target rows that have a score (target rows weighted ``target_weight``), fits
    ``logit p = a + b * logit(score) + c * [target row] + delta . x`` with ``b`` pulled toward
    1, ``a``/``c`` lightly regularised and ``delta`` strongly (penalty ``1 / C``); ``x`` the
    standardised, median-imputed local features. Target predictions use ``c``. Rows without a
    score get a fallback: logistic regression on the local features trained on the source +
    labelled target rows (the latter weighted up). Binary only.

    Parameters
    ----------
    C : float, default=0.05
    target_weight : float, default=5.0
    score_penalty : float, default=1.0
    random_state : ignored

    Example
    -------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 3)); y = (rng.random(200) < 1 / (1 + np.exp(-X[:, 2]))).astype(int)
    >>> d = np.r_[np.ones(100, int), -np.ones(100, int)]; y[150:] = -1
    >>> ReferenceStacking().fit(X, y, sample_domain=d).predict_proba(X[:3]).shape
    (3, 2)
    """

    family = "model"
    uses_target = "labelled"

    def __init__(self, C=0.05, target_weight=5.0, score_penalty=1.0, random_state=None):
        self.C = C
        self.target_weight = target_weight
        self.score_penalty = score_penalty
        self.random_state = random_state

    def _design(self, L, r, is_target):
        Zl = (self.imputer_.transform(L) - self.mu_) / self.sd_
        return np.column_stack([r, is_target.astype(float), Zl])

    def _fit(self, split):
        self._check_binary(split)
        Ls, rs = self._parts(split.Xs)
        Lt, rt = self._parts(split.Xtl)
        L = np.vstack([Ls, Lt])
        r = np.r_[rs, rt]
        y = np.r_[split.ys, split.ytl]
        is_t = np.r_[np.zeros(len(rs)), np.ones(len(rt))]
        w = np.r_[_weights(split.ws, len(rs)), self.target_weight * _weights(split.wtl, len(rt))]
        self.imputer_ = SimpleImputer(strategy="median", keep_empty_features=True).fit(L)
        self.mu_, self.sd_ = _standardiser(self.imputer_.transform(L), w)
        ok = np.isfinite(r)
        # the score's coefficient toward 1, the target indicator lightly toward 0, the local terms strongly
        prior, pen = stacking_prior(2, 1, 1, L.shape[1], score_penalty=self.score_penalty, C=self.C)
        self.coef_ = prior
        self.intercept_ = np.zeros(1)
        if ok.any():
            self.coef_, self.intercept_ = fit_offset_stacking(self._design(L[ok], r[ok], is_t[ok]), y[ok], 2, prior,
                                                              pen, w[ok])
        self.fallback_ = _LocalFallback().fit(
            Ls, split.ys, Lt, split.ytl, 2, split.ws, split.wtl, target_weight=self.target_weight
        )

    def _predict_proba(self, X, sample_domain):
        L, r = self._parts(X)
        tgt = sample_domain < 0
        z = (self._design(L, np.nan_to_num(r), tgt) @ self.coef_.T + self.intercept_)[:, 0]
        z = np.where(np.isfinite(r), z, self.fallback_.logit(L))
        return _to_proba(z[:, None])
