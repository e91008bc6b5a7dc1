import numpy as np
import pandas as pd
import pytest

from healthtransfer.federated import FederatedPreprocessor, check_update, local_stats, merge_stats, split_valid
from healthtransfer.federated import weighted_average
from healthtransfer.federated._dp import noise_for_epsilon, spent_epsilon


def test_check_update_accepts_and_rejects():
    ref = [np.zeros((1, 4)), np.zeros(1)]
    assert check_update([np.ones((1, 4)), np.ones(1)], ref) is None
    assert "non-finite" in check_update([np.array([[np.nan, 1, 1, 1]]), np.ones(1)], ref)
    assert "non-finite" in check_update([np.array([[np.inf, 1, 1, 1]]), np.ones(1)], ref)
    assert "shape" in check_update([np.ones((2, 4)), np.ones(1)], ref)
    assert "arrays" in check_update([np.ones((1, 4))], ref)


def test_split_valid_and_average():
    ref = [np.zeros(2)]
    ok, bad = split_valid([("a", [np.array([1.0, 1.0])], 1), ("b", [np.array([3.0, 3.0])], 3),
                           ("c", [np.array([np.nan, 0])], 5), ("d", [np.zeros(3)], 5)], ref)
    assert [n for n, _, _ in ok] == ["a", "b"] and [n for n, _ in bad] == ["c", "d"]
    avg = weighted_average([(a, w) for _, a, w in ok])
    assert np.allclose(avg[0], [2.5, 2.5])


def test_federated_statistics_equal_pooled():
    rng = np.random.default_rng(0)
    parts = [pd.DataFrame({"x": rng.normal(i, 1 + i, 50), "c": rng.integers(0, 2 + i, 50).astype(float)})
             for i in range(3)]
    parts[1].loc[:4, "x"] = np.nan
    st = merge_stats([local_stats(p, ["x"], ["c"]) for p in parts])
    pooled = pd.concat(parts)
    prep = FederatedPreprocessor(st)
    assert prep.mean["x"] == pytest.approx(pooled["x"].mean())
    assert prep.scale["x"] == pytest.approx(pooled["x"].std(ddof=0))
    assert st["categorical"]["c"] == sorted({str(int(v)) for v in pooled["c"]})
    X = prep.transform(pooled)
    assert X.shape == (150, 2 + len(st["categorical"]["c"]))
    assert abs(X[:, 0][~pooled["x"].isna().to_numpy()].mean()) < 1e-9


def test_dp_calibration_round_trip():
    sigma = noise_for_epsilon(10.0, 1e-5, 0.1, 200)
    assert spent_epsilon(sigma, 0.1, 200, 1e-5) == pytest.approx(10.0, rel=0.02)
    assert spent_epsilon(sigma, 0.1, 100, 1e-5) < 10.0
    assert noise_for_epsilon(1.0, 1e-5, 0.1, 200) > sigma
