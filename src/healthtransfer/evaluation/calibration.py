"""Calibration transfer: make a model's probabilities honest at the target.

- With labelled target rows: logistic recalibration on *out-of-fold* predictions of those
  rows (never on the rows' in-sample fit, never on test rows). A guard for tiny budgets: fewer
  than 20 rows or 5 per class fits the intercept only (calibration-in-the-large); 200 or more
  rows fit isotonic regression.
- Without target labels: if the target's class prior is estimated to differ from the source's
  (the bootstrap CI excludes it), probabilities are re-weighted by the prior ratio
  (Saerens et al. 2002).

Example
-------
>>> import numpy as np
>>> y = np.r_[np.zeros(50), np.ones(50)].astype(int)
>>> p = np.clip(np.r_[np.full(50, 0.6), np.full(50, 0.9)], 0, 1)  # over-confident positives
>>> cal = Recalibrator().fit(y, p)
>>> cal.kind, bool(cal.transform(np.array([0.6]))[0] < 0.2)
('platt', True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

__all__ = ["PriorShift", "Recalibrator", "logit", "prior_shift_adjust", "reliability_curve"]


def logit(p):
    """log(p / (1 - p)), with p clipped to [1e-6, 1 - 1e-6]."""
    p = np.clip(np.asarray(p, float), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


@dataclass
class Recalibrator:
    """Binary recalibration map fitted on out-of-fold target predictions."""

    min_rows_platt: int = 20
    min_per_class_platt: int = 5
    min_rows_isotonic: int = 200
    kind: str = "none"
    a: float = 0.0
    b: float = 1.0
    _iso: object = None

    def fit(self, y, p) -> "Recalibrator":
        y = np.asarray(y).astype(int)
        p = np.asarray(p, float)
        n, n_min = len(y), int(np.bincount(y, minlength=2).min())
        z = logit(p)
        if n_min == 0:
            self.kind = "none"
        elif n >= self.min_rows_isotonic and n_min >= 20:
            from sklearn.isotonic import IsotonicRegression

            self._iso = IsotonicRegression(out_of_bounds="clip", y_min=1e-4, y_max=1 - 1e-4).fit(p, y)
            self.kind = "isotonic"
        elif n >= self.min_rows_platt and n_min >= self.min_per_class_platt:
            self.a, self.b = _fit_logistic(z, y, slope=True)
            self.kind = "platt"
        else:
            self.a, _ = _fit_logistic(z, y, slope=False)
            self.b = 1.0
            self.kind = "intercept"
        return self

    def transform(self, p) -> np.ndarray:
        p = np.asarray(p, float)
        if self.kind == "none":
            return p
        if self.kind == "isotonic":
            return self._iso.predict(p)
        return 1 / (1 + np.exp(-(self.a + self.b * logit(p))))


def _fit_logistic(z, y, slope: bool, prior_rows: float = 4.0):
    """MAP fit of P(y=1) = sigmoid(a + b z), shrunk toward the identity map (a = 0, b = 1) with
    the weight of about ``prior_rows`` observations, so 10 labelled rows move it only partway."""

    def nll(theta):
        a, b = (theta[0], theta[1]) if slope else (theta[0], 1.0)
        eta = a + b * z
        ll = y * eta - np.logaddexp(0, eta)
        return -ll.sum() + 0.5 * prior_rows * 0.25 * (a ** 2 + (b - 1) ** 2)

    x0 = np.array([0.0, 1.0]) if slope else np.array([0.0])
    res = minimize(nll, x0, method="L-BFGS-B")
    return (float(res.x[0]), float(res.x[1])) if slope else (float(res.x[0]), 1.0)


def prior_shift_adjust(proba, source_prior, target_prior) -> np.ndarray:
    """Re-weight class probabilities by target/source prior ratios (rows sum to 1)."""
    proba = np.asarray(proba, float)
    squeeze = proba.ndim == 1
    if squeeze:
        proba = np.column_stack([1 - proba, proba])
    r = np.asarray(target_prior, float) / np.clip(np.asarray(source_prior, float), 1e-12, None)
    q = proba * r
    q /= q.sum(axis=1, keepdims=True)
    return q[:, 1] if squeeze else q


@dataclass
class PriorShift:
    """Binary calibration map for label shift: P(y=1) re-weighted from the source's class prior
    to the target's estimated one (see :func:`prior_shift_adjust`).

    >>> round(float(PriorShift([0.5, 0.5], [0.8, 0.2]).transform([0.5])[0]), 2)
    0.2
    """

    source_prior: list
    target_prior: list
    kind: str = "prior_shift"

    def transform(self, p) -> np.ndarray:
        return prior_shift_adjust(np.asarray(p, float), np.asarray(self.source_prior, float),
                                  np.asarray(self.target_prior, float))


def reliability_curve(y, p, n_bins: int = 10):
    """Mean predicted probability, observed frequency and count per equal-width bin."""
    y = np.asarray(y).astype(int)
    p = np.asarray(p, float)
    bins = np.clip((p * n_bins).astype(int), 0, n_bins - 1)
    mean_p, freq, count = [], [], []
    for b in range(n_bins):
        m = bins == b
        if m.any():
            mean_p.append(float(p[m].mean()))
            freq.append(float(y[m].mean()))
            count.append(int(m.sum()))
    return np.array(mean_p), np.array(freq), np.array(count)
