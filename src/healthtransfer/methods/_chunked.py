"""Row-chunked and low-rank numerics shared by the scalable methods: chunked moments and
standardisation, row sampling, the RBF kernel and its Nystroem map, the capped-simplex
projection and the streamed correlation (Ledoit-Wolf) of :class:`StreamedCORAL`.
"""

from __future__ import annotations

import numpy as np

_EPS = np.finfo(float).eps


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
