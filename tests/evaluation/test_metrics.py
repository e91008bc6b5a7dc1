import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, roc_auc_score

from healthtransfer.evaluation import expected_calibration_error, fast_bootstrap_ci, score, target_sample_ci


def test_binary_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p = np.clip(0.3 * y + 0.7 * rng.random(300), 0, 1)
    s = score(y, p)
    assert s["auroc"] == pytest.approx(roc_auc_score(y, p))
    assert s["brier"] == pytest.approx(brier_score_loss(y, p))


def test_ece_zero_when_calibrated_and_large_when_not():
    y = np.r_[np.zeros(50), np.ones(50)].astype(int)
    assert expected_calibration_error(y, np.full(100, 0.5)) == pytest.approx(0.0)
    assert expected_calibration_error(y, np.full(100, 0.9)) == pytest.approx(0.4)


def test_target_sample_ci_and_the_fast_path_agree():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    p = np.clip(0.25 * y + 0.75 * rng.random(200), 0, 1)
    s = score(y, p)
    site, fast = target_sample_ci(y, p, n_resamples=1000), fast_bootstrap_ci(y, p, n_boot=300)
    for k in ("auroc", "brier"):
        lo, hi = site[k]["ci"]
        assert lo < s[k] < hi and site[k]["value"] == s[k]
        assert fast[k][0] < s[k] < fast[k][1]
        assert abs(lo - fast[k][0]) < 0.04 and abs(hi - fast[k][1]) < 0.04
    assert site["ece"]["value"] == s["ece"] and "ci" not in site["ece"]  # ECE: noise floor, no CI
    assert 0 < site["ece"]["noise_floor"] < 0.2


def test_multiclass_metrics():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 200)
    P = rng.dirichlet(np.ones(3), 200)
    P[np.arange(200), y] += 1.0
    P /= P.sum(axis=1, keepdims=True)
    s = score(y, P, n_classes=3)
    assert s["accuracy"] > 0.6 and s["auroc"] > 0.7
    assert set(fast_bootstrap_ci(y, P)) == {"accuracy", "brier"}


def test_fast_bootstrap_in_chunks_agrees_and_scales_down_draws():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 3000)
    p = np.clip(0.3 * y + 0.7 * rng.random(3000), 0, 1)
    one = fast_bootstrap_ci(y, p, n_boot=400)
    chunked = fast_bootstrap_ci(y, p, n_boot=400, max_cells=50_000)  # 16 draws per chunk
    for k in one:
        assert abs(one[k][0] - chunked[k][0]) < 0.01 and abs(one[k][1] - chunked[k][1]) < 0.01
    y = rng.integers(0, 2, 200_000)
    p = np.clip(0.3 * y + 0.7 * rng.random(200_000), 0, 1)
    lo, hi = fast_bootstrap_ci(y, p)["auroc"]
    assert lo < score(y, p)["auroc"] < hi and hi - lo < 0.01
