"""Label shift: the target's class prior estimated from source labels and UNLABELLED target rows.

A source-trained logistic regression (regularisation chosen by cross-validated log-loss, so
its probabilities are reasonably calibrated) is applied to the target rows; the target prior
is the maximum-likelihood prior of Saerens, Latinne & Decaestecker (2002). A soft black-box
shift estimate (BBSE, Lipton et al. 2018) from out-of-fold source predictions is reported
beside it. Both estimators live in :mod:`healthtransfer._label_shift`, shared with the
label-shift method, so the diagnostics and the method estimate the same prior. The bootstrap CI resamples target rows and reruns EM on the already computed
probabilities (the source classifier is not refitted, so its own uncertainty is not in the
interval). Both assume p(x | y) is the same at both sites; under strong covariate shift the
estimate is a rough guide only.

Example
-------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> ys = (rng.random(600) < 0.3).astype(int); yt = (rng.random(600) < 0.8).astype(int)
>>> Xs = rng.normal(size=(600, 2)) + 2 * ys[:, None]; Xt = rng.normal(size=(600, 2)) + 2 * yt[:, None]
>>> res = estimate_label_shift(Xs, ys, Xt, random_state=0)
>>> bool(abs(res["target_prior"][1] - 0.8) < 0.1)
True
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from .._label_shift import bbse_prior, em_prior
from .._sampling import uniform_rows

__all__ = ["estimate_label_shift", "em_prior"]

_CS = (0.01, 0.1, 1.0, 10.0)


def _fit_source_model(Xs, ys_idx, random_state):
    """Pick C by 5-fold CV log-loss, return (fitted model, out-of-fold probabilities, C)."""
    K = int(ys_idx.max()) + 1
    k = max(2, min(5, int(np.bincount(ys_idx, minlength=K).min())))
    folds = list(StratifiedKFold(k, shuffle=True, random_state=random_state).split(Xs, ys_idx))
    best = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for C in _CS:
            oof = np.zeros((len(ys_idx), K))
            for tr, te in folds:
                m = LogisticRegression(C=C, solver="newton-cholesky", max_iter=100).fit(Xs[tr], ys_idx[tr])
                oof[np.ix_(te, m.classes_)] = m.predict_proba(Xs[te])
            ll = -np.mean(np.log(np.clip(oof[np.arange(len(ys_idx)), ys_idx], 1e-12, None)))
            if best is None or ll < best[0]:
                best = (ll, C, oof)
        model = LogisticRegression(C=best[1], solver="newton-cholesky", max_iter=100).fit(Xs, ys_idx)
    return model, best[2], best[1], best[0]


def estimate_label_shift(Xs: np.ndarray, ys, Xt: np.ndarray, *, classes=None, n_bootstrap: int = 100,
                         level: float = 0.95, random_state=0, max_rows: int = 100_000) -> dict:
    """Estimate the target class prior. ``ys`` are SOURCE labels; the target is ``Xt`` only.

    Above ``max_rows`` rows per side a uniform sample of that many is used (the bootstrap
    holds an n_bootstrap x n_target matrix; the prior's CI at 10^5 rows is already narrow).

    Returns classes, source_prior, target_prior (EM), ci_low / ci_high (bootstrap percentile),
    bbse_prior, converged, n_bootstrap, chosen C and the source out-of-fold log-loss.
    """
    ys = np.asarray(ys)
    classes = list(classes) if classes is not None else sorted(np.unique(ys).tolist())
    sampler = np.random.default_rng(random_state)
    if (keep := uniform_rows(len(Xs), max_rows, sampler)) is not None:
        Xs, ys = Xs[keep], ys[keep]
    if (keep := uniform_rows(len(Xt), max_rows, sampler)) is not None:
        Xt = Xt[keep]
    lookup = {c: i for i, c in enumerate(classes)}
    ys_idx = np.array([lookup[v] for v in ys.tolist()])
    K = len(classes)
    source_prior = np.bincount(ys_idx, minlength=K) / len(ys_idx)
    present = source_prior > 0
    if present.sum() < 2:
        nan = np.full(K, np.nan)
        return {"classes": classes, "source_prior": source_prior, "target_prior": nan, "ci_low": nan,
                "ci_high": nan, "bbse_prior": nan, "converged": False, "n_bootstrap": 0,
                "note": "the sources hold a single class; no prior can be estimated"}
    # classes absent from the sources cannot be estimated: fit on the present ones
    sub = np.flatnonzero(present)
    remap = -np.ones(K, int)
    remap[sub] = np.arange(len(sub))
    model, oof, C, ll = _fit_source_model(Xs, remap[ys_idx], random_state)
    Pt = model.predict_proba(Xt)
    ps = source_prior[sub]
    prior, converged = em_prior(Pt, ps)
    bbse = bbse_prior(oof, remap[ys_idx], Pt, ps)
    rng = np.random.default_rng(random_state)
    B = int(n_bootstrap)
    if B and len(Xt):
        idx = rng.integers(0, len(Pt), size=(B, len(Pt)))
        boot, _ = em_prior(Pt[idx], ps)
        a = (1 - level) / 2
        lo, hi = np.quantile(boot, a, axis=0), np.quantile(boot, 1 - a, axis=0)
    else:
        lo = hi = np.full(len(sub), np.nan)

    def full(v):
        out = np.zeros(K)
        out[sub] = v
        return out

    return {"classes": classes, "source_prior": source_prior, "target_prior": full(prior), "ci_low": full(lo),
            "ci_high": full(hi), "bbse_prior": full(bbse), "converged": bool(converged), "n_bootstrap": B,
            "level": level, "method": "EM (Saerens et al. 2002) on a source-trained logistic regression",
            "C": C, "source_oof_log_loss": float(ll), "n_target_rows": int(len(Xt))}
