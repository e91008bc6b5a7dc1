"""Scalable feature alignment: TCA on a Nystroem basis, minibatch optimal transport and CORAL
with streamed moments. Re-exported by :mod:`healthtransfer.methods.scalable`.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg as sla
from sklearn.linear_model import LogisticRegression

from ._chunked import _chunks, _Nystroem, _standardiser, _streamed_corr
from .feature import CORAL, _FeatureBase

__all__ = ["MinibatchOT", "NystroemTCA", "StreamedCORAL"]


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
        from ._rows import _base

        self.estimator_ = _base(self.estimator, self.random_state).fit(X, y, sample_weight=w)


# -- CORAL with streamed covariance ----------------------------------------------------------------


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
