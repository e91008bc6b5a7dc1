"""Label-shift estimators, written once: the target class prior from a source model's posteriors.

Used by the diagnostics (:func:`healthtransfer.shift.estimate_label_shift`) and by the method
(:class:`healthtransfer.methods.instance.LabelShiftEM`), so the prior a report shows is the prior
the method corrects with.

- :func:`em_prior` - the maximum-likelihood prior of Saerens, Latinne & Decaestecker (2002)
  (EM / MLLS); for two classes the one-dimensional likelihood equation is solved by bisection
  (EM crawls when the prior is near 0 or 1). Batched over leading axes (bootstrap draws).
- :func:`bbse_prior` - black-box shift estimation (Lipton et al. 2018) with soft predictions
  (the confusion matrix of out-of-fold probabilities) and non-negative least squares, which
  keeps the weights of a noisy confusion matrix valid where a plain solve gives negative ones.

Labelled target rows, when there are any, enter as known labels: their per-class counts join
the likelihood (EM) or the estimated class totals (BBSE). One tolerance, :data:`TOL`, for both
the bisection and the EM iterations.

Example
-------
>>> import numpy as np
>>> P = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]])  # posteriors of a model trained at 0.5/0.5
>>> prior, converged = em_prior(P, np.array([0.5, 0.5]))
>>> prior.round(2).tolist(), converged
([0.42, 0.58], True)
>>> em_prior(np.empty((0, 2)), np.array([0.5, 0.5]), labelled_counts=[1, 9])[0].round(6).tolist()
[0.1, 0.9]
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import nnls

__all__ = ["TOL", "bbse_prior", "em_prior"]

TOL = 1e-8  # on the prior: the bisection's final bracket and the EM's step


def em_prior(P, source_prior, *, labelled_counts=None, max_iter: int = 1000, tol: float = TOL,
             return_n_iter: bool = False):
    """Maximum-likelihood target prior given source-calibrated posteriors ``P`` (..., n, K).

    ``source_prior`` is the class prior the model was trained with; ``labelled_counts`` (K,)
    are the classes of labelled target rows, if any. Returns ``(prior (..., K), converged)``,
    and the number of iterations (bisection or EM steps) third with ``return_n_iter``.
    """
    prior, converged, n_iter = _em_prior(P, source_prior, labelled_counts, max_iter, tol)
    return (prior, converged, n_iter) if return_n_iter else (prior, converged)


def _em_prior(P, source_prior, labelled_counts, max_iter, tol):
    P = np.clip(np.asarray(P, float), 1e-12, None)
    ps = np.clip(np.asarray(source_prior, float), 1e-12, None)
    K = ps.shape[-1]
    counts = np.zeros(K) if labelled_counts is None else np.asarray(labelled_counts, float)
    R = P / ps  # likelihood ratios p_t(x | y) / p_s(x), up to a constant
    if K == 2:
        n_iter = max(1, math.ceil(math.log2(1 / tol)))
        return _bisect(R[..., 1], R[..., 0], counts[1], counts[0], n_iter), True, n_iter
    n = P.shape[-2] + counts.sum()
    pi = np.broadcast_to(ps, P.shape[:-2] + ps.shape).copy()
    if n == 0:
        return pi, True, 1
    for it in range(1, int(max_iter) + 1):
        W = R * pi[..., None, :]
        W /= W.sum(axis=-1, keepdims=True)
        new = (W.sum(axis=-2) + counts) / n
        if np.max(np.abs(new - pi)) < tol:
            return new, True, it
        pi = new
    return pi, False, int(max_iter)


def _bisect(a, b, n1, n0, n_iter):
    """The root in q (prior of class 1) of the log-likelihood's derivative, which decreases in q."""

    def score(q):
        with np.errstate(divide="ignore"):
            known = (n1 / q if n1 else 0.0) - (n0 / (1 - q) if n0 else 0.0)
        return ((a - b) / (q[..., None] * a + (1 - q[..., None]) * b)).sum(axis=-1) + known

    lo = np.zeros(a.shape[:-1])
    hi = np.ones(a.shape[:-1])
    at0, at1 = score(lo) <= 0, score(hi) >= 0
    for _ in range(n_iter):
        mid = (lo + hi) / 2
        up = score(mid) > 0
        lo, hi = np.where(up, mid, lo), np.where(up, hi, mid)
    q = np.where(at0, 0.0, np.where(at1, 1.0, (lo + hi) / 2))
    return np.stack([1 - q, q], axis=-1)


def bbse_prior(P_oof, y_idx, P_target, source_prior, *, labelled_counts=None) -> np.ndarray:
    """Soft BBSE: solve ``C w = mu`` with ``w >= 0`` and return the prior ``w * source_prior``.

    ``P_oof`` (n_s, K) are out-of-fold source probabilities for the source classes ``y_idx``;
    ``P_target`` (n_u, K) the model's probabilities on unlabelled target rows. NaN when the
    solve leaves nothing (all weights 0).
    """
    P_oof = np.asarray(P_oof, float)
    y_idx = np.asarray(y_idx)
    K = P_oof.shape[1]
    C = np.zeros((K, K))
    for j in range(K):  # C[i, j] = P_s(yhat = i, y = j), soft predictions
        C[:, j] = P_oof[y_idx == j].sum(axis=0) / len(y_idx)
    mu = np.asarray(P_target, float).mean(axis=0)
    w, _ = nnls(C, mu)
    prior = w * np.asarray(source_prior, float)
    s = prior.sum()
    if not s > 0:
        return np.full(K, np.nan)
    prior = prior / s
    if labelled_counts is not None:
        counts = np.asarray(labelled_counts, float)
        n_u = len(P_target)
        prior = (prior * n_u + counts) / (n_u + counts.sum())
    return prior
