"""Instance-based transfer: re-weight the source rows (or the class prior) towards the target.

- :class:`DomainClassifierIW` - importance weights p_t(x)/p_s(x) from a calibrated logistic
  domain classifier (own code: we want clipping, normalisation and the effective sample size);
- :class:`KMMIW` and :class:`KLIEPIW` - kernel mean matching and KLIEP weights, computed with
  skada's ``KMMReweightAdapter`` / ``KLIEPReweightAdapter``;
- :class:`TrAdaBoost` - Dai et al. (2007) boosting for a few labelled target rows (own code,
  with the Al-Stouhi & Reddy (2011) correction; skada has no TrAdaBoost);
- :class:`LabelShiftEM` - class-prior correction by EM / MLLS (Saerens et al. 2002) or BBSE
  (Lipton et al. 2018) (own code; skada has no label-shift prior correction).

Every method trains its final classifier on the (re-weighted) source rows *plus* the labelled
target rows when there are any.

Example
-------
>>> from healthtransfer.data.synthetic import make_shifted_domains
>>> from healthtransfer.methods.instance import DomainClassifierIW
>>> d = make_shifted_domains("covariate", n_source=200, n_target=100, random_state=0)
>>> m = DomainClassifierIW().fit(d.X, d.masked_y(0), sample_domain=d.sample_domain)
>>> m.predict_proba(d.X[d.target]).shape
(100, 2)
"""

from __future__ import annotations

from functools import partial

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler

from .._label_shift import bbse_prior, em_prior
from ._base import DomainSplit, TransferClassifier, proba_full
from ._label_shift_em import LabelShiftEM
from ._rows import _base, _combine, fit_weighted
from ._skada import import_skada, skada_context, skada_domains
from ._spec import MethodSpec
from . import _memo
from .baselines import make_base_estimator

__all__ = [
    "DomainClassifierIW",
    "KMMIW",
    "KLIEPIW",
    "TrAdaBoost",
    "LabelShiftEM",
    "METHODS",
]
# the label-shift estimators, importable from here as from the diagnostics
_SHARED = (bbse_prior, em_prior)


def _clip_normalise(w, clip_quantile=None, max_weight=None):
    """Clip importance weights at a quantile and an absolute cap, then scale to mean 1."""
    w = np.asarray(w, float)
    w = np.where(np.isfinite(w), w, 0.0)
    w = np.clip(w, 0.0, None)
    if clip_quantile is not None and len(w):
        w = np.minimum(w, np.quantile(w, clip_quantile))
    if max_weight is not None and max_weight < 1:
        raise ValueError(f"max_weight is a multiple of the mean weight and must be >= 1; got {max_weight}. "
                         "Use None for no cap.")
    if max_weight is not None:
        # capping lowers the mean, and so the cap: repeat until the capped weights are within
        # max_weight times their own mean (converges geometrically)
        for _ in range(100):
            m = w.mean() if w.mean() > 0 else 1.0
            if w.max() <= max_weight * m * (1 + 1e-9):
                break
            w = np.minimum(w, max_weight * m)
    if w.sum() <= 0:
        return np.ones_like(w)
    w = w / w.mean()
    return w if max_weight is None else np.minimum(w, max_weight)  # trims the loop's 1e-9


def effective_sample_size(w) -> float:
    """Kish's effective sample size ``(sum w)^2 / sum w^2``."""
    w = np.asarray(w, float)
    s2 = np.sum(w**2)
    return float(np.sum(w) ** 2 / s2) if s2 > 0 else 0.0


class _ReweightBase(TransferClassifier):
    """Shared fit: compute source weights, then train the base learner on source rows
    (weighted) plus labelled target rows (weight ``target_weight``)."""

    family = "instance"
    uses_target = "both"

    def _source_weights(self, split: DomainSplit) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def _fit(self, split: DomainSplit) -> None:
        if split.Xt.shape[0] == 0:
            w = np.ones(len(split.ys))
        else:
            # the weights read no target label: the same for every budget and CV fold of a unit
            w = _clip_normalise(_memo.stage(self, split, "weights", lambda: self._source_weights(split)), self.clip_quantile,
                                self.max_weight)
        self.weights_ = w
        self.effective_sample_size_ = effective_sample_size(w)
        self.ess_fraction_ = self.effective_sample_size_ / max(len(w), 1)
        X, y, sw = _combine(split, w, self.target_weight)
        self.estimator_ = fit_weighted(_base(self.estimator, self.random_state), X, y, sw)

    def _predict_proba(self, X, sample_domain):
        return proba_full(self.estimator_, X, len(self.classes_))


# -- domain-classifier importance weighting ----------------------------------------------
class DomainClassifierIW(_ReweightBase):
    """Importance weighting with a calibrated logistic domain classifier.

    A logistic regression separates target rows (all of them, labelled or not) from source
    rows; with its calibrated probability p(target | x) the weight of a source row is
    ``p(t|x) / p(s|x) * n_s / n_t``, an estimate of p_t(x) / p_s(x). The weights are clipped
    at the ``clip_quantile`` quantile and at ``max_weight`` times their mean, then normalised
    to mean 1. The base learner is trained on the weighted source rows plus the labelled target
    rows (weight ``target_weight``).

    Parameters
    ----------
    estimator : classifier or None
        Base learner (needs ``sample_weight``); ``None`` = logistic regression.
    C : float
        Inverse regularisation of the domain classifier.
    clip_quantile : float or None
        Weights above this quantile of the weights are set to it.
    max_weight : float or None
        Absolute cap, as a multiple of the mean weight.
    target_weight : float
        Weight of each labelled target row in the final fit.
    random_state : int or None

    Attributes
    ----------
    weights_ : ndarray of shape (n_source,)
        Normalised source weights (mean 1).
    effective_sample_size_, ess_fraction_ : float
        Kish's effective sample size of ``weights_`` and its fraction of n_source.

    Example
    -------
    >>> from healthtransfer.data.synthetic import make_shifted_domains
    >>> d = make_shifted_domains("covariate", n_source=200, n_target=100, random_state=0)
    >>> m = DomainClassifierIW().fit(d.X, d.masked_y(0), sample_domain=d.sample_domain)
    >>> 0 < m.ess_fraction_ <= 1
    True
    """

    def __init__(
        self,
        estimator=None,
        C=1.0,
        clip_quantile=0.98,
        max_weight=20.0,
        target_weight=1.0,
        random_state=None,
    ):
        self.estimator = estimator
        self.C = C
        self.clip_quantile = clip_quantile
        self.max_weight = max_weight
        self.target_weight = target_weight
        self.random_state = random_state

    def _source_weights(self, split):
        Xs, Xt = split.Xs, split.Xt
        Z = np.vstack([Xs, Xt])
        dom = np.r_[np.zeros(len(Xs), int), np.ones(len(Xt), int)]
        scaler = StandardScaler().fit(Z)
        Z = scaler.transform(Z)
        clf = LogisticRegression(C=self.C, max_iter=2000)
        n_min = min(len(Xs), len(Xt))
        # Calibration: scikit-learn's CalibratedClassifierCV(method="sigmoid", ensemble=True)
        # written out: per fold, a logistic model and Platt scaling (with Platt's smoothed
        # targets) of its held-out decision values; the probability is the folds' average. The
        # same weights (within 0.2%: the solver's tolerance), without its bookkeeping, which cost 3x the fits on heart-sized data
        # (2.7x skada's uncalibrated discriminator). A cheaper scheme (3 folds, one Platt map
        # on pooled out-of-fold values) lost 0.016 pair-averaged AUROC on heart-shift.
        # Each fold's fit starts from the previous fold's solution (warm start: same optimum,
        # fewer iterations). Kept per fold: (coef, intercept, Platt a, Platt b).
        self.folds_ = []
        if n_min >= 6:
            clf.set_params(warm_start=True)
            for tr, te in StratifiedKFold(min(5, n_min // 2 + 1)).split(Z, dom):
                clf.fit(Z[tr], dom[tr])
                w, c = clf.coef_[0].copy(), float(clf.intercept_[0])
                self.folds_.append((w, c, *_platt(Z[te] @ w + c, dom[te])))
        else:
            clf.fit(Z, dom)
            self.folds_.append((clf.coef_[0].copy(), float(clf.intercept_[0]), 1.0, 0.0))
        self.domain_scaler_ = scaler
        pt = np.zeros(len(Xs))
        for w, c, a, b in self.folds_:
            pt += 1.0 / (1.0 + np.exp(-(a * (Z[: len(Xs)] @ w + c) + b))) / len(self.folds_)
        pt = np.clip(pt, 1e-6, 1 - 1e-6)
        return pt / (1 - pt) * len(Xs) / len(Xt)


def _platt(z, y, n_iter=100):
    """Platt scaling: ``(a, b)`` maximising the likelihood of Platt's smoothed targets
    (``(n+ + 1) / (n+ + 2)`` for positives, ``1 / (n- + 2)`` for negatives, as scikit-learn's
    sigmoid calibration) under ``sigmoid(a*z + b)``; Newton's method on two parameters."""
    y = np.asarray(y)
    n_pos = float(np.sum(y == 1))
    T = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (len(y) - n_pos + 2))
    X = np.column_stack([z, np.ones_like(z)])
    theta = np.zeros(2)
    for _ in range(n_iter):
        p = 1.0 / (1.0 + np.exp(-(X @ theta)))
        H = (X * (p * (1 - p))[:, None]).T @ X + 1e-9 * np.eye(2)
        step = np.linalg.solve(H, X.T @ (p - T))
        theta -= step
        if np.abs(step).max() < 1e-10:
            break
    return float(theta[0]), float(theta[1])


def _median_sq_dist(Z, random_state=None, n=500):
    """Median squared distance between rows (on at most ``n`` rows): the kernel-width
    heuristic, so that ``gamma`` is given in units of 1 / median distance."""
    rng = np.random.default_rng(random_state if isinstance(random_state, int) else 0)
    if len(Z) > n:
        Z = Z[rng.choice(len(Z), n, replace=False)]
    sq = np.sum(Z**2, axis=1)
    D = sq[:, None] + sq[None, :] - 2 * Z @ Z.T
    iu = np.triu_indices(len(Z), 1)
    med = np.median(D[iu]) if len(iu[0]) else 1.0
    return float(med) if med > 1e-12 else 1.0


# -- KMM and KLIEP via skada --------------------------------------------------------------
class KMMIW(_ReweightBase):
    """Kernel mean matching weights (Huang et al. 2007) via skada's ``KMMReweightAdapter``.

    Features are standardised on the pooled source + target rows; the RBF width ``gamma`` is
    given in units of 1 / (median squared distance between rows). The source weights match
    the target kernel mean; the base learner is trained on the weighted source rows plus
    labelled target rows. skada's fast Frank-Wolfe solver ignores the weight bound B, so the
    weights are bounded afterwards by ``clip_quantile`` / ``max_weight`` (its raw solutions are
    sparse: without clipping a handful of rows carry the fit). Builds an n_source x n_source
    kernel: keep to a few thousand rows.

    Parameters
    ----------
    estimator : classifier or None
        Base learner; ``None`` = logistic regression.
    gamma : float
        RBF bandwidth, in units of 1 / median squared distance (larger = narrower kernel).
    qp_max_iter : int
        Iterations of skada's Frank-Wolfe QP solver.
    clip_quantile, max_weight, target_weight, random_state
        As in :class:`DomainClassifierIW`.

    Example
    -------
    >>> from healthtransfer.data.synthetic import make_shifted_domains
    >>> d = make_shifted_domains("covariate", n_source=150, n_target=80, random_state=0)
    >>> m = KMMIW().fit(d.X, d.masked_y(0), sample_domain=d.sample_domain)
    >>> m.weights_.shape
    (150,)
    """

    def __init__(
        self,
        estimator=None,
        gamma=10.0,
        qp_max_iter=1000,
        clip_quantile=0.95,
        max_weight=10.0,
        target_weight=1.0,
        random_state=None,
    ):
        self.estimator = estimator
        self.gamma = gamma
        self.qp_max_iter = qp_max_iter
        self.clip_quantile = clip_quantile
        self.max_weight = max_weight
        self.target_weight = target_weight
        self.random_state = random_state

    def _source_weights(self, split):
        skada = import_skada()
        Z = StandardScaler().fit_transform(np.vstack([split.Xs, split.Xt]))
        dom = skada_domains(len(split.Xs), len(split.Xt))
        gamma = float(self.gamma) / _median_sq_dist(Z, self.random_state)
        self.gamma_ = gamma
        adapter = skada.KMMReweightAdapter(gamma=gamma,
                                           max_iter=self.qp_max_iter)
        with skada_context():
            adapter.fit(Z, sample_domain=dom)
            w = adapter.compute_weights(Z, sample_domain=dom)
        return w[: len(split.Xs)]


class KLIEPIW(_ReweightBase):
    """KLIEP importance weights (Sugiyama et al. 2007) via skada's ``KLIEPReweightAdapter``.

    Features are standardised on the pooled rows; the RBF bandwidth is chosen by likelihood
    cross-validation over ``gammas`` (multiples of 1 / n_features). Kernel centres are
    ``n_centers`` target rows.

    Parameters
    ----------
    estimator : classifier or None
        Base learner; ``None`` = logistic regression.
    gammas : sequence of float
        Candidate bandwidths, in units of 1 / n_features.
    n_centers : int
        Number of kernel centres (target rows).
    clip_quantile, max_weight, target_weight, random_state
        As in :class:`DomainClassifierIW`.

    Example
    -------
    >>> from healthtransfer.data.synthetic import make_shifted_domains
    >>> d = make_shifted_domains("covariate", n_source=150, n_target=80, random_state=0)
    >>> m = KLIEPIW(random_state=0).fit(d.X, d.masked_y(0), sample_domain=d.sample_domain)
    >>> round(float(m.weights_.mean()), 6)
    1.0
    """

    def __init__(
        self,
        estimator=None,
        gammas=(0.1, 0.3, 1.0, 3.0),
        n_centers=100,
        clip_quantile=0.99,
        max_weight=20.0,
        target_weight=1.0,
        random_state=None,
    ):
        self.estimator = estimator
        self.gammas = gammas
        self.n_centers = n_centers
        self.clip_quantile = clip_quantile
        self.max_weight = max_weight
        self.target_weight = target_weight
        self.random_state = random_state

    def _source_weights(self, split):
        skada = import_skada()
        Z = StandardScaler().fit_transform(np.vstack([split.Xs, split.Xt]))
        dom = skada_domains(len(split.Xs), len(split.Xt))
        gammas = [float(g) / Z.shape[1] for g in np.atleast_1d(self.gammas)]
        cv = min(5, len(split.Xt))
        adapter = skada.KLIEPReweightAdapter(
            gamma=gammas if len(gammas) > 1 and cv >= 2 else gammas[0],
            cv=max(cv, 2),
            n_centers=self.n_centers,
            random_state=self.random_state,
        )
        import warnings

        with skada_context(), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Maximum iteration reached"
            adapter.fit(Z, sample_domain=dom)
            w = adapter.compute_weights(Z, sample_domain=dom)
        self.best_gamma_ = float(adapter.best_gamma_)
        return w[: len(split.Xs)]


# -- TrAdaBoost -----------------------------------------------------------------------------
class TrAdaBoost(TransferClassifier):
    """TrAdaBoost (Dai, Yang, Xue & Yu, 2007) for a few labelled target rows.

    Boosting over source + labelled target rows: a source row the current learner gets wrong
    is down-weighted (it looks unlike the target concept), a target row it gets wrong is
    up-weighted as in AdaBoost. ``dynamic=True`` adds the correction factor of Al-Stouhi &
    Reddy (2011) that keeps the source weights from collapsing too early. The prediction
    averages the probabilities of the second half of the learners, weighted by
    ``log(1 / beta_t)``. Multi-class errors are 0/1 misclassification indicators.
    Without labelled target rows (or with a single target class) it is source-only.

    Parameters
    ----------
    estimator : classifier or None
        Weak learner (needs ``sample_weight``); ``None`` = logistic regression.
    n_estimators : int
        Boosting rounds.
    dynamic : bool
        Use the dynamic-TrAdaBoost correction.
    random_state : int or None

    Example
    -------
    >>> from healthtransfer.data.synthetic import make_shifted_domains
    >>> d = make_shifted_domains("concept", n_source=200, n_target=100, random_state=0)
    >>> m = TrAdaBoost(n_estimators=5).fit(d.X, d.masked_y(20), sample_domain=d.sample_domain)
    >>> m.predict(d.X[d.target]).shape
    (100,)
    """

    family = "instance"
    uses_target = "labelled"

    def __init__(self, estimator=None, n_estimators=20, dynamic=True, random_state=None):
        self.estimator = estimator
        self.n_estimators = n_estimators
        self.dynamic = dynamic
        self.random_state = random_state

    def _fit(self, split):
        if len(np.unique(split.ytl)) < 2:
            w = split.ws
            self.estimators_ = [_base(self.estimator, self.random_state).fit(
                split.Xs, split.ys, sample_weight=w)]
            self.estimator_weights_ = np.ones(1)
            return
        X, y = split.X_labelled, split.y_labelled
        ns, nt = len(split.ys), len(split.ytl)
        w = np.ones(ns + nt)
        if split.ws is not None:
            w[:ns] = split.ws
            w[ns:] = split.wtl
        w[:ns] /= max(w[:ns].sum(), 1e-12) / ns
        w[ns:] /= max(w[ns:].sum(), 1e-12) / nt
        n_rounds = max(1, int(self.n_estimators))
        beta = 1.0 / (1.0 + np.sqrt(2.0 * np.log(max(ns, 2)) / n_rounds))
        learners, alphas = [], []
        for _ in range(n_rounds):
            p = w / w.sum()
            h = _base(self.estimator, self.random_state).fit(X, y, sample_weight=p * len(p))
            miss = (h.predict(X) != y).astype(float)
            eps = np.sum(p[ns:] * miss[ns:]) / np.sum(p[ns:])
            eps = float(np.clip(eps, 1e-3, 0.499))
            beta_t = eps / (1.0 - eps)
            learners.append(h)
            alphas.append(np.log(1.0 / beta_t))
            correction = 2.0 * (1.0 - eps) if self.dynamic else 1.0
            w[:ns] *= correction * beta ** miss[:ns]
            w[ns:] *= beta_t ** (-miss[ns:])
            w /= w.sum() / len(w)
        half = len(learners) // 2
        self.estimators_ = learners[half:]
        self.estimator_weights_ = np.asarray(alphas[half:])

    def _predict_proba(self, X, sample_domain):
        nc = len(self.classes_)
        a = self.estimator_weights_ / self.estimator_weights_.sum()
        return sum(ai * proba_full(h, X, nc) for ai, h in zip(a, self.estimators_))


# -- label shift --------------------------------------------------------------------------


# -- registry -----------------------------------------------------------------------------
def _mk(cls, kind, random_state=None, **params):
    return cls(estimator=make_base_estimator(kind, random_state), random_state=random_state,
               **params)


_IW_GRID = ({"clip_quantile": 0.95}, {"clip_quantile": 0.99}, {"C": 0.1})

METHODS = [
    MethodSpec("iw_domain_lr", "instance", partial(_mk, DomainClassifierIW, "lr"), "both",
               "Importance weighting by a calibrated logistic domain classifier; logistic "
               "regression on weighted source + labelled target rows.",
               grid=_IW_GRID, skada_counterpart="DiscriminatorReweightAdapter"),
    MethodSpec("iw_domain_gbm", "instance", partial(_mk, DomainClassifierIW, "gbm"), "both",
               "Importance weighting by a calibrated logistic domain classifier; gradient "
               "boosting on weighted source + labelled target rows.",
               grid=_IW_GRID, skada_counterpart="DiscriminatorReweightAdapter"),
    MethodSpec("kmm_lr", "instance", partial(_mk, KMMIW, "lr"), "both",
               "Kernel mean matching weights (skada); logistic regression on weighted source "
               "+ labelled target rows.", max_rows=5000,
               grid=({"gamma": 3.0}, {"gamma": 10.0}, {"gamma": 30.0}),
               skada_counterpart="KMMReweightAdapter"),
    MethodSpec("kliep_lr", "instance", partial(_mk, KLIEPIW, "lr"), "both",
               "KLIEP density-ratio weights (skada); logistic regression on weighted source "
               "+ labelled target rows.", max_rows=20000,
               skada_counterpart="KLIEPReweightAdapter"),
    MethodSpec("tradaboost", "instance", partial(_mk, TrAdaBoost, "lr"), "labelled",
               "TrAdaBoost (dynamic) with logistic regression learners over source + labelled "
               "target rows; source-only without target labels.", needs_labels=True,
               grid=({"n_estimators": 10}, {"n_estimators": 20}, {"n_estimators": 40})),
    MethodSpec("label_shift_em_lr", "instance", partial(_mk, LabelShiftEM, "lr"), "both",
               "Logistic regression with the class prior re-estimated on the target by EM "
               "(Saerens et al. 2002).", grid=({"method": "em"}, {"method": "bbse"})),
    MethodSpec("label_shift_em_gbm", "instance", partial(_mk, LabelShiftEM, "gbm"), "both",
               "Gradient boosting with the class prior re-estimated on the target by EM "
               "(Saerens et al. 2002).", grid=({"method": "em"}, {"method": "bbse"})),
]
