"""Scalable variants of the exact transfer methods, for domains of 10^5 - 10^6 rows.

Each class keeps the estimator contract of :class:`~healthtransfer.methods._base.TransferClassifier`
and replaces the step of its exact counterpart that is quadratic (or worse) in the number of
rows, or that materialises a full copy of the data, with a chunked / low-rank one:

=====================  ======================  ==========================================
scalable name          exact counterpart       what changes
=====================  ======================  ==========================================
``iw_domain_chunked``  ``iw_domain_lr``        domain classifier by averaged SGD
                                               (``partial_fit`` over chunks) + Platt
                                               scaling on a held-out chunk
``kmm_nystroem``       ``kmm_lr``              KMM on a rank-``n_components`` Nystroem
                                               kernel, solved by accelerated projected
                                               gradient on the capped simplex
``kliep_nystroem``     ``kliep_lr``            KLIEP (same algorithm as skada) with the
                                               ratio model on ``n_centers`` landmark
                                               centres, fitted on a capped target sample,
                                               evaluated on the source rows in chunks
``tca_nystroem``       ``tca_lr``              TCA on a Nystroem basis: an m x m
                                               generalised eigenproblem built from streamed
                                               sums instead of an n x n one
``ot_minibatch``       ``ot_map_lr``           minibatch EMD (POT) between random source
                                               and target batches instead of one n_s x n_t
                                               plan
``coral_streamed``     ``coral_lr``            moments, correlation and Ledoit-Wolf
                                               shrinkage accumulated over row chunks
``joint_mmd_minibatch`` ``joint_mmd``          linear-time MMD, larger batches and a
                                               budget of optimisation steps
=====================  ======================  ==========================================

:data:`SCALABLE_FOR` maps exact names to scalable ones and :func:`resolve_method` picks the
scalable one above a size threshold (or above the exact method's ``max_rows``).

Example
-------
>>> from healthtransfer.data.synthetic import make_shifted_domains
>>> from healthtransfer.methods.scalable import StreamedCORAL, resolve_method
>>> d = make_shifted_domains("scale", n_source=200, n_target=100, random_state=0)
>>> m = StreamedCORAL(chunk_size=64).fit(d.X, d.masked_y(0), sample_domain=d.sample_domain)
>>> m.predict_proba(d.X[d.target]).shape
(100, 2)
>>> resolve_method("kmm_lr", n_rows=2_000_000), resolve_method("kmm_lr", n_rows=500)
('kmm_nystroem', 'kmm_lr')
"""

from __future__ import annotations

import math
import warnings
from functools import partial

import numpy as np
from scipy import linalg as sla
from sklearn.linear_model import LogisticRegression, SGDClassifier

from ._spec import MethodSpec
from .baselines import make_base_estimator
from .feature import CORAL, _FeatureBase
from .instance import _median_sq_dist, _ReweightBase

__all__ = [
    "ChunkedDomainIW",
    "NystroemKMM",
    "NystroemKLIEP",
    "NystroemTCA",
    "MinibatchOT",
    "StreamedCORAL",
    "METHODS",
]

_EPS = np.finfo(float).eps


# -- streaming helpers ---------------------------------------------------------------------
def _chunks(n: int, size: int):
    size = max(1, int(size))
    for i in range(0, n, size):
        yield slice(i, min(i + size, n))


class _Moments:
    """Column mean / variance accumulated over chunks (Chan et al. parallel update)."""

    def __init__(self, p: int):
        self.n = 0
        self.mean = np.zeros(p)
        self.m2 = np.zeros(p)

    def update(self, X: np.ndarray) -> "_Moments":
        k = X.shape[0]
        if k == 0:
            return self
        mu = X.mean(axis=0)
        m2 = ((X - mu) ** 2).sum(axis=0)
        n = self.n + k
        delta = mu - self.mean
        self.mean = self.mean + delta * (k / n)
        self.m2 = self.m2 + m2 + delta**2 * (self.n * k / n)
        self.n = n
        return self

    def fit(self, *arrays, chunk_size: int = 65536) -> "_Moments":
        for A in arrays:
            for s in _chunks(len(A), chunk_size):
                self.update(A[s])
        return self

    @property
    def var(self) -> np.ndarray:
        return self.m2 / max(self.n, 1)

    def scale(self) -> np.ndarray:
        sd = np.sqrt(self.var)
        return np.where(sd > 1e-12, sd, 1.0)


def _standardiser(chunk_size, *arrays):
    m = _Moments(arrays[0].shape[1]).fit(*arrays, chunk_size=chunk_size)
    return m.mean, m.scale()


def _sample_rows(rng, arrays, n):
    """Up to ``n`` rows drawn uniformly from the stacked ``arrays`` (without stacking them)."""
    sizes = [len(a) for a in arrays]
    total = sum(sizes)
    idx = np.sort(rng.choice(total, min(n, total), replace=False))
    out, start = [], 0
    for a, k in zip(arrays, sizes):
        sel = idx[(idx >= start) & (idx < start + k)] - start
        out.append(a[sel])
        start += k
    return np.vstack(out)


def _rbf(A, B, gamma):
    a2 = np.einsum("ij,ij->i", A, A)
    b2 = np.einsum("ij,ij->i", B, B)
    D = np.maximum(a2[:, None] + b2[None, :] - 2 * A @ B.T, 0.0)
    return np.exp(-gamma * D)


class _Nystroem:
    """A rank-m Nystroem map ``phi(x) = k(x, L) K_LL^{-1/2}`` for the RBF kernel, applied in
    chunks (the landmarks ``L`` are m rows drawn from the pooled data)."""

    def __init__(self, landmarks, gamma):
        self.landmarks = landmarks
        self.gamma = float(gamma)
        K = _rbf(landmarks, landmarks, gamma)
        vals, vecs = np.linalg.eigh((K + K.T) / 2)
        keep = vals > 1e-10 * max(vals.max(), 1e-300)
        self.normalization = vecs[:, keep] / np.sqrt(vals[keep])
        self.n_components = int(keep.sum())

    def __call__(self, X):
        return _rbf(X, self.landmarks, self.gamma) @ self.normalization


def _make_nystroem(rng, arrays, n_components, gamma):
    landmarks = _sample_rows(rng, arrays, n_components)
    return _Nystroem(landmarks, gamma)


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
def _project_capped_simplex(y, cap, total=1.0, n_iter=60):
    """Euclidean projection of ``y`` on {0 <= v <= cap, sum v = total} (bisection on the
    shift)."""
    lo, hi = float(y.min() - cap), float(y.max())
    for _ in range(n_iter):
        tau = 0.5 * (lo + hi)
        s = np.clip(y - tau, 0.0, cap).sum()
        if s > total:
            lo = tau
        else:
            hi = tau
    return np.clip(y - 0.5 * (lo + hi), 0.0, cap)


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


# -- TCA on a Nystroem basis ------------------------------------------------------------------
class NystroemTCA(_FeatureBase):
    """Transfer component analysis (Pan et al. 2011) with the kernel replaced by a rank-m
    Nystroem approximation ``K ~ Phi Phi'``.

    Writing the components as ``W = Phi Q`` turns skada's n x n problem
    (``(I + mu K L K)^{-1} K H K``) into the m x m generalised eigenproblem
    ``G C G q = lambda (G + mu (G d)(G d)') q`` with ``G = Phi'Phi``, ``C = Phi'H Phi`` (the
    scatter of the features) and ``d`` the difference of the source and target feature means:
    all sums accumulated over chunks. Components are scaled so that ``||Phi q|| = 1`` (skada's
    unit eigenvectors); a row is embedded as ``phi(x)' G q``. Rows are z-scored per domain first
    (``standardize="domain"``) or with pooled moments, as in
    :class:`~healthtransfer.methods.feature.TCA`.

    Parameters
    ----------
    estimator : classifier or None
        Base learner; ``None`` = logistic regression.
    n_components : int or None
        Transfer components (``None``: n_features).
    mu : float
        Trade-off between MMD and variance preservation.
    gamma : float or None
        RBF bandwidth on the z-scores (``None``: 1 / n_features, skada's default).
    n_landmarks : int
        Rank of the Nystroem approximation.
    standardize : {"pooled", "domain"}
    chunk_size, target_weight, random_state
    """

    def __init__(self, estimator=None, n_components=None, mu=0.1, gamma=None, n_landmarks=300,
                 standardize="domain", chunk_size=50_000, target_weight=1.0, random_state=None):
        self.estimator = estimator
        self.n_components = n_components
        self.mu = mu
        self.gamma = gamma
        self.n_landmarks = n_landmarks
        self.standardize = standardize
        self.chunk_size = chunk_size
        self.target_weight = target_weight
        self.random_state = random_state

    def _zmap(self, X, role, domain):
        if self.standardize == "pooled":
            mu, sd = self.pooled_
        else:
            mu, sd = self.moments_.get(domain, self.source_pool_ if role == "source"
                                       else self.target_pool_)
        return (X - mu) / sd

    def _fit_maps(self, split):
        if self.standardize not in ("pooled", "domain"):
            raise ValueError(f"standardize must be 'pooled' or 'domain', got {self.standardize!r}")
        cs = self.chunk_size
        self.moments_ = {int(d): _standardiser(cs, split.Xs[split.ds == d])
                         for d in split.source_domains}
        self.source_pool_ = _standardiser(cs, split.Xs)
        self.target_pool_ = _standardiser(cs, split.Xt) if len(split.Xt) > 1 else self.source_pool_
        self.moments_[-1] = self.target_pool_
        self.pooled_ = _standardiser(cs, split.Xs, split.Xt) if len(split.Xt) else self.source_pool_
        self.components_ = None
        if len(split.Xt) == 0:
            return
        seed = self.random_state if isinstance(self.random_state, (int, np.integer)) else 0
        rng = np.random.default_rng(seed)
        p = split.Xs.shape[1]
        gamma = 1.0 / p if self.gamma is None else float(self.gamma)
        # landmarks: pooled z-scored rows (source rows z-scored by their own domain)
        ns, nt = len(split.Xs), len(split.Xt)
        idx = np.sort(rng.choice(ns + nt, min(int(self.n_landmarks), ns + nt), replace=False))
        src_i, tgt_i = idx[idx < ns], idx[idx >= ns] - ns
        land = np.vstack([self._zs(split.Xs[src_i], split.ds[src_i]),
                          self._zmap(split.Xt[tgt_i], "target", -1)])
        self.nystroem_ = ny = _Nystroem(land, gamma)
        m = ny.n_components
        G = np.zeros((m, m))
        sum_s, sum_t = np.zeros(m), np.zeros(m)
        for s in _chunks(ns, cs):
            F = ny(self._zs(split.Xs[s], split.ds[s]))
            G += F.T @ F
            sum_s += F.sum(axis=0)
        for s in _chunks(nt, cs):
            F = ny(self._zmap(split.Xt[s], "target", -1))
            G += F.T @ F
            sum_t += F.sum(axis=0)
        n = ns + nt
        mean_all = (sum_s + sum_t) / n
        C = G - n * np.outer(mean_all, mean_all)  # Phi' H Phi
        d = sum_s / ns - sum_t / nt  # Phi' L Phi = d d'
        Gd = G @ d
        num = G @ C @ G
        den = G + float(self.mu) * np.outer(Gd, Gd)
        num = (num + num.T) / 2
        den = (den + den.T) / 2 + 1e-8 * np.trace(den) / m * np.eye(m)
        vals, Q = sla.eigh(num, den)
        k = p if self.n_components is None else int(self.n_components)
        order = np.argsort(np.abs(vals))[::-1][: min(k, m)]
        Q = Q[:, order]
        norms = np.sqrt(np.clip(np.einsum("ik,ij,jk->k", Q, G, Q), 1e-300, None))
        self.components_ = G @ (Q / norms)
        self.eigenvalues_ = vals[order]

    def _make_estimator(self):
        est = super()._make_estimator()
        # The transfer components are correlated, and L-BFGS needed ~2,400 iterations on them
        # at 10^5 rows (52 of 66 s); Newton's method with a Cholesky solve reaches the same
        # optimum (same objective) in a handful.
        if isinstance(est, LogisticRegression) and est.solver == "lbfgs":
            est.set_params(solver="newton-cholesky", max_iter=200)
        return est

    def _zs(self, X, ds):
        out = np.empty_like(X)
        for d in np.unique(ds):
            out[ds == d] = self._zmap(X[ds == d], "source", int(d))
        return out

    def _map(self, X, role, domain):
        Z = self._zmap(X, role, domain)
        if self.components_ is None:
            return Z
        out = np.empty((len(Z), self.components_.shape[1]))
        for s in _chunks(len(Z), self.chunk_size):
            out[s] = self.nystroem_(Z[s]) @ self.components_
        return out


# -- minibatch optimal transport -----------------------------------------------------------------
class MinibatchOT(_FeatureBase):
    """Minibatch optimal-transport mapping (Fatras et al. 2020) of the source rows onto the
    target.

    Rows are standardised with pooled moments (accumulated over chunks). Up to
    ``max_source_rows`` source rows (all of them on smaller data) are shuffled and cut into
    batches of ``batch_size``; each batch is transported (exact EMD, or Sinkhorn with
    ``reg > 0``) onto a random target batch of the same size and every source row moves to
    the barycentre of the target rows it is sent to. The classifier is trained on the mapped
    source rows plus the labelled target rows; above ``max_source_rows`` the mapped rows are a
    uniform sample of the source rows (their number, not the data size, bounds the cost:
    O(max_source_rows * batch_size)). Target rows are left in place; new source rows are
    moved by the displacement of their nearest mapped source row (POT's out-of-sample rule).

    Parameters
    ----------
    estimator : classifier or None
        Base learner; ``None`` = logistic regression.
    batch_size : int
    max_source_rows : int
    reg : float or None
        Entropic regularisation (``None`` = exact EMD per batch).
    chunk_size, target_weight, random_state
    """

    def __init__(self, estimator=None, batch_size=500, max_source_rows=30_000, reg=None,
                 chunk_size=50_000, target_weight=1.0, random_state=None):
        self.estimator = estimator
        self.batch_size = batch_size
        self.max_source_rows = max_source_rows
        self.reg = reg
        self.chunk_size = chunk_size
        self.target_weight = target_weight
        self.random_state = random_state

    def _fit_maps(self, split):
        import ot

        self.scaler_ = _standardiser(self.chunk_size, split.Xs, split.Xt) if len(split.Xt) \
            else _standardiser(self.chunk_size, split.Xs)
        mu, sd = self.scaler_
        ns, nt = len(split.Xs), len(split.Xt)
        seed = self.random_state if isinstance(self.random_state, (int, np.integer)) else 0
        rng = np.random.default_rng(seed)
        self.mapped_index_ = np.arange(ns) if ns <= self.max_source_rows else \
            np.sort(rng.choice(ns, int(self.max_source_rows), replace=False))
        self._Zs_fit = (split.Xs[self.mapped_index_] - mu) / sd
        self._Zs_mapped = self._Zs_fit.copy()
        self.n_batches_ = 0
        if nt == 0:
            return
        k = len(self._Zs_fit)
        n_batches = max(1, int(round(k / max(1, int(self.batch_size)))))
        t_perm = rng.permutation(nt)
        t_pos = 0
        for b in np.array_split(rng.permutation(k), n_batches):
            m = min(len(b), nt)
            if t_pos + m > nt:
                t_perm, t_pos = rng.permutation(nt), 0
            tj = np.sort(t_perm[t_pos:t_pos + m])
            t_pos += m
            Zt = (split.Xt[tj] - mu) / sd
            Zs = self._Zs_fit[b]
            M = ot.dist(Zs, Zt)
            a, c = np.full(len(b), 1.0 / len(b)), np.full(m, 1.0 / m)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if self.reg is None:
                    P = ot.emd(a, c, M, numItermax=1_000_000)
                else:
                    P = ot.sinkhorn(a, c, M / max(M.max(), 1e-12), float(self.reg))
            row = P.sum(axis=1, keepdims=True)
            self._Zs_mapped[b] = (P @ Zt) / np.where(row > 0, row, 1.0)
            self.n_batches_ += 1
        self._nn = None

    def _map(self, X, role, domain):
        mu, sd = self.scaler_
        Z = (X - mu) / sd
        if role == "target" or self.n_batches_ == 0:
            return Z
        if Z.shape == self._Zs_fit.shape and np.array_equal(Z, self._Zs_fit):
            return self._Zs_mapped
        if self._nn is None:
            from sklearn.neighbors import NearestNeighbors

            self._nn = NearestNeighbors(n_neighbors=1).fit(self._Zs_fit)
        j = self._nn.kneighbors(Z, return_distance=False)[:, 0]
        return Z + (self._Zs_mapped[j] - self._Zs_fit[j])

    def _fit(self, split):
        self._fit_maps(split)
        Zs = self._Zs_mapped
        ys = split.ys[self.mapped_index_]
        ws = None if split.ws is None else split.ws[self.mapped_index_]
        if len(split.ytl):
            X = np.vstack([Zs, self._map(split.Xtl, "target", -1)])
            y = np.r_[ys, split.ytl]
            wt = np.full(len(split.ytl), float(self.target_weight))
            if split.wtl is not None:
                wt = wt * split.wtl
            w = np.r_[np.ones(len(ys)) if ws is None else ws, wt]
        else:
            X, y, w = Zs, ys, ws
        if len(np.unique(y)) < 2:  # a subsample lost a class: fall back to all source rows
            X, y = np.vstack([X, (split.Xs - self.scaler_[0]) / self.scaler_[1]]), \
                np.r_[y, split.ys]
            w = None
        self.n_features_out_ = X.shape[1]
        from .instance import _base

        self.estimator_ = _base(self.estimator, self.random_state).fit(X, y, sample_weight=w)


# -- CORAL with streamed covariance ----------------------------------------------------------------
def _streamed_corr(X, chunk_size, reg):
    """Per-column moments and the Ledoit-Wolf shrunk correlation (``assume_centered`` on the
    z-scores) plus ``reg * I``, from two chunked passes; equal to
    ``ledoit_wolf((X - mu) / sd, assume_centered=True)`` up to rounding."""
    n, p = X.shape
    m = _Moments(p).fit(X, chunk_size=chunk_size)
    mu = m.mean
    sd = np.sqrt(m.var) if n > 1 else np.ones(p)
    sd = np.where(sd > 1e-8 * (1 + np.abs(mu)), sd, 1.0)
    if n < 2:
        return mu, sd, np.eye(p)
    S = np.zeros((p, p))
    beta_ = 0.0
    for s in _chunks(n, chunk_size):
        Z = (X[s] - mu) / sd
        S += Z.T @ Z
        beta_ += float(np.sum(np.einsum("ij,ij->i", Z, Z) ** 2))
    emp = S / n
    if p == 1:
        return mu, sd, emp + reg * np.eye(1)
    tr = np.diag(emp)
    mu_tr = tr.sum() / p
    delta_ = float(np.sum(S**2)) / n**2
    beta = 1.0 / (p * n) * (beta_ / n - delta_)
    delta = (delta_ - 2.0 * mu_tr * tr.sum() + p * mu_tr**2) / p
    beta = min(beta, delta)
    shrink = 0.0 if beta == 0 else beta / delta
    C = (1.0 - shrink) * emp
    C.flat[:: p + 1] += shrink * mu_tr
    return mu, sd, C + reg * np.eye(p)


class StreamedCORAL(CORAL):
    """CORAL (Sun, Feng & Saenko 2016) with every moment accumulated over row chunks.

    The map is the exact :class:`~healthtransfer.methods.feature.CORAL` map: each source domain
    z-scored by its own moments, whitened with its Ledoit-Wolf shrunk correlation (+ ``reg``),
    re-coloured with the target's. Means, variances, ``Z'Z`` and the Ledoit-Wolf statistic
    ``sum ||z||^4`` come from two passes over chunks of ``chunk_size`` rows, so no standardised
    copy of a domain is ever held; mapping at fit and predict time is chunked too.

    Parameters
    ----------
    estimator : classifier or None
    reg : float
    chunk_size : int
    target_weight, random_state
    """

    def __init__(self, estimator=None, reg=1e-3, chunk_size=50_000, target_weight=1.0,
                 random_state=None):
        super().__init__(estimator=estimator, reg=reg, target_weight=target_weight,
                         random_state=random_state)
        self.chunk_size = chunk_size

    def _fit_maps(self, split):
        from .feature import _sqrtm_sym

        if len(split.Xt) < 2:
            self.maps_ = {}
            return
        cs, reg = self.chunk_size, self.reg
        mu_t, sd_t, Ct = _streamed_corr(split.Xt, cs, reg)
        root_t = _sqrtm_sym(Ct)
        self.maps_ = {}
        for d in list(split.source_domains) + [None]:
            Xd = split.Xs if d is None else split.Xs[split.ds == d]
            mu, sd, Cs = _streamed_corr(Xd, cs, reg)
            A = _sqrtm_sym(Cs, inverse=True) @ root_t
            self.maps_[d if d is None else int(d)] = (mu, sd, A, mu_t, sd_t)

    def _map(self, X, role, domain):
        if role == "target" or not self.maps_:
            return X
        mu, sd, A, mu_t, sd_t = self.maps_.get(domain, self.maps_[None])
        out = np.empty((len(X), A.shape[1]))
        for s in _chunks(len(X), self.chunk_size):
            out[s] = ((X[s] - mu) / sd) @ A * sd_t + mu_t
        return out


# -- deep joint objective with the linear-time MMD ------------------------------------------------
# -- registry ------------------------------------------------------------------------------------
def _mk(cls, kind, random_state=None, **params):
    return cls(estimator=make_base_estimator(kind, random_state), random_state=random_state,
               **params)


METHODS = [
    MethodSpec("iw_domain_chunked", "instance", partial(_mk, ChunkedDomainIW, "lr"), "both",
               "Importance weighting by a logistic domain classifier trained by SGD over row "
               "chunks (scalable iw_domain_lr); logistic regression on weighted source + "
               "labelled target rows.",
               grid=({"clip_quantile": 0.95}, {"clip_quantile": 0.99}, {"C": 0.1}),
               skada_counterpart="DiscriminatorReweightAdapter"),
    MethodSpec("kmm_nystroem", "instance", partial(_mk, NystroemKMM, "lr"), "both",
               "Kernel mean matching on a rank-200 Nystroem kernel (scalable kmm_lr); logistic "
               "regression on weighted source + labelled target rows.",
               grid=({"gamma": 0.3}, {"gamma": 1.0}, {"gamma": 3.0}),
               skada_counterpart="KMMReweightAdapter"),
    MethodSpec("kliep_nystroem", "instance", partial(_mk, NystroemKLIEP, "lr"), "both",
               "KLIEP density-ratio weights on landmark centres, fitted on a capped sample and "
               "evaluated in chunks (scalable kliep_lr); logistic regression.",
               skada_counterpart="KLIEPReweightAdapter"),
    MethodSpec("tca_nystroem", "feature", partial(_mk, NystroemTCA, "lr"), "both",
               "Transfer component analysis on a rank-300 Nystroem basis (scalable tca_lr); "
               "logistic regression on the transfer components.",
               grid=({"mu": 0.1}, {"mu": 1.0}, {"standardize": "pooled"}),
               skada_counterpart="TransferComponentAnalysisAdapter"),
    MethodSpec("ot_minibatch", "feature", partial(_mk, MinibatchOT, "lr"), "both",
               "Minibatch EMD mapping of source rows onto the target (scalable ot_map_lr); "
               "logistic regression on mapped source + labelled target rows.",
               grid=({"reg": None}, {"reg": 0.1}), skada_counterpart="OTMappingAdapter"),
    MethodSpec("coral_streamed", "feature", partial(_mk, StreamedCORAL, "lr"), "both",
               "CORAL with moments and Ledoit-Wolf correlations accumulated over row chunks "
               "(scalable coral_lr); logistic regression on mapped source + labelled target rows.",
               grid=({"reg": 1e-3}, {"reg": 0.1}, {"reg": 1.0}), skada_counterpart="CORALAdapter"),
]
