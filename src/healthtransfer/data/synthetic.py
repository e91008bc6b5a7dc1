"""Synthetic two-domain data with a known shift, for tests, examples and benchmarks.

Example
-------
>>> from healthtransfer.data.synthetic import make_shifted_domains
>>> d = make_shifted_domains("covariate", n_source=200, n_target=200, random_state=0)
>>> d.X.shape, sorted(set(d.sample_domain.tolist()))
((400, 5), [-1, 1])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ShiftedDomains", "make_heart_sized", "make_shifted_domains", "SHIFT_KINDS"]

SHIFT_KINDS = ("covariate", "label", "scale", "rotation", "concept", "missing_feature")


@dataclass
class ShiftedDomains:
    """Source and target rows stacked: ``X``, true labels ``y``, ``sample_domain`` (1 source,
    -1 target). ``masked_y(n_labelled)`` gives the fit labels with all but ``n_labelled``
    target rows masked as -1."""

    X: np.ndarray
    y: np.ndarray
    sample_domain: np.ndarray

    @property
    def source(self):
        return self.sample_domain > 0

    @property
    def target(self):
        return self.sample_domain < 0

    def masked_y(self, n_labelled: int = 0, random_state=0) -> np.ndarray:
        rng = np.random.default_rng(random_state)
        y = self.y.copy()
        t = np.flatnonzero(self.target)
        keep = set()
        if n_labelled:
            # stratified: at least one row of every class
            for c in np.unique(self.y[t]):
                keep.add(int(rng.choice(t[self.y[t] == c])))
            rest = [i for i in rng.permutation(t) if i not in keep]
            keep.update(rest[: max(0, n_labelled - len(keep))])
        mask = np.array([i not in keep for i in t])
        y[t[mask]] = -1
        return y


def make_shifted_domains(
    kind: str = "covariate",
    n_source: int = 500,
    n_target: int = 500,
    n_features: int = 5,
    n_classes: int = 2,
    random_state=None,
) -> ShiftedDomains:
    """Make a source and a target domain that differ by one kind of shift.

    - ``covariate``: target inputs drawn from a shifted region, same p(y|x) (nonlinear, so a
      misspecified source model is wrong where the target lives);
    - ``label``: same p(x|y), target class prior very different (0.8 vs 0.3 for class 1);
    - ``scale``: each target feature is an affine transform of the source one (devices that
      measure in other units), same p(y|x) after the transform;
    - ``rotation``: target inputs rotated; labels follow the rotated geometry;
    - ``concept``: p(y|x) changes (another weight vector at the target);
    - ``missing_feature``: the most predictive feature is missing at most target rows but
      related to the others, as `ca`/`thal` are outside Cleveland.
    """
    if kind not in SHIFT_KINDS:
        raise ValueError(f"unknown shift kind {kind!r}; expected one of {SHIFT_KINDS}")
    rng = np.random.default_rng(random_state)
    p = n_features
    w = np.linspace(1.5, 0.3, p) * np.where(np.arange(p) % 2 == 0, 1, -1)
    centres = rng.normal(scale=2.0, size=(n_classes, p))

    def by_prior(n, prior):
        y = rng.choice(n_classes, size=n, p=prior)
        X = centres[y] + rng.normal(size=(n, p))
        return X, y

    def logistic_labels(X, weights, nonlinear=False):
        z = X @ weights
        if nonlinear:
            z = z + 1.5 * np.sin(2 * X[:, 0]) - 0.8 * X[:, 1] ** 2 + 0.8
        if n_classes == 2:
            return (rng.random(len(z)) < 1 / (1 + np.exp(-2 * z))).astype(int)
        cuts = np.quantile(z, np.linspace(0, 1, n_classes + 1)[1:-1])
        return np.digitize(z, cuts)

    uniform = np.full(n_classes, 1 / n_classes)
    if kind == "covariate":
        Xs = rng.normal(size=(n_source, p))
        Xt = rng.normal(loc=1.2, size=(n_target, p)) * 0.8
        ys = logistic_labels(Xs, w, nonlinear=True)
        yt = logistic_labels(Xt, w, nonlinear=True)
    elif kind == "label":
        ps = np.r_[0.7, np.full(n_classes - 1, 0.3 / (n_classes - 1))]
        pt = np.r_[0.2, np.full(n_classes - 1, 0.8 / (n_classes - 1))]
        Xs, ys = by_prior(n_source, ps)
        Xt, yt = by_prior(n_target, pt)
    elif kind == "scale":
        Xs, ys = by_prior(n_source, uniform)
        Xt, yt = by_prior(n_target, uniform)
        a = rng.uniform(3, 30, size=p)
        b = rng.normal(scale=20, size=p)
        Xt = Xt * a + b
    elif kind == "rotation":
        Xs, ys = by_prior(n_source, uniform)
        Xt, yt = by_prior(n_target, uniform)
        q, _ = np.linalg.qr(rng.normal(size=(p, p)))
        theta = np.eye(p)
        theta[:2, :2] = [[np.cos(0.8), -np.sin(0.8)], [np.sin(0.8), np.cos(0.8)]]
        Xt = Xt @ (q @ theta @ q.T)
    elif kind == "concept":
        Xs = rng.normal(size=(n_source, p))
        Xt = rng.normal(size=(n_target, p))
        ys = logistic_labels(Xs, w)
        yt = logistic_labels(Xt, -np.roll(w, 1))
    else:  # missing_feature
        latent_s = rng.normal(size=n_source)
        latent_t = rng.normal(size=n_target)

        def rows(latent):
            X = rng.normal(size=(len(latent), p))
            X[:, 0] = latent + 0.3 * rng.normal(size=len(latent))
            X[:, 1:3] = latent[:, None] * 0.9 + 0.4 * rng.normal(size=(len(latent), 2))
            return X

        Xs, Xt = rows(latent_s), rows(latent_t)
        ys = logistic_labels(Xs, np.r_[2.5, np.zeros(p - 1)])
        yt = logistic_labels(Xt, np.r_[2.5, np.zeros(p - 1)])
        Xt[rng.random(n_target) < 0.9, 0] = np.nan
    X = np.vstack([Xs, Xt])
    y = np.r_[ys, yt].astype(int)
    d = np.r_[np.ones(n_source, int), -np.ones(n_target, int)]
    return ShiftedDomains(X=X, y=y, sample_domain=d)


def make_heart_sized(domains=(1,), target_hidden_cols: int = 0, n_labelled: int = 40, random_state: int = 0):
    """A problem the size of a UCI heart pair, for method tests and fit-time benchmarks.

    300 source rows (split evenly over the source ``domains``) and 150 target rows (domain -1),
    20 noise columns with 5% missing values, the first ``target_hidden_cols`` columns never
    measured at the target, and ``n_labelled`` target rows labelled (the others ``y = -1``).
    Returns ``(X, y, sample_domain)``.

    >>> X, y, d = make_heart_sized(domains=(1, 2, 3))
    >>> X.shape, int((y[d < 0] >= 0).sum()), sorted(set(d.tolist()))
    ((450, 20), 40, [-1, 1, 2, 3])
    """
    rng = np.random.default_rng(random_state)
    X = rng.normal(size=(450, 20))
    X[rng.random(X.shape) < 0.05] = np.nan
    X[300:, :target_hidden_cols] = np.nan
    y = (rng.random(450) < 0.4).astype(int)
    d = np.r_[np.repeat(np.asarray(domains), 300 // len(domains)), -np.ones(150, int)]
    y[300 + n_labelled:] = -1
    return X, y, d
