"""Model-based transfer: start from the source model and adapt its parameters to the target.

All of these use the n_t labelled target rows (``needs_labels``); with none they fall back to
the source model.

- :class:`ContinuedBoosting` - gradient boosting on the source, then more boosting rounds on
  the labelled target rows starting from the source model's scores;
- :class:`LinearPriorTransfer` - logistic regression on the target rows, regularised toward
  the source coefficients (``||w - w_source||^2 / C``);
- :class:`Stacking` - the source model's score as an offset, plus a strongly regularised
  correction from the local features, fitted on the target rows;
- :class:`Recalibration` - logistic recalibration of the source model (intercept only for
  tiny n, intercept + slope otherwise; a bias vector + temperature for multi-class);
- :class:`ReferenceRecalibration`, :class:`ReferenceStacking`, :class:`ReferenceBoosting` -
  recalibration, stacking and continued boosting around an external clinical score (e.g.
  APACHE IV predicted mortality) that the runner appends as the logit in the LAST column of
  ``X`` (``MethodSpec.uses_reference``). Binary only.

The estimators are thin: the Newton boosting engine lives in ``_boosting``, the logistic
solvers and links in ``_linear``, the reference-score methods in ``_reference``; every name
stays importable from here.

Example
-------
>>> from healthtransfer.data.synthetic import make_shifted_domains
>>> from healthtransfer.methods.model import Recalibration
>>> d = make_shifted_domains("label", n_source=200, n_target=100, random_state=0)
>>> m = Recalibration().fit(d.X, d.masked_y(30), sample_domain=d.sample_domain)
>>> m.predict_proba(d.X[d.target]).shape
(100, 2)
"""

from __future__ import annotations

from functools import partial

import numpy as np
from scipy.special import log_softmax

from . import _memo
from ._base import DomainSplit, TransferClassifier, proba_full
from ._boosting import boosted_raw, newton_boost
from ._linear import (
    _enough_for_slope,
    _has_two_classes,
    _scores,
    _SourceLinear,
    _standardiser,
    _to_proba,
    _weights,
    fit_bias_temperature,
    fit_offset_stacking,
    log_proba,
    penalised_logistic,
    stacking_prior,
)
from ._reference import ReferenceBoosting, ReferenceRecalibration, ReferenceStacking
from ._spec import MethodSpec
from .baselines import make_base_estimator

__all__ = [
    "ContinuedBoosting",
    "LinearPriorTransfer",
    "Stacking",
    "Recalibration",
    "ReferenceRecalibration",
    "ReferenceStacking",
    "ReferenceBoosting",
    "newton_boost",
    "boosted_raw",
    "penalised_logistic",
    "fit_bias_temperature",
]


# ----------------------------------------------------------------------------------------
# estimators
# ----------------------------------------------------------------------------------------
class _SourceModelMixin:
    """Fit ``self.base`` ("lr"/"gbm") on the source rows and return full log-probabilities."""

    def _fit_source(self, split: DomainSplit):
        K = split.n_classes
        if not _has_two_classes(split.ys):
            prior = np.bincount(split.ys, minlength=K) + 1.0
            self._source_const_ = np.log(prior / prior.sum())
            self.source_estimator_ = None
            return
        self._source_const_ = None
        self.source_estimator_ = make_base_estimator(self.base, self.random_state).fit(
            split.Xs, split.ys, sample_weight=split.ws
        )

    def _source_logp(self, X):
        if self.source_estimator_ is None:
            return np.tile(self._source_const_, (X.shape[0], 1))
        return log_proba(proba_full(self.source_estimator_, X, len(self.classes_)))


class ContinuedBoosting(TransferClassifier):
    """Gradient boosting on the source, continued on the labelled target rows.

    A histogram gradient-boosting model is fitted on the source rows; its raw scores are the
    starting point of ``n_target_iter`` extra Newton boosting rounds (shallow regression trees
    on the log-loss gradients) fitted on the labelled target rows only. This is warm-starting
    the source booster on the target, without scikit-learn's ``warm_start`` (which re-bins the
    data and re-encodes the labels, so it cannot switch training sets safely). With no
    labelled target rows it is the source model. Copes with NaN itself (trees route them).

    Parameters
    ----------
    max_iter, learning_rate, max_leaf_nodes, min_samples_leaf, l2_regularization :
        The source booster (scikit-learn ``HistGradientBoostingClassifier``).
    n_target_iter : int, default=30
        Boosting rounds on the target rows.
    target_learning_rate : float, default=0.1
    target_max_depth : int, default=2
    target_min_samples_leaf : int, default=5
    random_state : int or None

    Example
    -------
    >>> from healthtransfer.data.synthetic import make_shifted_domains
    >>> d = make_shifted_domains("concept", n_source=200, n_target=100, random_state=0)
    >>> m = ContinuedBoosting(max_iter=30).fit(d.X, d.masked_y(40), sample_domain=d.sample_domain)
    >>> m.predict_proba(d.X[d.target]).shape
    (100, 2)
    """

    family = "model"
    uses_target = "labelled"
    handles_nan = True

    def __init__(
        self,
        max_iter=150,
        learning_rate=0.05,
        max_leaf_nodes=15,
        min_samples_leaf=10,
        l2_regularization=1.0,
        n_target_iter=30,
        target_learning_rate=0.1,
        target_max_depth=2,
        target_min_samples_leaf=5,
        random_state=None,
    ):
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.n_target_iter = n_target_iter
        self.target_learning_rate = target_learning_rate
        self.target_max_depth = target_max_depth
        self.target_min_samples_leaf = target_min_samples_leaf
        self.random_state = random_state

    def _raw_source(self, X):
        K = len(self.classes_)
        if self.source_estimator_ is None:
            F = np.tile(self._source_const_, (X.shape[0], 1))
        else:
            F = log_proba(proba_full(self.source_estimator_, X, K))
        return F[:, 1:] - F[:, :1] if K == 2 else F

    def _fit(self, split):
        # the source model reads no target label: the same for every budget and CV fold of a unit
        _memo.stage(self, split, "source", lambda: self._fit_source(split))
        K = split.n_classes
        self.target_trees_ = []
        n_source_iter = 1 if self.source_estimator_ is None else self.source_estimator_.n_iter_
        self.n_iter_ = n_source_iter
        n = split.Xtl.shape[0]
        if n < 2 or self.n_target_iter <= 0:
            return
        X, y = split.Xtl, split.ytl
        self.target_trees_ = newton_boost(
            X, y, self._raw_source(X), K, _weights(split.wtl, n), n_iter=self.n_target_iter,
            learning_rate=self.target_learning_rate, max_depth=self.target_max_depth,
            min_samples_leaf=self.target_min_samples_leaf, random_state=self.random_state,
        )
        self.n_iter_ = n_source_iter + len(self.target_trees_)

    def _fit_source(self, split):
        from sklearn.ensemble import HistGradientBoostingClassifier

        K = split.n_classes
        if _has_two_classes(split.ys):
            self._source_const_ = None
            self.source_estimator_ = HistGradientBoostingClassifier(
                max_iter=self.max_iter,
                learning_rate=self.learning_rate,
                max_leaf_nodes=self.max_leaf_nodes,
                min_samples_leaf=self.min_samples_leaf,
                l2_regularization=self.l2_regularization,
                early_stopping=False,
                random_state=self.random_state,
            ).fit(split.Xs, split.ys, sample_weight=split.ws)
        else:
            prior = np.bincount(split.ys, minlength=K) + 1.0
            self._source_const_ = np.log(prior / prior.sum())
            self.source_estimator_ = None

    def _predict_proba(self, X, sample_domain):
        F = self._raw_source(X)
        tgt = sample_domain < 0
        if self.target_trees_ and tgt.any():
            F[tgt] = boosted_raw(self.target_trees_, X[tgt], self.target_learning_rate, start=F[tgt])
        return _to_proba(F)


class LinearPriorTransfer(TransferClassifier):
    """Logistic regression on the labelled target rows, shrunk toward the source solution.

    Features are standardised with the (weighted) source mean and scale. The source model is a
    ridge logistic regression (``C_source``); the target model minimises the target log-loss
    plus ``0.5 * ||w - w_source||^2 / C`` (intercept: ``/ (C * intercept_scale)``, i.e. looser,
    since prevalence moves most). With no labelled target rows it is the source model.
    Multi-class uses a softmax with one coefficient row per class.

    Parameters
    ----------
    C : float, default=1.0
        Strength of the pull toward the source (smaller = closer to the source).
    C_source : float, default=1.0
    intercept_scale : float, default=10.0
    random_state : ignored, kept for a uniform factory signature.

    Example
    -------
    >>> from healthtransfer.data.synthetic import make_shifted_domains
    >>> d = make_shifted_domains("concept", n_source=200, n_target=100, random_state=0)
    >>> m = LinearPriorTransfer().fit(d.X, d.masked_y(40), sample_domain=d.sample_domain)
    >>> m.coef_.shape
    (1, 5)
    """

    family = "model"
    uses_target = "labelled"

    def __init__(self, C=1.0, C_source=1.0, intercept_scale=10.0, random_state=None):
        self.C = C
        self.C_source = C_source
        self.intercept_scale = intercept_scale
        self.random_state = random_state

    def _fit(self, split):
        K = split.n_classes
        self.source_ = _SourceLinear(self.C_source).fit(split.Xs, split.ys, K, split.ws)
        self.source_coef_, self.source_intercept_ = self.source_.W_, self.source_.b_
        self.coef_, self.intercept_ = self.source_coef_, self.source_intercept_
        if split.Xtl.shape[0] > 0:
            self.coef_, self.intercept_ = penalised_logistic(
                self.source_.transform(split.Xtl), split.ytl, K,
                coef_prior=self.source_coef_, intercept_prior=self.source_intercept_,
                coef_penalty=1.0 / self.C,
                intercept_penalty=1.0 / (self.C * self.intercept_scale),
                sample_weight=split.wtl,
            )

    def _predict_proba(self, X, sample_domain):
        Z = self.source_.transform(X)
        z_t = Z @ self.coef_.T + self.intercept_
        z_s = Z @ self.source_coef_.T + self.source_intercept_
        return _to_proba(np.where((sample_domain < 0)[:, None], z_t, z_s))


class Stacking(_SourceModelMixin, TransferClassifier):
    """The source model's score as an offset, plus a strongly regularised local correction.

    Target logit = ``a + b * s(x) + delta . x`` where ``s`` is the source model's logit
    (centred log-probabilities for multi-class, coefficient matrix pulled toward identity),
    ``x`` the standardised features. ``a`` and ``b`` are lightly regularised (toward 0 and 1);
    ``delta`` strongly (penalty ``1 / C``), so with few target rows it stays near the source
    model and only fixes what the data insist on. Fitted on the labelled target rows.

    Parameters
    ----------
    base : {"lr", "gbm"}, default="lr"
        Source model.
    C : float, default=0.05
        Inverse strength of the penalty on the local correction.
    score_penalty : float, default=1.0
        Penalty pulling the score coefficient toward 1.
    random_state : int or None

    Example
    -------
    >>> from healthtransfer.data.synthetic import make_shifted_domains
    >>> d = make_shifted_domains("concept", n_source=200, n_target=100, random_state=0)
    >>> m = Stacking().fit(d.X, d.masked_y(40), sample_domain=d.sample_domain)
    >>> m.predict_proba(d.X[d.target]).shape
    (100, 2)
    """

    family = "model"
    uses_target = "labelled"

    def __init__(self, base="lr", C=0.05, score_penalty=1.0, random_state=None):
        self.base = base
        self.C = C
        self.score_penalty = score_penalty
        self.random_state = random_state

    def _design(self, X):
        return np.column_stack([_scores(self._source_logp(X)), (X - self._mu) / self._sd])

    def _fit(self, split):
        K = split.n_classes
        self._fit_source(split)
        self._mu, self._sd = _standardiser(split.Xs, split.ws)
        prior, pen = stacking_prior(K, 1 if K == 2 else K, 0, split.Xs.shape[1], score_penalty=self.score_penalty,
                                    C=self.C)
        self._prior_coef = prior
        self.coef_, self.intercept_ = prior, np.zeros(len(prior))
        if split.Xtl.shape[0] > 0:
            self.coef_, self.intercept_ = fit_offset_stacking(self._design(split.Xtl), split.ytl, K, prior, pen,
                                                              split.wtl)

    def _predict_proba(self, X, sample_domain):
        D = self._design(X)
        z = np.where((sample_domain < 0)[:, None], D @ self.coef_.T + self.intercept_,
                     D @ self._prior_coef.T)
        return _to_proba(z)


class Recalibration(_SourceModelMixin, TransferClassifier):
    """Logistic recalibration of the source model on the labelled target rows.

    New logits ``beta * log p_source(x) + bias``: for two classes that is ``a + b * logit``.
    With fewer than ``min_n_slope`` labelled rows (or fewer than ``min_per_class`` in some
    class) only the intercept/bias vector is refitted (``beta = 1``); otherwise the slope
    (temperature for multi-class) too. With no labelled target rows it is the source model.

    Parameters
    ----------
    base : {"lr", "gbm"}, default="lr"
    min_n_slope : int, default=20
    min_per_class : int, default=5
    random_state : int or None

    Example
    -------
    >>> from healthtransfer.data.synthetic import make_shifted_domains
    >>> d = make_shifted_domains("label", n_source=200, n_target=100, random_state=0)
    >>> m = Recalibration().fit(d.X, d.masked_y(10), sample_domain=d.sample_domain)
    >>> m.slope_
    1.0
    """

    family = "model"
    uses_target = "labelled"

    def __init__(self, base="lr", min_n_slope=20, min_per_class=5, random_state=None):
        self.base = base
        self.min_n_slope = min_n_slope
        self.min_per_class = min_per_class
        self.random_state = random_state

    def _fit(self, split):
        K = split.n_classes
        self._fit_source(split)
        self.slope_, self.bias_ = 1.0, np.zeros(K)
        if split.Xtl.shape[0] > 0:
            slope = _enough_for_slope(split.ytl, K, self.min_n_slope, self.min_per_class)
            self.slope_, self.bias_ = fit_bias_temperature(
                self._source_logp(split.Xtl), split.ytl, slope=slope, sample_weight=split.wtl
            )

    def _predict_proba(self, X, sample_domain):
        S = self._source_logp(X)
        tgt = (sample_domain < 0)[:, None]
        return np.exp(log_softmax(np.where(tgt, self.slope_ * S + self.bias_, S), axis=1))


# ----------------------------------------------------------------------------------------
# registry
# ----------------------------------------------------------------------------------------
def _mk(cls, random_state=None, **params):
    return cls(random_state=random_state, **params)


METHODS = [
    MethodSpec("continued_boosting", "model", partial(_mk, ContinuedBoosting), "labelled",
               "Gradient boosting on the source, continued for more rounds on the labelled "
               "target rows.", needs_labels=True,
               grid=({"n_target_iter": 10}, {"n_target_iter": 30}, {"n_target_iter": 60})),
    MethodSpec("linear_prior", "model", partial(_mk, LinearPriorTransfer), "labelled",
               "Logistic regression on the target rows regularised toward the source "
               "coefficients.", needs_labels=True,
               grid=({"C": 0.1}, {"C": 1.0}, {"C": 10.0})),
    MethodSpec("stacking_lr", "model", partial(_mk, Stacking, base="lr"), "labelled",
               "Source logistic model's logit as offset + strongly regularised local "
               "correction fitted on the target rows.", needs_labels=True,
               grid=({"C": 0.01}, {"C": 0.05}, {"C": 0.3})),
    MethodSpec("stacking_gbm", "model", partial(_mk, Stacking, base="gbm"), "labelled",
               "Source gradient-boosting logit as offset + strongly regularised local "
               "correction fitted on the target rows.", needs_labels=True,
               grid=({"C": 0.01}, {"C": 0.05}, {"C": 0.3})),
    MethodSpec("recalibration_lr", "model", partial(_mk, Recalibration, base="lr"), "labelled",
               "Source logistic model recalibrated (intercept, + slope when n allows) on the "
               "target rows.", needs_labels=True),
    MethodSpec("recalibration_gbm", "model", partial(_mk, Recalibration, base="gbm"), "labelled",
               "Source gradient-boosting model recalibrated (intercept, + slope when n allows) "
               "on the target rows.", needs_labels=True),
    # Without target labels it is the score recalibrated on the source rows: an existing
    # model the site already trusts, so it is a label-free candidate and can be the bar that
    # model selection holds adaptation methods to (with labels it recalibrates on them).
    MethodSpec("reference_recalibration", "model", partial(_mk, ReferenceRecalibration),
               "labelled", "External reference score (e.g. APACHE IV) recalibrated on the "
               "labelled target rows (on the source rows at n_t = 0); source model where the "
               "score is missing.",
               needs_labels=False, multiclass=False, uses_reference=True),
    MethodSpec("reference_boosting", "model", partial(_mk, ReferenceBoosting), "labelled",
               "External reference score as the starting point of a few damped boosting rounds "
               "on the local features (source + labelled target rows; source rows only at "
               "n_t = 0); source model where the score is missing.",
               needs_labels=False, multiclass=False, uses_reference=True,
               grid=({"n_iter": 25}, {"n_iter": 50}, {"n_iter": 100})),
    MethodSpec("reference_stacking", "model", partial(_mk, ReferenceStacking), "labelled",
               "External reference score as offset + strongly regularised local correction, "
               "trained on source + up-weighted target rows.",
               needs_labels=True, multiclass=False, uses_reference=True,
               grid=({"C": 0.01}, {"C": 0.05}, {"C": 0.3})),
]
