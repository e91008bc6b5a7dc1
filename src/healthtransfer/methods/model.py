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
from scipy.optimize import minimize
from scipy.special import expit, log_softmax, logsumexp
from sklearn.impute import SimpleImputer
from sklearn.tree import DecisionTreeRegressor

from ._base import DomainSplit, TransferClassifier, proba_full
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

_EPS = 1e-12


# ----------------------------------------------------------------------------------------
# shared numerical helpers
# ----------------------------------------------------------------------------------------
def _weights(w, n):
    return np.ones(n) if w is None else np.asarray(w, dtype=float)


def _enough_for_slope(y: np.ndarray, n_classes: int, min_n: int = 20, min_per_class: int = 5):
    """Intercept+slope only with >= ``min_n`` rows and >= ``min_per_class`` in every class."""
    if len(y) < min_n:
        return False
    counts = np.bincount(y, minlength=n_classes)
    return bool(counts.min() >= min_per_class)


def log_proba(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, None)
    return np.log(p / p.sum(axis=1, keepdims=True))


def _scores(logp: np.ndarray) -> np.ndarray:
    """Score block used as a feature/offset: the logit for 2 classes, centred log-probas else."""
    if logp.shape[1] == 2:
        return (logp[:, 1] - logp[:, 0])[:, None]
    return logp - logp.mean(axis=1, keepdims=True)


def _to_proba(z: np.ndarray) -> np.ndarray:
    """Linear predictor -> probabilities; one column = binary logit."""
    if z.shape[1] == 1:
        p1 = expit(z[:, 0])
        return np.column_stack([1 - p1, p1])
    return np.exp(log_softmax(z, axis=1))


def penalised_logistic(
    Z,
    y,
    n_classes: int,
    *,
    coef_prior=None,
    intercept_prior=None,
    coef_penalty=1.0,
    intercept_penalty=1e-4,
    sample_weight=None,
    offset=None,
):
    """Logistic regression with a Gaussian prior on the parameters.

    Minimises ``sum_i w_i nll_i + 0.5 * sum(coef_penalty * (W - W0)^2)
    + 0.5 * intercept_penalty * (b - b0)^2`` with L-BFGS. Binary uses one logit row
    (``W`` of shape ``(1, p)``); multi-class a softmax over ``n_classes`` rows. ``offset``
    (``(n, rows)``) is added to the linear predictor. ``coef_penalty`` broadcasts against
    ``W`` (a scalar, a ``(p,)`` vector per feature or a full ``(rows, p)`` array); ``1/C`` of
    scikit-learn's ridge logistic regression when the prior is 0.

    Returns ``(W, b)``; the linear predictor is ``Z @ W.T + b (+ offset)``.

    Example
    -------
    >>> import numpy as np
    >>> Z = np.array([[0.], [1.], [2.], [3.]]); y = np.array([0, 0, 1, 1])
    >>> W, b = penalised_logistic(Z, y, 2, coef_penalty=1.0)
    >>> W.shape, bool(W[0, 0] > 0)
    ((1, 1), True)
    """
    Z = np.asarray(Z, dtype=float)
    n, p = Z.shape
    y = np.asarray(y, dtype=int)
    r = 1 if n_classes == 2 else n_classes
    w = _weights(sample_weight, n)
    W0 = np.zeros((r, p)) if coef_prior is None else np.broadcast_to(coef_prior, (r, p)).astype(float)
    b0 = np.zeros(r) if intercept_prior is None else np.broadcast_to(intercept_prior, (r,)).astype(float)
    pw = np.broadcast_to(np.asarray(coef_penalty, dtype=float), (r, p))
    pb = np.broadcast_to(np.asarray(intercept_penalty, dtype=float), (r,))
    off = np.zeros((n, r)) if offset is None else np.asarray(offset, dtype=float).reshape(n, r)
    if r == 1:
        Y = y[:, None].astype(float)
    else:
        Y = np.zeros((n, r))
        Y[np.arange(n), y] = 1.0

    def f(theta):
        W = theta[: r * p].reshape(r, p)
        b = theta[r * p :]
        z = Z @ W.T + b + off
        if r == 1:
            nll = np.logaddexp(0, z) - Y * z
            G = expit(z) - Y
        else:
            lse = logsumexp(z, axis=1, keepdims=True)
            nll = lse - (Y * z).sum(axis=1, keepdims=True)
            G = np.exp(z - lse) - Y
        dW, db = W - W0, b - b0
        loss = float(w @ nll.sum(axis=1)) + 0.5 * float((pw * dW**2).sum() + (pb * db**2).sum())
        Gw = G * w[:, None]
        gW = Gw.T @ Z + pw * dW
        gb = Gw.sum(axis=0) + pb * db
        return loss, np.concatenate([gW.ravel(), gb])

    theta0 = np.concatenate([W0.ravel(), b0])
    res = minimize(f, theta0, jac=True, method="L-BFGS-B", options={"maxiter": 500})
    return res.x[: r * p].reshape(r, p).copy(), res.x[r * p :].copy()


def fit_bias_temperature(S, y, *, slope=True, sample_weight=None, reg=1e-2):
    """Recalibrate log-probabilities ``S`` (``(n, K)``): new logits ``beta * S + bias``.

    For two classes this is logistic recalibration ``a + b * logit`` (``b = beta``); for more,
    a temperature ``1/beta`` and a bias vector. ``slope=False`` keeps ``beta = 1`` (intercept
    only). A light ridge ``reg`` pulls toward the identity map. Returns ``(beta, bias)``.
    """
    S = np.asarray(S, dtype=float)
    n, K = S.shape
    y = np.asarray(y, dtype=int)
    w = _weights(sample_weight, n)
    Y = np.zeros((n, K))
    Y[np.arange(n), y] = 1.0

    def f(theta):
        beta = theta[0] if slope else 1.0
        bias = theta[1:]
        z = beta * S + bias
        lse = logsumexp(z, axis=1, keepdims=True)
        nll = (lse[:, 0] - (Y * z).sum(axis=1)) @ w
        G = (np.exp(z - lse) - Y) * w[:, None]
        loss = nll + 0.5 * reg * ((beta - 1.0) ** 2 + (bias**2).sum())
        gbeta = float((G * S).sum()) + reg * (beta - 1.0) if slope else 0.0
        gbias = G.sum(axis=0) + reg * bias
        return loss, np.concatenate([[gbeta], gbias])

    res = minimize(f, np.r_[1.0, np.zeros(K)], jac=True, method="L-BFGS-B",
                   options={"maxiter": 300})
    beta = float(res.x[0]) if slope else 1.0
    return beta, res.x[1:].copy()


def _standardiser(X, w=None):
    """Weighted mean/std of the columns (NaN-free input); std 0 -> 1."""
    w = _weights(w, X.shape[0])
    tot = w.sum() if w.sum() > 0 else 1.0
    mu = (w @ X) / tot
    sd = np.sqrt((w @ (X - mu) ** 2) / tot)
    sd[sd < 1e-12] = 1.0
    return mu, sd


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


def _has_two_classes(y):
    return len(np.unique(y)) >= 2


class _SourceLinear:
    """Ridge logistic regression on standardised source rows, with the parameters exposed (a
    class missing at the source simply gets a very low intercept)."""

    def __init__(self, C=1.0):
        self.C = C

    def fit(self, X, y, n_classes, w=None):
        self.mu_, self.sd_ = _standardiser(X, w)
        self.n_classes = n_classes
        self.W_, self.b_ = penalised_logistic(
            self.transform(X), y, n_classes, coef_penalty=1.0 / self.C, sample_weight=w
        )
        return self

    def transform(self, X):
        return (X - self.mu_) / self.sd_

    def linear(self, X):
        return self.transform(X) @ self.W_.T + self.b_


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
        q = 1 if K == 2 else K
        p = split.Xs.shape[1]
        r = 1 if K == 2 else K
        prior = np.zeros((r, q + p))
        prior[:, :q] = 1.0 if K == 2 else np.eye(K)
        pen = np.zeros((r, q + p))
        pen[:, :q] = self.score_penalty
        pen[:, q:] = 1.0 / self.C
        self._prior_coef = prior
        self.coef_, self.intercept_ = prior, np.zeros(r)
        if split.Xtl.shape[0] > 0:
            self.coef_, self.intercept_ = penalised_logistic(
                self._design(split.Xtl), split.ytl, K, coef_prior=prior, coef_penalty=pen,
                intercept_penalty=1e-2, sample_weight=split.wtl,
            )

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
# reference-score methods (the runner appends logit(score) as the LAST column of X)
# ----------------------------------------------------------------------------------------
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
        p = L.shape[1]
        ok = np.isfinite(r)
        self.coef_ = np.r_[1.0, 0.0, np.zeros(p)][None, :]
        self.intercept_ = np.zeros(1)
        if ok.any():
            pen = np.r_[self.score_penalty, 0.1, np.full(p, 1.0 / self.C)]
            self.coef_, self.intercept_ = penalised_logistic(
                self._design(L[ok], r[ok], is_t[ok]), y[ok], 2, coef_prior=self.coef_[0],
                coef_penalty=pen, intercept_penalty=1e-2, sample_weight=w[ok],
            )
        self.fallback_ = _LocalFallback().fit(
            Ls, split.ys, Lt, split.ytl, 2, split.ws, split.wtl, target_weight=self.target_weight
        )

    def _predict_proba(self, X, sample_domain):
        L, r = self._parts(X)
        tgt = sample_domain < 0
        z = (self._design(L, np.nan_to_num(r), tgt) @ self.coef_.T + self.intercept_)[:, 0]
        z = np.where(np.isfinite(r), z, self.fallback_.logit(L))
        return _to_proba(z[:, None])


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
