"""Transfer for continuous outcomes (e.g. length of stay), following scikit-learn's regressors.

``fit(X, y, sample_domain=...)`` with skada's domain convention; unlabelled target rows carry
``y = NaN`` (``-1`` is a valid continuous value). ``score`` is R².

- baselines: ridge and histogram gradient boosting on source / target / pooled rows;
- instance: :class:`ImportanceWeightedRegressor` (domain-classifier weights of ``iw_domain_lr``);
- feature: :class:`MappedRegressor` (CORAL / per-domain standardisation maps of the feature family);
- model: :class:`ResidualFineTune` (a target model of the source model's residuals: ridge =
  an L2 prior centred on the source coefficients; boosting = continued boosting from the
  source predictions), :class:`ReferenceRegressor` (an existing prediction, e.g. APACHE IV's
  predicted length of stay in the last column of ``X``, recalibrated linearly at the target,
  optionally boosted on its residuals).

Example
-------
>>> import numpy as np
>>> from healthtransfer.methods.regression import PlainRegressor
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(100, 3)); y = X @ [1.0, 2.0, 0.0] + rng.normal(size=100)
>>> d = np.r_[np.ones(60, int), -np.ones(40, int)]
>>> round(PlainRegressor(rows="source").fit(X, y, sample_domain=d).score(X, y), 1) > 0.5
True
"""

from __future__ import annotations

from functools import partial

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import Ridge, RidgeCV

from ._spec import MethodSpec

__all__ = ["PlainRegressor", "ImportanceWeightedRegressor", "MappedRegressor", "ResidualFineTune",
           "ReferenceRegressor", "METHODS", "make_learner"]


def make_learner(kind: str, random_state=None):
    """``"ridge"`` or ``"gbm"``: the base regressors every method builds on."""
    if kind == "ridge":
        # penalty by efficient leave-one-out: alpha = 1 let 50 target rows x 65 features overfit
        # (R² of -20 on eICU LOS)
        return RidgeCV(alphas=np.logspace(-1, 4, 11))
    if kind == "gbm":
        return HistGradientBoostingRegressor(max_iter=200, learning_rate=0.05, max_leaf_nodes=15, min_samples_leaf=20,
                                             l2_regularization=1.0, random_state=random_state)
    raise ValueError(f"learner must be 'ridge' or 'gbm', got {kind!r}")


class _RegressionBase(RegressorMixin, BaseEstimator):
    family = "baseline"
    uses_target = "none"

    def fit(self, X, y, sample_domain=None):
        X, y = np.asarray(X, float), np.asarray(y, float)
        d = np.ones(len(X), int) if sample_domain is None else np.asarray(sample_domain, int)
        src = d > 0
        lab_t = (~src) & ~np.isnan(y)
        self._fit(X, y, d, src, lab_t)
        return self

    def predict(self, X, sample_domain=None):
        return np.asarray(self.est_.predict(self._features(X, sample_domain)), float)

    def _features(self, X, sample_domain=None):
        return np.asarray(X, float)

    def score(self, X, y, sample_domain=None, sample_weight=None):
        from sklearn.metrics import r2_score

        return r2_score(y, self.predict(X, sample_domain), sample_weight=sample_weight)


def _fit_w(est, X, y, w=None):
    return est.fit(X, y, sample_weight=w) if w is not None else est.fit(X, y)


class PlainRegressor(_RegressionBase):
    """``learner`` (ridge / gbm) on ``rows`` (source, target or pooled)."""

    def __init__(self, rows="source", learner="ridge", random_state=None):
        self.rows, self.learner, self.random_state = rows, learner, random_state

    def _fit(self, X, y, d, src, lab_t):
        m = {"source": src, "target": lab_t, "pooled": src | lab_t}[self.rows]
        self.est_ = make_learner(self.learner, self.random_state).fit(X[m], y[m])


def _split(X, d, src, lab_t):
    from ._base import DomainSplit

    return DomainSplit(Xs=X[src], ys=np.zeros(src.sum(), int), ds=d[src], Xt=X[~src], Xtl=X[lab_t],
                       ytl=np.zeros(lab_t.sum(), int), n_classes=2)


class ImportanceWeightedRegressor(_RegressionBase):
    """``learner`` on source rows weighted by p_t(x)/p_s(x) plus the labelled target rows."""

    family = "instance"
    uses_target = "both"

    def __init__(self, learner="ridge", random_state=None):
        self.learner, self.random_state = learner, random_state

    def _fit(self, X, y, d, src, lab_t):
        from .instance import DomainClassifierIW, _clip_normalise, effective_sample_size

        w = np.ones(int(src.sum()))
        if (~src).sum() >= 2:
            iw = DomainClassifierIW(random_state=self.random_state)
            w = _clip_normalise(iw._source_weights(_split(X, d, src, lab_t)), iw.clip_quantile, iw.max_weight)
        self.weights_, self.ess_fraction_ = w, effective_sample_size(w) / max(len(w), 1)
        m = src | lab_t
        sw = np.ones(len(X))
        sw[src] = w
        self.est_ = _fit_w(make_learner(self.learner, self.random_state), X[m], y[m], sw[m])


class MappedRegressor(_RegressionBase):
    """A feature-family map (``"coral"`` / ``"domain_std"``) in front of ``learner``."""

    family = "feature"
    uses_target = "both"

    def __init__(self, mapping="coral", learner="ridge", random_state=None):
        self.mapping, self.learner, self.random_state = mapping, learner, random_state

    def _fit(self, X, y, d, src, lab_t):
        from .feature import CORAL, DomainStandardization

        if self.mapping not in ("coral", "domain_std"):
            raise ValueError(f"mapping must be 'coral' or 'domain_std', got {self.mapping!r}")
        self.map_ = CORAL() if self.mapping == "coral" else DomainStandardization()
        self.map_._fit_maps(_split(X, d, src, lab_t))
        Z = np.vstack([self.map_._map_rows(X[src], d[src]), self.map_._map(X[lab_t], "target", -1)])
        self.est_ = make_learner(self.learner, self.random_state).fit(Z, np.r_[y[src], y[lab_t]])

    def _features(self, X, sample_domain=None):
        X = np.asarray(X, float)
        d = -np.ones(len(X), int) if sample_domain is None else np.asarray(sample_domain, int)
        return self.map_._map_rows(X, d)


class ResidualFineTune(_RegressionBase):
    """Source model plus a target model of its residuals.

    ``learner="ridge"``: the target ridge of the residuals is ridge regression with its L2
    prior centred on the source coefficients (``alpha`` = prior strength). ``learner="gbm"``:
    continued boosting, ``n_rounds`` shallow trees fitted on the target from the source
    model's predictions. With no labelled target rows it is the source model.
    """

    family = "model"
    uses_target = "labelled"

    def __init__(self, learner="ridge", alpha=10.0, n_rounds=50, random_state=None):
        self.learner, self.alpha, self.n_rounds, self.random_state = learner, alpha, n_rounds, random_state

    def _fit(self, X, y, d, src, lab_t):
        self.source_ = make_learner(self.learner, self.random_state).fit(X[src], y[src])
        self.delta_ = None
        if lab_t.sum() >= 5:
            r = y[lab_t] - self.source_.predict(X[lab_t])
            if self.learner == "ridge":
                # the prior's strength by leave-one-out, at least ``alpha``
                self.delta_ = RidgeCV(alphas=self.alpha * np.logspace(0, 3, 7)).fit(X[lab_t], r)
            else:
                self.delta_ = HistGradientBoostingRegressor(
                    max_iter=self.n_rounds, learning_rate=0.05, max_depth=2, min_samples_leaf=5,
                    l2_regularization=1.0, random_state=self.random_state).fit(X[lab_t], r)

    def predict(self, X, sample_domain=None):
        X = np.asarray(X, float)
        p = self.source_.predict(X)
        return p if self.delta_ is None else p + self.delta_.predict(X)


class ReferenceRegressor(_RegressionBase):
    """An existing prediction (last column of ``X``) recalibrated as ``a + b * score`` on the
    labelled target rows (at least ``min_rows``) or else on the source rows; ``boost=True``
    adds gradient boosting of the features on its residuals (source + labelled target rows)."""

    family = "model"
    uses_target = "both"

    def __init__(self, boost=False, min_rows=20, random_state=None):
        self.boost, self.min_rows, self.random_state = boost, min_rows, random_state

    def _fit(self, X, y, d, src, lab_t):
        r = X[:, -1]
        has = ~np.isnan(r)
        on_target = (lab_t & has).sum() >= self.min_rows
        self.fitted_on_ = "target" if on_target else "source"
        use = (lab_t if on_target else src) & has
        self.median_ = float(np.nanmedian(r[use]))
        self.recal_ = Ridge(alpha=1e-6).fit(r[use][:, None], y[use])
        self.boost_ = None
        if self.boost:
            m = src | lab_t
            base = self.recal_.predict(self._ref(X[m]))
            self.boost_ = clone(make_learner("gbm", self.random_state)).set_params(max_iter=100).fit(X[m, :-1], y[m] - base)

    def _ref(self, X):
        r = np.asarray(X, float)[:, -1]
        return np.where(np.isnan(r), self.median_, r)[:, None]

    def predict(self, X, sample_domain=None):
        X = np.asarray(X, float)
        p = self.recal_.predict(self._ref(X))
        return p if self.boost_ is None else p + self.boost_.predict(X[:, :-1])


def _factory(cls, fixed, random_state=None, **params):
    return cls(random_state=random_state, **{**fixed, **params})


def _spec(name, family, cls, uses_target, desc, needs_labels=False, uses_reference=False, **kw):
    return MethodSpec(name, family, partial(_factory, cls, kw), uses_target, desc, needs_labels=needs_labels,
                      multiclass=False, uses_reference=uses_reference, outcome="regression")


METHODS = [
    _spec("source_ridge", "baseline", PlainRegressor, "none", "Ridge regression on the source sites.", rows="source"),
    _spec("source_gbr", "baseline", PlainRegressor, "none", "Gradient-boosted regression on the source sites.",
          rows="source", learner="gbm"),
    _spec("target_ridge", "baseline", PlainRegressor, "labelled", "Ridge regression on the labelled target rows.",
          needs_labels=True, rows="target"),
    _spec("target_gbr", "baseline", PlainRegressor, "labelled", "Gradient-boosted regression on the labelled target rows.",
          needs_labels=True, rows="target", learner="gbm"),
    _spec("pooled_ridge", "baseline", PlainRegressor, "labelled", "Ridge regression on source + labelled target rows.",
          needs_labels=True, rows="pooled"),
    _spec("pooled_gbr", "baseline", PlainRegressor, "labelled",
          "Gradient-boosted regression on source + labelled target rows.", needs_labels=True, rows="pooled",
          learner="gbm"),
    _spec("iw_ridge", "instance", ImportanceWeightedRegressor, "both",
          "Ridge on importance-weighted source rows (domain classifier) plus labelled target rows."),
    _spec("iw_gbr", "instance", ImportanceWeightedRegressor, "both",
          "Gradient boosting on importance-weighted source rows plus labelled target rows.", learner="gbm"),
    _spec("coral_ridge", "feature", MappedRegressor, "both", "CORAL-aligned features, then ridge.", mapping="coral"),
    _spec("domain_std_ridge", "feature", MappedRegressor, "both", "Per-domain standardised features, then ridge.",
          mapping="domain_std"),
    _spec("finetune_ridge", "model", ResidualFineTune, "labelled",
          "Source ridge plus a target ridge of its residuals (L2 prior centred on the source model).",
          needs_labels=True),
    _spec("finetune_gbr", "model", ResidualFineTune, "labelled",
          "Source gradient boosting continued on the labelled target rows.", needs_labels=True, learner="gbm"),
    _spec("reference_recalibration_reg", "model", ReferenceRegressor, "both",
          "The study's reference prediction (e.g. APACHE IV LOS) recalibrated linearly at the target.",
          uses_reference=True),
    _spec("reference_boosting_reg", "model", ReferenceRegressor, "both",
          "Recalibrated reference prediction plus gradient boosting of its residuals.", uses_reference=True, boost=True),
]
