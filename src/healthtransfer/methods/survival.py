"""Transfer for time-to-event outcomes (right-censored), on scikit-survival's models.

Every estimator takes skada's domain convention with a survival target: ``fit(X, y,
sample_domain=...)`` where ``y`` is the structured (event, time) array of
:mod:`healthtransfer.data.outcomes`, sources are >= 1, targets <= -1 and unlabelled target
rows carry ``time = NaN``. ``predict(X)`` returns a risk score (higher = earlier event) and
``predict_survival(X, times)`` the survival curves.

Methods (the partial likelihood, its penalties and Breslow's baseline are scikit-survival's):

- baselines: penalised Cox (:class:`CoxSurvival`) and gradient-boosted Cox
  (:class:`BoostedSurvival`) on source / target / pooled rows, and the site-stratified Cox
  model (:class:`StratifiedCox`, lifelines: a baseline hazard per site, shared coefficients);
- instance: :class:`ImportanceWeightedCox`, domain-classifier importance weights (the same
  weights as ``iw_domain_lr``) in a weighted Cox fit by component-wise likelihood boosting;
- feature: :class:`MappedCox`, CORAL or per-domain standardisation (the feature family's own
  maps) in front of penalised Cox;
- model: :class:`RecalibratedCox` (the source linear predictor's slope and the baseline
  survival refitted on the labelled target rows, how published scores such as QRISK are moved
  to a new population), :class:`RevisedCox` (the source linear predictor as an unpenalised
  covariate plus a strongly shrunken refit of every coefficient on the target: an offset
  model whose offset may be rescaled), and :class:`ReferenceCox` (a Cox model on an existing
  score, e.g. APACHE IV, passed as the last column of ``X``).

Example
-------
>>> import numpy as np
>>> from healthtransfer.methods.survival import CoxSurvival, make_survival_domains
>>> X, y, d = make_survival_domains(random_state=0)
>>> m = CoxSurvival(rows="source").fit(X, y, sample_domain=d)
>>> m.predict_survival(X[:2], [1.0, 2.0]).shape
(2, 2)
"""

from __future__ import annotations

from functools import partial

import numpy as np
from sklearn.base import BaseEstimator

from ..data.outcomes import SURV_DTYPE, is_unlabelled_survival
from ._spec import MethodSpec

__all__ = [
    "CoxSurvival", "StratifiedCox", "BoostedSurvival", "ImportanceWeightedCox", "MappedCox", "RecalibratedCox", "RevisedCox",
    "ReferenceCox", "METHODS", "make_survival_domains",
]


def make_survival_domains(n_source=300, n_target=200, shift=1.0, n_features=4, random_state=None):
    """A synthetic source/target pair with covariate shift and censoring, for tests and examples.

    The hazard is exponential in a non-linear function of x, so a linear model fitted on the
    source's region of x misranks the target's region; about 30% of rows are censored.
    Target rows are all labelled; mask them with :func:`~healthtransfer.data.outcomes.masked_survival`.
    """
    rng = np.random.default_rng(random_state)
    Xs = rng.normal(size=(n_source, n_features))
    Xt = rng.normal(size=(n_target, n_features)) + np.r_[shift, np.zeros(n_features - 1)]
    X = np.vstack([Xs, Xt])
    lp = 0.8 * X[:, 0] - 0.4 * np.maximum(X[:, 0], 0) ** 2 + 0.5 * X[:, 1]
    t_event = rng.exponential(5.0 * np.exp(-lp))
    t_cens = rng.exponential(10.0, len(X))
    y = np.empty(len(X), SURV_DTYPE)
    y["time"] = np.maximum(np.minimum(t_event, t_cens), 1e-3)
    y["event"] = t_event <= t_cens
    d = np.r_[np.ones(n_source, int), -np.ones(n_target, int)]
    return X, y, d


def _curves_on(est, X, times) -> np.ndarray:
    """Survival of each row of ``X`` at ``times`` (step function; 1 before the first time)."""
    S = np.asarray(est.predict_survival_function(X, return_array=True), float)
    grid = np.asarray(est.unique_times_, float)
    idx = np.searchsorted(grid, np.asarray(times, float), side="right") - 1
    out = np.ones((len(X), len(idx)))
    ok = idx >= 0
    out[:, ok] = S[:, idx[ok]]
    return out


class _SurvivalBase(BaseEstimator):
    """Bookkeeping shared by every survival method: split rows by role, fit, predict."""

    family = "baseline"
    uses_target = "none"

    def _split(self, X, y, sample_domain):
        X = np.asarray(X, float)
        y = np.asarray(y)
        if y.dtype.names is None or set(y.dtype.names) != {"event", "time"}:
            raise ValueError("y must be a structured array with fields 'event' and 'time' "
                             "(healthtransfer.data.outcomes.survival_target)")
        d = np.ones(len(X), int) if sample_domain is None else np.asarray(sample_domain, int)
        src = d > 0
        lab_t = (~src) & ~is_unlabelled_survival(y)
        return X, y, d, src, lab_t

    @staticmethod
    def _clean(y):
        out = np.empty(len(y), SURV_DTYPE)
        out["event"], out["time"] = y["event"], np.maximum(y["time"], 1e-6)
        return out

    def _rows(self, which, src, lab_t):
        return {"source": src, "target": lab_t, "pooled": src | lab_t}[which]

    def fit(self, X, y, sample_domain=None):
        X, y, d, src, lab_t = self._split(X, y, sample_domain)
        self._fit(X, y, d, src, lab_t)
        return self

    # a model exposes est_ (a fitted sksurv estimator) and _features(X) -> the matrix it takes
    def _features(self, X, sample_domain=None):
        return np.asarray(X, float)

    def predict(self, X, sample_domain=None):
        """Risk score: higher means an earlier event."""
        return np.asarray(self.est_.predict(self._features(X, sample_domain)), float)

    def predict_survival(self, X, times, sample_domain=None):
        """Survival probabilities, shape (n_rows, len(times))."""
        return _curves_on(self.est_, self._features(X, sample_domain), times)

    def predict_risk(self, X, horizons, sample_domain=None):
        """Probability of the event by each horizon, shape (n_rows, len(horizons))."""
        return 1.0 - self.predict_survival(X, horizons, sample_domain)

    def score(self, X, y, sample_domain=None):
        """Harrell's concordance index."""
        from sksurv.metrics import concordance_index_censored

        return concordance_index_censored(y["event"], y["time"], self.predict(X, sample_domain))[0]


def _cox(alpha):
    from sksurv.linear_model import CoxPHSurvivalAnalysis

    return CoxPHSurvivalAnalysis(alpha=alpha, ties="efron", n_iter=200)


class CoxSurvival(_SurvivalBase):
    """Ridge-penalised Cox proportional hazards on ``rows`` (source, target or pooled).

    >>> X, y, d = make_survival_domains(random_state=1)
    >>> round(CoxSurvival(rows="pooled").fit(X, y, sample_domain=d).score(X, y), 2) > 0.5
    True
    """

    def __init__(self, rows="source", alpha=1.0, random_state=None):
        self.rows, self.alpha, self.random_state = rows, alpha, random_state

    def _fit(self, X, y, d, src, lab_t):
        m = self._rows(self.rows, src, lab_t)
        self.est_ = _cox(self.alpha).fit(X[m], self._clean(y[m]))

    def linear_form(self) -> dict:
        """What a pickle-free bundle needs: coefficients and the baseline survival."""
        return {"coef": self.est_.coef_.tolist(), "times": self.est_.unique_times_.tolist(),
                "baseline_survival": self.est_.baseline_survival_.y.tolist(), "map": None}


class StratifiedCox(_SurvivalBase):
    """Site-stratified Cox model (lifelines): shared coefficients, a separate baseline hazard
    per site (each source site and the target are strata), on source + labelled target rows.

    The target's own baseline is used once its labelled rows hold ``min_events`` events;
    before that (a Breslow curve from a handful of events is mostly noise) the target is
    predicted with the source strata's cumulative baseline hazards averaged, weighted by their
    rows. The fitted model is held as coefficients and a baseline survival at x = 0, so it
    predicts, exports and bundles like every other Cox model here. Needs ``lifelines``
    (``pip install 'healthtransfer[survival]'``).
    """

    def __init__(self, penalizer=0.01, min_events=5, random_state=None):
        self.penalizer, self.min_events, self.random_state = penalizer, min_events, random_state

    def _fit(self, X, y, d, src, lab_t):
        import pandas as pd

        try:
            from lifelines import CoxPHFitter
        except ImportError:  # pragma: no cover - the survival extra installs it
            raise ImportError("stratified_cox needs lifelines: pip install 'healthtransfer[survival]'") from None
        m = src | lab_t
        yy = self._clean(y[m])
        # a constant column (a category absent from these rows) has no coefficient to fit, and
        # lifelines' scaling would divide by its zero spread
        self.used_ = np.flatnonzero(np.ptp(X[m], axis=0) > 0)
        cols = [f"x{i}" for i in self.used_]
        frame = pd.DataFrame(X[m][:, self.used_], columns=cols)
        frame["_time"], frame["_event"] = yy["time"], yy["event"].astype(int)
        strata = np.where(d[m] > 0, d[m], 0)  # every target row in one stratum, 0
        frame["_site"] = strata
        cph = CoxPHFitter(penalizer=self.penalizer).fit(frame, "_time", "_event", strata=["_site"])
        used_coef = cph.params_.loc[cols].to_numpy(float)
        coef = np.zeros(X.shape[1])
        coef[self.used_] = used_coef
        # lifelines' baselines are at the mean covariates: move them to x = 0
        H = cph.baseline_cumulative_hazard_ * float(np.exp(-cph._norm_mean.loc[cols].to_numpy(float) @ used_coef))
        times = H.index.to_numpy(float)
        n_events_t = int(y["event"][lab_t].sum())
        self.strata_ = sorted(int(c) for c in H.columns)
        if n_events_t >= self.min_events and 0 in H.columns:
            H0, self.baseline_from_ = H[0].to_numpy(float), "target"
        else:
            rows = {int(k): int((strata == k).sum()) for k in self.strata_ if k != 0}
            H0 = sum(H[k].to_numpy(float) * n for k, n in rows.items()) / sum(rows.values())
            self.baseline_from_ = "sources"
        self.lifelines_ = cph
        self.est_ = _ProportionalHazards(coef, times, np.exp(-H0))

    def linear_form(self) -> dict:
        return {"coef": self.est_.coef_.tolist(), "times": self.est_.unique_times_.tolist(),
                "baseline_survival": self.est_.baseline_survival_.tolist(), "map": None}


class BoostedSurvival(_SurvivalBase):
    """Gradient-boosted Cox model (regression trees, scikit-survival) on ``rows``."""

    def __init__(self, rows="source", n_estimators=100, learning_rate=0.1, max_depth=2, subsample=0.8,
                 random_state=None):
        self.rows, self.n_estimators, self.learning_rate = rows, n_estimators, learning_rate
        self.max_depth, self.subsample, self.random_state = max_depth, subsample, random_state

    def _fit(self, X, y, d, src, lab_t):
        from sksurv.ensemble import GradientBoostingSurvivalAnalysis

        m = self._rows(self.rows, src, lab_t)
        self.est_ = GradientBoostingSurvivalAnalysis(
            n_estimators=self.n_estimators, learning_rate=self.learning_rate, max_depth=self.max_depth,
            subsample=self.subsample, random_state=self.random_state).fit(X[m], self._clean(y[m]))


class ImportanceWeightedCox(_SurvivalBase):
    """Cox model on source rows weighted by p_t(x)/p_s(x), plus the labelled target rows.

    The weights are those of :class:`~healthtransfer.methods.instance.DomainClassifierIW`
    (calibrated domain classifier, clipped, mean 1). scikit-survival's Newton Cox takes no
    weights, so the weighted partial likelihood is maximised by component-wise boosting with
    linear base learners (early stopping at ``n_estimators`` is the penalty).
    """

    family = "instance"
    uses_target = "both"

    def __init__(self, n_estimators=150, learning_rate=0.2, random_state=None):
        self.n_estimators, self.learning_rate, self.random_state = n_estimators, learning_rate, random_state

    def _fit(self, X, y, d, src, lab_t):
        from sksurv.ensemble import ComponentwiseGradientBoostingSurvivalAnalysis

        from ._base import DomainSplit
        from .instance import DomainClassifierIW, _clip_normalise, effective_sample_size

        Xt = X[~src]
        if len(Xt) >= 2:
            iw = DomainClassifierIW(random_state=self.random_state)
            split = DomainSplit(Xs=X[src], ys=np.zeros(src.sum(), int), ds=d[src], Xt=Xt, Xtl=X[lab_t],
                                ytl=np.zeros(lab_t.sum(), int), n_classes=2)
            w = _clip_normalise(iw._source_weights(split), iw.clip_quantile, iw.max_weight)
        else:
            w = np.ones(int(src.sum()))
        self.weights_ = w
        self.ess_fraction_ = effective_sample_size(w) / max(len(w), 1)
        m = src | lab_t
        sw = np.ones(len(X))
        sw[src] = w
        self.est_ = ComponentwiseGradientBoostingSurvivalAnalysis(
            loss="coxph", n_estimators=self.n_estimators, learning_rate=self.learning_rate,
            random_state=self.random_state).fit(X[m], self._clean(y[m]), sample_weight=sw[m])

    def linear_form(self) -> dict:
        coef = np.asarray(self.est_.coef_, float)
        base = self.est_._get_baseline_model()
        # coef_[0] is the intercept of the component-wise ensemble: it cancels in the Cox model
        return {"coef": coef[1:].tolist(), "intercept": float(coef[0]), "times": base.unique_times_.tolist(),
                "baseline_survival": base.baseline_survival_.y.tolist(), "map": None}


class MappedCox(_SurvivalBase):
    """A feature-family map (``"coral"`` or ``"domain_std"``) in front of penalised Cox.

    The maps are the classification methods' own (:class:`~healthtransfer.methods.feature.CORAL`,
    :class:`~healthtransfer.methods.feature.DomainStandardization`), learned from source rows and
    all target rows (labels unused); Cox is fitted on the mapped source + labelled target rows.
    """

    family = "feature"
    uses_target = "both"

    def __init__(self, mapping="coral", alpha=1.0, random_state=None):
        self.mapping, self.alpha, self.random_state = mapping, alpha, random_state

    def _fit(self, X, y, d, src, lab_t):
        from ._base import DomainSplit
        from .feature import CORAL, DomainStandardization

        if self.mapping not in ("coral", "domain_std"):
            raise ValueError(f"mapping must be 'coral' or 'domain_std', got {self.mapping!r}")
        self.map_ = CORAL() if self.mapping == "coral" else DomainStandardization()
        split = DomainSplit(Xs=X[src], ys=np.zeros(src.sum(), int), ds=d[src], Xt=X[~src], Xtl=X[lab_t],
                            ytl=np.zeros(lab_t.sum(), int), n_classes=2, ws=None)
        self.map_._fit_maps(split)
        Z = np.vstack([self.map_._map_rows(X[src], d[src]), self.map_._map(X[lab_t], "target", -1)])
        yy = np.r_[y[src], y[lab_t]]
        self.est_ = _cox(self.alpha).fit(Z, self._clean(yy))

    def _features(self, X, sample_domain=None):
        X = np.asarray(X, float)
        d = -np.ones(len(X), int) if sample_domain is None else np.asarray(sample_domain, int)
        return self.map_._map_rows(X, d)


class _OnSource(_SurvivalBase):
    """Model-family methods: a source Cox model, then a refit on the labelled target rows."""

    family = "model"
    uses_target = "labelled"

    def _source_lp(self, X):
        return X @ self.source_.est_.coef_

    def _fit(self, X, y, d, src, lab_t):
        self.source_ = CoxSurvival(rows="source", alpha=self.alpha).fit(X, y, sample_domain=d)
        self.est_, self.refit_, self.slope_, self.hazard_scale_ = self.source_.est_, "none", 1.0, 1.0
        n_events = int(y["event"][lab_t].sum())
        if n_events == 0:
            return  # nothing to refit on: the source model as it is
        yt = self._clean(y[lab_t])
        if n_events < self.min_events:
            # too few events for a slope (with 4 events it can even flip sign) or a new baseline
            # curve (a Breslow curve from 4 events is flat after the last one): keep the source
            # model and rescale its cumulative baseline hazard, S_t(t|x) = S_s(t|x) ** k
            self._fit_scale(X[lab_t], yt)
            return
        self.refit_ = "full"  # _refit may fall back to "scale"
        self._refit(X[lab_t], yt)

    def _fit_scale(self, X, y):
        """k = (observed + m) / (expected + m) events (expected: the sum of each row's source
        cumulative hazard at its own follow-up time; m = ``prior_events`` pseudo-events at the
        source's ratio of 1): the hazard ratio of the target to the source model, i.e.
        calibration in the large of the survival curves, shrunk toward the source so that a
        handful of events cannot swing it (the unshrunk ratio of 4 events doubled O/E on eICU)."""
        S = np.array([self.source_.predict_survival(X[i:i + 1], [y["time"][i]])[0, 0] for i in range(len(X))])
        expected = float(np.sum(-np.log(np.clip(S, 1e-12, 1.0))))
        m = float(getattr(self, "prior_events", 0.0))
        self.hazard_scale_ = (float(y["event"].sum()) + m) / (expected + m) if expected + m > 0 else 1.0
        self.est_, self.refit_ = self.source_.est_, "scale"

    def predict(self, X, sample_domain=None):
        if self.refit_ == "scale":
            return self._source_lp(np.asarray(X, float))
        return super().predict(X, sample_domain)

    def predict_survival(self, X, times, sample_domain=None):
        if self.refit_ != "scale":
            return super().predict_survival(X, times, sample_domain)
        return self.source_.predict_survival(X, times) ** self.hazard_scale_

    def _features(self, X, sample_domain=None):
        X = np.asarray(X, float)
        return X if self.refit_ == "none" else self._target_features(X)

    def linear_form(self) -> dict:
        if self.refit_ == "none":
            return self.source_.linear_form()
        if self.refit_ == "scale":
            base = self.source_.linear_form()
            return {**base, "baseline_survival": (np.asarray(base["baseline_survival"]) ** self.hazard_scale_).tolist()}
        return self._full_form()


class _ProportionalHazards:
    """A fitted proportional-hazards model held as numbers, with the two methods the survival
    base class reads: ``predict`` (X @ coef) and ``predict_survival_function`` on its own
    ``unique_times_`` (S(t | x) = S0(t) ** exp(X @ coef))."""

    def __init__(self, coef, times, baseline_survival):
        self.coef_ = np.asarray(coef, float)
        self.unique_times_ = np.asarray(times, float)
        self.baseline_survival_ = np.asarray(baseline_survival, float)

    def predict(self, X):
        return np.asarray(X, float) @ self.coef_

    def predict_survival_function(self, X, return_array=True):
        return self.baseline_survival_[None, :] ** np.exp(self.predict(X))[:, None]


class RecalibratedCox(_SurvivalBase):
    """Source Cox model recalibrated at the target, shrunk toward the source by the number of
    target events.

    The full refit is the standard one (how a published score such as QRISK is moved to a new
    population): the calibration slope ``b`` (Cox on the source linear predictor ``lp`` alone,
    scikit-survival) and the target's Breslow cumulative baseline hazard ``H_t`` given ``b lp``.
    With few events both are noise (4 events can flip the slope's sign; a Breslow curve from 4
    events is flat after the last one), so each is pulled toward the source model with a prior
    worth ``prior_events`` pseudo-events: with ``w = events / (events + prior_events)``,

        slope = 1 + w (b - 1),    H0(t) = (1 - w) H_s'(t) + w H_t'(t),    H(t | x) = H0(t) exp(slope lp)

    where ``H_s'`` is the source baseline re-expressed for the new slope so that at every time
    the mean risk over the target rows (features only) is the source model's, and ``H_t'`` the
    target's Breslow baseline (fitted at ``b``) re-expressed the same way so that it keeps the
    full refit's mean risk: the blend then interpolates calibration in the large between the
    source and the refit. 4 events move the source model a little (w = 0.29 with the default 10) and hundreds give the full refit. A slope estimated below 0 (the source ranking reversed) counts as 0.
    """

    family = "model"
    uses_target = "labelled"

    def __init__(self, alpha=1.0, prior_events=10.0, random_state=None):
        self.alpha, self.prior_events, self.random_state = alpha, prior_events, random_state

    def _fit(self, X, y, d, src, lab_t):
        from sksurv.linear_model.coxph import BreslowEstimator

        if not self.prior_events >= 0:
            raise ValueError(f"prior_events must be >= 0, got {self.prior_events!r}")
        self.source_ = CoxSurvival(rows="source", alpha=self.alpha).fit(X, y, sample_domain=d)
        s_est = self.source_.est_
        n_events = int(y["event"][lab_t].sum())
        self.n_events_ = n_events
        self.weight_ = n_events / (n_events + self.prior_events) if n_events else 0.0
        self.slope_fitted_ = 1.0
        if n_events == 0:
            self.slope_ = 1.0
            self.est_ = _ProportionalHazards(s_est.coef_, s_est.unique_times_, s_est.baseline_survival_.y)
            return
        yt = self._clean(y[lab_t])
        lp_t = X[lab_t] @ s_est.coef_
        if n_events >= 2:
            self.slope_fitted_ = max(float(_cox(1e-4).fit(lp_t[:, None], yt).coef_[0]), 0.0)
        w = self.weight_
        self.slope_ = 1.0 + w * (self.slope_fitted_ - 1.0)
        # the full refit: Breslow baseline at the fitted slope (the pair that is calibrated on
        # the target labels; a baseline fitted at another slope is not)
        target = BreslowEstimator().fit(self.slope_fitted_ * lp_t, yt["event"], yt["time"])
        times = np.union1d(s_est.unique_times_, target.unique_times_)
        S_s = _step(s_est.unique_times_, s_est.baseline_survival_.y, times, 1.0)
        # both baselines re-expressed for the blended slope so that at every time the mean risk
        # over the target rows (features only) is that model's own (the source model; the full
        # refit): blending them then blends the two models' calibration in the large (blended
        # as they are, a slope below 1 would shrink every prediction through exp(slope lp))
        lp_rows = X[d < 0] @ s_est.coef_
        H_s = _same_mean_risk(-np.log(np.clip(S_s, 1e-300, 1.0)), lp_rows, self.slope_ * lp_rows)
        H_t = _same_mean_risk(_step(target.cum_baseline_hazard_.x, target.cum_baseline_hazard_.y, times, 0.0),
                              self.slope_fitted_ * lp_rows, self.slope_ * lp_rows)
        H0 = (1 - w) * H_s + w * H_t
        self.est_ = _ProportionalHazards(self.slope_ * s_est.coef_, times, np.exp(-H0))

    @property
    def refit_(self) -> str:
        return "none" if self.weight_ == 0 else "shrunk"

    def linear_form(self) -> dict:
        return {"coef": self.est_.coef_.tolist(), "times": self.est_.unique_times_.tolist(),
                "baseline_survival": self.est_.baseline_survival_.tolist(), "map": None}


def _same_mean_risk(H, lp_from, lp_to, iters=60) -> np.ndarray:
    """Per time, the baseline ``H'`` with mean(1 - exp(-H' e^lp_to)) = mean(1 - exp(-H e^lp_from))
    over the same rows (bisection on log H', all times at once): the model (H, lp_from)
    re-expressed for the linear predictors ``lp_to`` with the same mean risk at every time."""
    H = np.asarray(H, float)
    want = np.mean(-np.expm1(-H[:, None] * np.exp(lp_from)[None, :]), axis=1)
    lo, hi = np.full(len(H), -40.0), np.full(len(H), 15.0)
    e = np.exp(lp_to)[None, :]
    for _ in range(iters):
        mid = (lo + hi) / 2
        got = np.mean(-np.expm1(-np.exp(mid)[:, None] * e), axis=1)
        lo, hi = np.where(got < want, mid, lo), np.where(got < want, hi, mid)
    return np.where(H > 0, np.exp((lo + hi) / 2), 0.0)


def _step(x, y, at, before):
    """A right-continuous step function (values ``y`` from each ``x`` on) at ``at``."""
    i = np.searchsorted(np.asarray(x, float), np.asarray(at, float), side="right") - 1
    return np.where(i >= 0, np.asarray(y, float)[np.clip(i, 0, None)], before)


class RevisedCox(_OnSource):
    """Offset / fine-tune: target Cox on [source linear predictor, X], the predictor's
    coefficient unpenalised and every other coefficient shrunk hard towards 0 (``shrinkage``),
    so the target moves the source model only as far as its labels justify."""

    def __init__(self, alpha=1.0, shrinkage=50.0, min_events=10, prior_events=10.0, random_state=None):
        self.alpha, self.shrinkage, self.min_events, self.random_state = alpha, shrinkage, min_events, random_state
        self.prior_events = prior_events

    def _target_features(self, X):
        return np.column_stack([self._source_lp(X), X])

    def _refit(self, X, y):
        Z = self._target_features(X)
        self.est_ = _cox(np.r_[1e-4, np.full(Z.shape[1] - 1, self.shrinkage)]).fit(Z, y)

    def _full_form(self) -> dict:
        c = self.est_.coef_
        coef = c[0] * self.source_.est_.coef_ + c[1:]
        return {"coef": coef.tolist(), "times": self.est_.unique_times_.tolist(),
                "baseline_survival": self.est_.baseline_survival_.y.tolist(), "map": None}


class ReferenceCox(_SurvivalBase):
    """Cox model on an existing clinical score (the last column of ``X``, e.g. logit of APACHE
    IV's predicted mortality): fitted on the labelled target rows when they hold at least
    ``min_events`` events, else on the source rows. Rows without the score get its median."""

    family = "model"
    uses_target = "both"

    def __init__(self, min_events=5, random_state=None):
        self.min_events, self.random_state = min_events, random_state

    def _features(self, X, sample_domain=None):
        r = np.asarray(X, float)[:, -1]
        return np.where(np.isnan(r), self.median_, r)[:, None]

    def _fit(self, X, y, d, src, lab_t):
        r = X[:, -1]
        on_target = y["event"][lab_t & ~np.isnan(r)].sum() >= self.min_events
        self.fitted_on_ = "target" if on_target else "source"
        use = (lab_t if on_target else src) & ~np.isnan(r)
        self.median_ = float(np.nanmedian(r[use]))
        self.est_ = _cox(1e-4).fit(r[use][:, None], self._clean(y[use]))


def _spec(name, family, cls, uses_target, desc, needs_labels=False, uses_reference=False, **kw):
    return MethodSpec(name, family, partial(_factory, cls, kw), uses_target, desc, needs_labels=needs_labels,
                      multiclass=False, uses_reference=uses_reference, outcome="survival")


def _factory(cls, fixed, random_state=None, **params):
    return cls(random_state=random_state, **{**fixed, **params})


METHODS = [
    _spec("source_cox", "baseline", CoxSurvival, "none", "Penalised Cox model on the source sites.", rows="source"),
    _spec("target_cox", "baseline", CoxSurvival, "labelled", "Penalised Cox model on the labelled target rows.",
          needs_labels=True, rows="target"),
    _spec("pooled_cox", "baseline", CoxSurvival, "labelled", "Penalised Cox model on source + labelled target rows.",
          needs_labels=True, rows="pooled"),
    _spec("stratified_cox", "baseline", StratifiedCox, "labelled",
          "Site-stratified Cox model (lifelines): shared coefficients, a baseline hazard per site, on source + "
          "labelled target rows.", needs_labels=True),
    _spec("source_gbsurv", "baseline", BoostedSurvival, "none", "Gradient-boosted Cox model on the source sites.",
          rows="source"),
    _spec("target_gbsurv", "baseline", BoostedSurvival, "labelled",
          "Gradient-boosted Cox model on the labelled target rows.", needs_labels=True, rows="target"),
    _spec("pooled_gbsurv", "baseline", BoostedSurvival, "labelled",
          "Gradient-boosted Cox model on source + labelled target rows.", needs_labels=True, rows="pooled"),
    _spec("iw_cox", "instance", ImportanceWeightedCox, "both",
          "Cox model on importance-weighted source rows (domain classifier) plus labelled target rows."),
    _spec("coral_cox", "feature", MappedCox, "both", "CORAL-aligned features, then penalised Cox.", mapping="coral"),
    _spec("domain_std_cox", "feature", MappedCox, "both", "Per-domain standardised features, then penalised Cox.",
          mapping="domain_std"),
    _spec("recalibrated_cox", "model", RecalibratedCox, "labelled",
          "Source Cox model with slope and baseline survival refitted at the target, shrunk toward the source "
          "by the number of target events.", needs_labels=True),
    _spec("revised_cox", "model", RevisedCox, "labelled",
          "Source linear predictor as a covariate plus a shrunken target refit (offset / fine-tune).",
          needs_labels=True),
    _spec("reference_cox", "model", ReferenceCox, "both",
          "Cox model on the study's reference score (e.g. APACHE IV), refitted at the target when it can be.",
          uses_reference=True),
]
