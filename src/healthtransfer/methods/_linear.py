"""The logistic solvers and links the model-based methods share.

- :func:`penalised_logistic` - multinomial / binary logistic regression with a ridge toward
  prior coefficients (L-BFGS on the exact gradient);
- :func:`fit_bias_temperature` - logistic recalibration of log-probabilities;
- the links between scores and probabilities (:func:`log_proba`, ``_scores``, ``_to_proba``)
  and ``_SourceLinear``, a ridge logistic regression with its parameters exposed.

Re-exported by :mod:`healthtransfer.methods.model`.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, log_softmax, logsumexp


__all__ = ["fit_bias_temperature", "fit_offset_stacking", "log_proba", "penalised_logistic", "stacking_prior"]

_EPS = 1e-12


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


def stacking_prior(n_classes: int, n_score: int, n_free: int, n_local: int, *, score_penalty: float,
                   C: float, free_penalty: float = 0.1):
    """The prior and penalty of an offset-stacking fit (:class:`Stacking`, :class:`ReferenceStacking`)
    over the design ``[s (n_score columns), f (n_free), x (n_local)]``: the score coefficients
    start at the identity (1 for two classes) and are pulled there by ``score_penalty``, the free
    terms ``f`` start at 0 and are lightly held (``free_penalty``), the local correction on ``x``
    starts at 0 and is held strongly (``1 / C``). Returns ``(prior, penalty)``, each
    ``(rows, n_score + n_free + n_local)``.
    """
    r = 1 if n_classes == 2 else n_classes
    d = n_score + n_free + n_local
    prior = np.zeros((r, d))
    prior[:, :n_score] = 1.0 if n_classes == 2 else np.eye(n_classes)
    pen = np.zeros((r, d))
    pen[:, :n_score] = score_penalty
    pen[:, n_score:n_score + n_free] = free_penalty
    pen[:, n_score + n_free:] = 1.0 / C
    return prior, pen


def fit_offset_stacking(D, y, n_classes: int, prior, penalty, sample_weight=None):
    """Fit an offset-stacking model on the design ``D`` with the prior and penalty of
    :func:`stacking_prior` (intercept lightly held toward 0). Returns ``(W, b)``."""
    return penalised_logistic(D, y, n_classes, coef_prior=prior, coef_penalty=penalty, intercept_penalty=1e-2,
                              sample_weight=sample_weight)


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
