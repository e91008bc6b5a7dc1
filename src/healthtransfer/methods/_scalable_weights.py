"""Scalable importance weighting (instance family): a domain classifier by SGD over chunks,
KMM on a Nystroem kernel, KLIEP on landmark centres. Re-exported by
:mod:`healthtransfer.methods.scalable`.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.linear_model import LogisticRegression, SGDClassifier

from ._chunked import (
    _EPS,
    _chunks,
    _Nystroem,
    _project_capped_simplex,
    _rbf,
    _sample_rows,
    _standardiser,
)
from .instance import _median_sq_dist, _ReweightBase

__all__ = ["ChunkedDomainIW", "NystroemKLIEP", "NystroemKMM"]


# -- domain-classifier importance weighting by SGD -----------------------------------------
class ChunkedDomainIW(_ReweightBase):
    """Importance weighting with a logistic domain classifier trained by averaged SGD
    (``SGDClassifier(loss="log_loss").partial_fit``) over shuffled row chunks.

    Scalable counterpart of :class:`~healthtransfer.methods.instance.DomainClassifierIW`:
    standardisation moments are accumulated over chunks, the classifier sees ``n_epochs``
    passes over the pooled source + target rows in chunks of ``chunk_size`` (only one chunk is
    ever copied), and its scores are Platt-calibrated on a held-out sample of at most
    ``calibration_rows`` rows. The L2 penalty matches the exact method's ``C``
    (``alpha = 1 / (C * n)``). Weights ``p(t|x) / p(s|x) * n_s / n_t`` are clipped and
    normalised as in the exact method; the base learner is trained on the weighted source rows
    plus the labelled target rows.

    Parameters
    ----------
    estimator : classifier or None
        Base learner; ``None`` = logistic regression.
    C : float
        Inverse regularisation of the domain classifier.
    n_epochs : int
        Minimum passes over the data.
    min_updates : int
        Minimum number of per-row SGD updates: small data get up to 50 passes.
    chunk_size : int
        Rows per ``partial_fit`` call.
    calibration_rows : int
        Size of the held-out sample for Platt scaling.
    clip_quantile, max_weight, target_weight, random_state
        As in :class:`~healthtransfer.methods.instance.DomainClassifierIW`.

    Example
    -------
    >>> from healthtransfer.data.synthetic import make_shifted_domains
    >>> d = make_shifted_domains("covariate", n_source=300, n_target=200, random_state=0)
    >>> m = ChunkedDomainIW(random_state=0).fit(d.X, d.masked_y(0), sample_domain=d.sample_domain)
    >>> m.weights_.shape
    (300,)
    """

    def __init__(self, estimator=None, C=1.0, n_epochs=3, min_updates=100_000, chunk_size=50_000,
                 calibration_rows=100_000, clip_quantile=0.98, max_weight=20.0,
                 target_weight=1.0, random_state=None):
        self.estimator = estimator
        self.C = C
        self.n_epochs = n_epochs
        self.min_updates = min_updates
        self.chunk_size = chunk_size
        self.calibration_rows = calibration_rows
        self.clip_quantile = clip_quantile
        self.max_weight = max_weight
        self.target_weight = target_weight
        self.random_state = random_state

    def _seed(self):
        return self.random_state if isinstance(self.random_state, (int, np.integer)) else 0

    def _source_weights(self, split):
        Xs, Xt = split.Xs, split.Xt
        ns, nt = len(Xs), len(Xt)
        n = ns + nt
        mu, sd = _standardiser(self.chunk_size, Xs, Xt)
        self.domain_scaler_ = (mu, sd)
        rng = np.random.default_rng(self._seed())

        def rows(idx):  # pooled rows by global index (source first), standardised
            idx = np.sort(idx)
            cut = np.searchsorted(idx, ns)
            Z = np.vstack([Xs[idx[:cut]], Xt[idx[cut:] - ns]])
            d = np.r_[np.zeros(cut, int), np.ones(len(idx) - cut, int)]
            return (Z - mu) / sd, d

        perm = rng.permutation(n)
        n_cal = int(min(self.calibration_rows, n // 5)) if n >= 50 else 0
        cal_idx, train_idx = perm[:n_cal], perm[n_cal:]
        clf = SGDClassifier(loss="log_loss", alpha=1.0 / (float(self.C) * len(train_idx)),
                            average=True, random_state=self._seed(), tol=None)
        size = max(1, int(self.chunk_size))
        # small data: more passes (cheap) so that SGD gets near the exact optimum
        epochs = max(int(self.n_epochs), min(50, math.ceil(self.min_updates / max(len(train_idx), 1))))
        self.n_epochs_ = epochs
        for _ in range(epochs):
            order = rng.permutation(train_idx)
            for s in _chunks(len(order), size):
                Z, d = rows(order[s])
                clf.partial_fit(Z, d, classes=np.array([0, 1]))
        self.domain_classifier_ = clf
        if n_cal >= 20:
            Zc, dc = rows(cal_idx)
            if len(np.unique(dc)) == 2:
                platt = LogisticRegression(C=1e4).fit(clf.decision_function(Zc)[:, None], dc)
                self.platt_ = (float(platt.coef_[0, 0]), float(platt.intercept_[0]))
            else:
                self.platt_ = (1.0, 0.0)
        else:
            self.platt_ = (1.0, 0.0)
        a, b = self.platt_
        logit = np.empty(ns)
        for s in _chunks(ns, size):
            logit[s] = a * clf.decision_function((Xs[s] - mu) / sd) + b
        logit = np.clip(logit, -13.8, 13.8)  # p in [1e-6, 1 - 1e-6], as the exact method
        return np.exp(logit) * ns / nt


# -- KMM on a Nystroem kernel -----------------------------------------------------------------


class NystroemKMM(_ReweightBase):
    """Kernel mean matching on a rank-``n_components`` Nystroem approximation of the RBF
    kernel.

    With ``k(x, y) ~ phi(x)' phi(y)`` the KMM problem ``min 1/2 w'K_ss w - kappa'w`` becomes
    ``min_v || Phi_s' v - mean_t phi ||^2`` over ``{0 <= v <= B / n_s, sum v = 1}``
    (``w = n_s v``): an n_s-dimensional problem whose gradient costs O(n_s m) and needs no
    n_s x n_s kernel. It is solved by FISTA (accelerated projected gradient) started from
    uniform weights, which returns the dense solution nearest to uniform rather than
    Frank-Wolfe's sparse vertex combination. The target only enters through the mean of its
    features, accumulated over chunks. Weights are then clipped and normalised as in
    :class:`~healthtransfer.methods.instance.KMMIW`.

    Parameters
    ----------
    estimator : classifier or None
        Base learner; ``None`` = logistic regression.
    gamma : float
        RBF bandwidth in units of 1 / median squared distance. The default is wider than
        ``KMMIW``'s: a rank-m approximation cannot represent a kernel narrower than the
        spacing of its landmarks.
    n_components : int
        Rank of the Nystroem approximation (landmarks drawn from the pooled rows).
    B : float
        Upper bound of each weight.
    max_iter, tol : int, float
        FISTA iterations and relative tolerance on the objective.
    chunk_size : int
    clip_quantile, max_weight, target_weight, random_state
        As in :class:`~healthtransfer.methods.instance.KMMIW`.
    """

    def __init__(self, estimator=None, gamma=1.0, n_components=200, smoothing=1e-2, B=1000.0,
                 max_iter=300, tol=1e-7, chunk_size=50_000, clip_quantile=0.95, max_weight=10.0,
                 target_weight=1.0, random_state=None):
        self.estimator = estimator
        self.gamma = gamma
        self.n_components = n_components
        self.smoothing = smoothing
        self.B = B
        self.max_iter = max_iter
        self.tol = tol
        self.chunk_size = chunk_size
        self.clip_quantile = clip_quantile
        self.max_weight = max_weight
        self.target_weight = target_weight
        self.random_state = random_state

    def _fit(self, split):
        self.n_iter_ = 1  # stays 1 without target rows (source-only: nothing to iterate)
        super()._fit(split)

    def _source_weights(self, split):
        Xs, Xt = split.Xs, split.Xt
        ns = len(Xs)
        seed = self.random_state if isinstance(self.random_state, (int, np.integer)) else 0
        rng = np.random.default_rng(seed)
        mu, sd = _standardiser(self.chunk_size, Xs, Xt)
        sample = (_sample_rows(rng, [Xs, Xt], 500) - mu) / sd
        self.gamma_ = float(self.gamma) / _median_sq_dist(sample, seed)
        land = (_sample_rows(rng, [Xs, Xt], int(self.n_components)) - mu) / sd
        ny = _Nystroem(land, self.gamma_)
        self.n_components_ = ny.n_components
        Phi = np.empty((ns, ny.n_components))
        for s in _chunks(ns, self.chunk_size):
            Phi[s] = ny((Xs[s] - mu) / sd)
        mean_t = np.zeros(ny.n_components)
        for s in _chunks(len(Xt), self.chunk_size):
            mean_t += ny((Xt[s] - mu) / sd).sum(axis=0)
        mean_t /= len(Xt)
        # Lipschitz constant of the gradient of 1/2||Phi'v - m||^2: largest eigenvalue of Phi'Phi
        G = Phi.T @ Phi
        lam = float(self.smoothing) * ns  # (smoothing / 2) * mean((w - 1)^2) in w = n_s v
        L = (float(np.linalg.eigvalsh(G)[-1]) if G.size else 1.0) + lam
        step = 1.0 / max(L, 1e-12)
        u = 1.0 / ns
        cap = float(self.B) / ns
        v = np.full(ns, 1.0 / ns)
        y, t = v.copy(), 1.0
        obj_old = np.inf
        self.n_iter_ = 1
        for it in range(1, int(self.max_iter) + 1):
            r = Phi.T @ y - mean_t
            v_new = _project_capped_simplex(y - step * (Phi @ r + lam * (y - u)), cap)
            t_new = 0.5 * (1 + math.sqrt(1 + 4 * t * t))
            y = v_new + ((t - 1) / t_new) * (v_new - v)
            v, t = v_new, t_new
            self.n_iter_ = it
            if it % 10 == 0:
                obj = 0.5 * float(np.sum((Phi.T @ v - mean_t) ** 2)) \
                    + 0.5 * lam * float(np.sum((v - u) ** 2))
                if abs(obj_old - obj) <= self.tol * max(obj, 1e-12) or obj < 1e-14:
                    break
                obj_old = obj
        self.mmd2_ = float(np.sum((Phi.T @ v - mean_t) ** 2))
        return v * ns


# -- KLIEP on landmark centres -------------------------------------------------------------------
class NystroemKLIEP(_ReweightBase):
    """KLIEP importance weights (Sugiyama et al. 2007) with a rank-``n_centers`` kernel model,
    fitted on a capped sample and evaluated on the source rows in chunks.

    The density ratio is ``w(x) = sum_l alpha_l k(x, c_l)`` over ``n_centers`` landmark centres
    drawn from the target rows (the Nystroem landmarks of the kernel); the ascent on
    ``alpha`` is skada's ``KLIEPReweightAdapter`` algorithm, including the likelihood
    cross-validation of the bandwidth over ``gammas``. Only the n_t x m kernel against the
    centres is built, on at most ``max_target_rows`` target rows; the source constraint
    ``mean_s w(x) = 1`` uses at most ``max_source_rows`` source rows, and the weights of all
    source rows are computed chunk by chunk. On data below both caps the result is the exact
    method's.

    Parameters
    ----------
    estimator : classifier or None
        Base learner; ``None`` = logistic regression.
    gammas : sequence of float
        Candidate bandwidths, in units of 1 / n_features.
    n_centers : int
    max_target_rows, max_source_rows : int
        Caps of the samples the ascent runs on.
    cv : int
        Folds of the likelihood cross-validation.
    max_iter, tol : int, float
        Ascent iterations and tolerance (as skada).
    chunk_size : int
    clip_quantile, max_weight, target_weight, random_state
        As in :class:`~healthtransfer.methods.instance.KLIEPIW`.
    """

    def __init__(self, estimator=None, gammas=(0.1, 0.3, 1.0, 3.0), n_centers=100,
                 max_target_rows=5000, max_source_rows=50_000, cv=5, max_iter=1000, tol=1e-6,
                 chunk_size=50_000, clip_quantile=0.99, max_weight=20.0, target_weight=1.0,
                 random_state=None):
        self.estimator = estimator
        self.gammas = gammas
        self.n_centers = n_centers
        self.max_target_rows = max_target_rows
        self.max_source_rows = max_source_rows
        self.cv = cv
        self.max_iter = max_iter
        self.tol = tol
        self.chunk_size = chunk_size
        self.clip_quantile = clip_quantile
        self.max_weight = max_weight
        self.target_weight = target_weight
        self.random_state = random_state

    def _ascent(self, gamma, Zs, Zt):
        from sklearn.utils import check_random_state

        rng = check_random_state(self.random_state)
        nt = len(Zt)
        m = min(nt, int(self.n_centers))
        centers = Zt[rng.choice(np.arange(nt), m)]
        A = _rbf(Zt, centers, gamma)
        b = np.zeros(m)
        for s in _chunks(len(Zs), self.chunk_size):
            b += _rbf(Zs[s], centers, gamma).sum(axis=0)
        b /= len(Zs)
        alpha = np.ones(m)
        obj = np.sum(np.log(A @ alpha))
        bb = b @ b
        for self.n_iter_ in range(1, int(self.max_iter) + 1):
            old = obj
            alpha += _EPS * A.T @ (1 / (A @ alpha))
            alpha += (1 - b @ alpha) * b / bb
            alpha = (alpha > 0) * alpha
            alpha /= b @ alpha
            obj = np.sum(np.log(A @ alpha + _EPS))
            if np.abs(obj - old) < self.tol:
                break
        return alpha, centers

    def _fit(self, split):
        self.n_iter_ = 1
        super()._fit(split)

    def _source_weights(self, split):
        from sklearn.model_selection import KFold

        Xs, Xt = split.Xs, split.Xt
        ns, nt = len(Xs), len(Xt)
        mu, sd = _standardiser(self.chunk_size, Xs, Xt)
        seed = self.random_state if isinstance(self.random_state, (int, np.integer)) else 0
        rng = np.random.default_rng(seed)
        Zt = (Xt if nt <= self.max_target_rows
              else Xt[np.sort(rng.choice(nt, int(self.max_target_rows), replace=False))])
        Zt = (Zt - mu) / sd
        Zs_fit = (Xs if ns <= self.max_source_rows
                  else Xs[np.sort(rng.choice(ns, int(self.max_source_rows), replace=False))])
        Zs_fit = (Zs_fit - mu) / sd
        p = Xs.shape[1]
        gammas = [float(g) / p for g in np.atleast_1d(self.gammas)]
        cv = min(int(self.cv), len(Zt))
        if len(gammas) > 1 and cv >= 2:
            scores = []
            for g in gammas:
                ll = []
                for tr, te in KFold(max(cv, 2)).split(Zt):
                    alpha, centers = self._ascent(g, Zs_fit, Zt[tr])
                    ll.append(np.mean(np.log(_rbf(Zt[te], centers, g) @ alpha + _EPS)))
                scores.append(np.mean(ll))
            gamma = gammas[int(np.argmax(scores))]
        else:
            gamma = gammas[0]
        self.best_gamma_ = gamma
        alpha, centers = self._ascent(gamma, Zs_fit, Zt)
        self.alpha_, self.centers_ = alpha, centers
        w = np.empty(ns)
        for s in _chunks(ns, self.chunk_size):
            w[s] = _rbf((Xs[s] - mu) / sd, centers, gamma) @ alpha
        return w
