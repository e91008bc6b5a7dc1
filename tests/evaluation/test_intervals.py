"""The stated 95% target-sample intervals of a shipped model cover the truth 93-97% of the time.

Synthetic shift with a known truth: a model is fitted once at a source; the target population
has shifted covariates and a changed outcome relation, so the model is both worse and
miscalibrated there. Its population AUROC and Brier at the target are computed on 400,000
draws (the truth); each replicate draws a fresh 150-patient evaluation sample (the size of a
demo target's test half) and states :func:`target_sample_ci`'s interval.
"""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from healthtransfer.evaluation import target_sample_ci


def _draw(n, shift, rng):
    X = rng.normal(shift, 1, size=(n, 3))
    z = -0.5 + X @ np.array([1.0, -0.7, 0.4]) + 0.6 * X[:, 0] ** 2 * (shift > 0)
    return X, (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)


@pytest.mark.slow  # 800 BCa bootstraps: about a minute on one free core
def test_target_sample_intervals_cover_93_to_97_percent():
    rng = np.random.default_rng(0)
    model = LogisticRegression().fit(*_draw(2000, 0.0, rng))
    Xb, yb = _draw(400_000, 0.7, rng)
    pb = model.predict_proba(Xb)[:, 1]
    truth = {"auroc": roc_auc_score(yb, pb), "brier": float(np.mean((pb - yb) ** 2))}
    reps, hits, widths = 400, {"auroc": 0, "brier": 0}, []
    for r in range(reps):
        X, y = _draw(150, 0.7, rng)
        ci = target_sample_ci(y, model.predict_proba(X)[:, 1], n_resamples=999, random_state=r)
        for k in hits:
            lo, hi = ci[k]["ci"]
            hits[k] += lo <= truth[k] <= hi
        widths.append(ci["auroc"]["ci"][1] - ci["auroc"]["ci"][0])
    coverage = {k: v / reps for k, v in hits.items()}
    assert all(0.93 <= c <= 0.97 for c in coverage.values()), coverage
    assert 0.05 < np.mean(widths) < 0.3  # an interval of the right order, not a trivially wide one
