"""Whole-table two-sample tests: a domain classifier (classifier two-sample test) and MMD.

Both work on the preprocessed matrix (median imputation + missingness indicators + scaling +
one-hot), so a feature measured at one site only, or missing far more often at one site,
counts as shift. Labels are never used.

Example
-------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> Xs, Xt = rng.normal(size=(150, 3)), rng.normal(size=(150, 3)) + [1.0, 0, 0]
>>> res, _ = domain_classifier_test(Xs, Xt, n_permutations=19, random_state=0)
>>> res["auroc"] > 0.7, res["p_value"] <= 0.05
(True, True)
>>> mmd_test(Xs, Xt, n_permutations=99, random_state=0)["p_value"] <= 0.05
True
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.stats import rankdata
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from .._sampling import uniform_rows

__all__ = ["domain_classifier_test", "cv_auroc", "linear_cv_auroc", "mmd_test", "importance_ess", "WEIGHT_CLIP"]

#: importance weights p_t(x)/p_s(x) are clipped at this value before the effective sample size
WEIGHT_CLIP = 20.0
_PROB_EPS = 1e-3


def _lr() -> LogisticRegression:
    return LogisticRegression(C=1.0, solver="newton-cholesky", max_iter=100)


def _n_splits(d: np.ndarray, wanted: int = 5) -> int:
    smallest = int(min((d == 0).sum(), (d == 1).sum()))
    return max(2, min(wanted, smallest))


def cv_auroc(X: np.ndarray, d: np.ndarray, folds: list, *, return_oof: bool = False):
    """Out-of-fold AUROC of a logistic regression separating d == 1 (target) from d == 0."""
    oof = np.empty(len(d), dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for tr, te in folds:
            if len(np.unique(d[tr])) < 2:
                oof[te] = d[tr].mean()
                continue
            oof[te] = _lr().fit(X[tr], d[tr]).predict_proba(X[te])[:, 1]
    auc = float(roc_auc_score(d, oof)) if len(np.unique(d)) == 2 else np.nan
    return (auc, oof) if return_oof else auc


def _auc_columns(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AUROC of every column of ``scores`` (n, B) against 0/1 ``labels`` (n, B), ties averaged."""
    ranks = rankdata(scores, axis=0)
    n1 = labels.sum(axis=0)
    n0 = labels.shape[0] - n1
    return ((ranks * labels).sum(axis=0) - n1 * (n1 + 1) / 2) / (n1 * n0)


def linear_cv_auroc(X: np.ndarray, D: np.ndarray, folds: list) -> np.ndarray:
    """Cross-validated AUROC of a closed-form linear domain classifier for every column of
    ``D`` (n, B) at once.

    The classifier is one Newton step of L2-penalised logistic regression (penalty 1/2 |w|^2)
    started from the no-shift model: ``w = (pi (1 - pi) Xc'Xc + I)^-1 Xc'(d - mean d)`` with
    ``pi`` the overall target share (the same for every permutation). Its fold-wise "hat"
    matrix does not depend on the labels, so hundreds of permutations cost one matrix product.
    """
    D = np.asarray(D, float)
    pi = float(D[:, 0].mean())
    oof = np.empty_like(D)
    for tr, te in folds:
        mu = X[tr].mean(axis=0)
        Xtr, Xte = X[tr] - mu, X[te] - mu
        H = pi * (1 - pi) * (Xtr.T @ Xtr) + np.eye(X.shape[1])
        Dtr = D[tr] - D[tr].mean(axis=0)
        W = np.linalg.solve(H, Xtr.T @ Dtr)
        oof[te] = Xte @ W
    return _auc_columns(oof, D)


def domain_classifier_test(Xs: np.ndarray, Xt: np.ndarray, *, n_permutations: int = 100, random_state=0,
                           n_splits: int = 5, max_rows: int = 100_000) -> tuple[dict, np.ndarray]:
    """Classifier two-sample test of source rows against target rows (labels never used).

    - ``auroc``: stratified k-fold CV AUROC of logistic regression (C=1) telling target rows
      from source rows (0.5 = indistinguishable);
    - ``p_value``: permutation test (domain labels permuted, same folds) of the CV AUROC of the
      closed-form linear classifier of :func:`linear_cv_auroc` (reported as ``auroc_linear``),
      whose null distribution costs one matrix product, so ``n_permutations`` can be in the
      hundreds; the smallest attainable p is ``1 / (1 + n_permutations)``.

    Above ``max_rows`` rows per side, each side is a uniform sample of ``max_rows`` rows (the
    AUROC's standard error is then below 0.003, and the permutation matrix stays in memory);
    ``n_source_used`` / ``n_target_used`` say so.

    Returns ``(result, p_target_given_x)``: the second item holds the logistic regression's
    out-of-fold probability of "target" for every stacked row used (sources first).
    """
    rng = np.random.default_rng(random_state)
    if (keep := uniform_rows(len(Xs), max_rows, rng)) is not None:
        Xs = Xs[keep]
    if (keep := uniform_rows(len(Xt), max_rows, rng)) is not None:
        Xt = Xt[keep]
    X = np.vstack([Xs, Xt])
    d = np.r_[np.zeros(len(Xs), int), np.ones(len(Xt), int)]
    k = _n_splits(d, n_splits)
    folds = list(StratifiedKFold(k, shuffle=True, random_state=random_state).split(X, d))
    auc, oof = cv_auroc(X, d, folds, return_oof=True)
    m = int(n_permutations)
    D = np.stack([d] + [rng.permutation(d) for _ in range(m)], axis=1)
    aucs = linear_cv_auroc(X, D, folds)
    observed, null = float(aucs[0]), aucs[1:]
    p = float((1 + np.sum(null >= observed - 1e-12)) / (1 + m)) if m else np.nan
    return {
        "auroc": auc,
        "p_value": p,
        "auroc_linear": observed,
        "n_permutations": m,
        "p_value_floor": float(1 / (1 + m)) if m else np.nan,
        "null_mean": float(null.mean()) if m else np.nan,
        "null_q95": float(np.quantile(null, 0.95)) if m else np.nan,
        "n_splits": k,
        "n_source_used": int(len(Xs)),
        "n_target_used": int(len(Xt)),
        "classifier": "logistic regression (C=1) on imputed, scaled features + missingness indicators",
    }, oof


def importance_ess(p_target: np.ndarray, n_source: int, n_target: int, clip: float = WEIGHT_CLIP) -> dict:
    """Effective sample size of source importance weights w = p_t(x)/p_s(x).

    ``p_target`` is the domain classifier's probability of "target" for the source rows;
    w = P(t|x)/P(s|x) * n_s/n_t, clipped at ``clip``. ESS = (sum w)^2 / sum w^2.
    """
    p = np.clip(np.asarray(p_target, float), _PROB_EPS, 1 - _PROB_EPS)
    w = p / (1 - p) * (n_source / max(n_target, 1))
    clipped = int(np.sum(w > clip))
    w = np.minimum(w, clip)
    ess = float(w.sum() ** 2 / np.sum(w ** 2)) if np.sum(w ** 2) > 0 else 0.0
    return {"ess": ess, "ess_fraction": ess / max(n_source, 1), "n_source": int(n_source), "clip": float(clip),
            "n_clipped": clipped, "max_weight": float(w.max()) if len(w) else np.nan}


def _sqdist(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    a2 = np.einsum("ij,ij->i", A, A)
    b2 = np.einsum("ij,ij->i", B, B)
    return np.maximum(a2[:, None] + b2[None, :] - 2 * A @ B.T, 0.0)


def mmd_test(Xs: np.ndarray, Xt: np.ndarray, *, n_permutations: int = 100, max_rows: int = 1000,
             random_state=0) -> dict:
    """Gaussian-kernel MMD^2 (biased V-statistic) with a permutation p-value.

    Bandwidth by the median heuristic (median pairwise distance of the pooled rows); each side
    is subsampled to at most ``max_rows`` rows. All permutations reuse one kernel matrix.
    """
    rng = np.random.default_rng(random_state)
    if len(Xs) > max_rows:
        Xs = Xs[rng.choice(len(Xs), max_rows, replace=False)]
    if len(Xt) > max_rows:
        Xt = Xt[rng.choice(len(Xt), max_rows, replace=False)]
    Z = np.vstack([Xs, Xt]).astype(float)
    ns, nt = len(Xs), len(Xt)
    D2 = _sqdist(Z, Z)
    iu = np.triu_indices(len(Z), k=1)
    med = float(np.median(np.sqrt(D2[iu]))) if len(iu[0]) else 1.0
    sigma = med if med > 0 else 1.0
    K = np.exp(-D2 / (2 * sigma ** 2))

    def stat(a: np.ndarray) -> np.ndarray:  # a: (n, m) signed weight vectors
        return np.einsum("im,im->m", a, K @ a)

    base = np.r_[np.full(ns, 1 / ns), np.full(nt, -1 / nt)]
    observed = float(stat(base[:, None])[0])
    m = int(n_permutations)
    if m:
        A = np.stack([base[rng.permutation(len(base))] for _ in range(m)], axis=1)
        null = stat(A)
        p = float((1 + np.sum(null >= observed - 1e-12)) / (1 + m))
    else:
        null, p = np.array([]), np.nan
    return {"mmd2": observed, "p_value": p, "n_permutations": m, "bandwidth": sigma,
            "null_mean": float(null.mean()) if m else np.nan, "n_source_used": ns, "n_target_used": nt}
