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


def _site(heart, cfg):
    from healthtransfer.federated._client import SiteClient

    spec, sites, frames = heart
    return SiteClient(sites[0], frames[sites[0]][0], frames[sites[0]][1], spec, cfg), spec, frames[sites[0]][0]


def test_private_run_sends_noisy_statistics_with_declared_levels(heart):
    """Issue 15, defect 8: a private run's preprocessing statistics go through DP too."""
    import json

    from .conftest import make_cfg

    client, spec, train = _site(heart, make_cfg(privacy={"mode": "dp-sgd", "epsilon": 5.0}))
    sent = json.loads(client.get_properties({"phase": "stats"})["stats"])
    exact = local_stats(train, spec["numeric"], spec["categorical"])
    for c in spec["numeric"]:
        assert sent["numeric"][c]["sum"] != pytest.approx(exact["numeric"][c]["sum"], rel=1e-9)
    assert sent["n"] != len(train)
    for c in spec["categorical"]:  # declared levels, not the ones this site happens to have
        assert sent["categorical"][c] == spec["levels"][c]
    # the server cannot lower the noise by asking: the request carries no privacy setting
    again = json.loads(client.get_properties({"phase": "stats", "stats_noise": 0})["stats"])
    assert again["n"] != len(train)
    # a run that is not private keeps exact statistics
    plain, _, _ = _site(heart, make_cfg())
    assert json.loads(plain.get_properties({"phase": "stats"})["stats"])["n"] == len(train)


def test_private_statistics_still_standardise(heart):
    from healthtransfer.federated._preprocess import private_stats

    spec, sites, frames = heart
    rng = np.random.default_rng(0)
    parts = [private_stats(frames[s][0], spec["numeric"], spec["categorical"],
                           bounds=spec["bounds"], levels=spec["levels"], noise_multiplier=3.0,
                           rng=rng) for s in sites]
    prep = FederatedPreprocessor(merge_stats(parts))
    pooled = pd.concat([frames[s][0] for s in sites])
    for c in ("age", "thalach"):
        assert prep.mean[c] == pytest.approx(pooled[c].mean(), rel=0.05)
    assert np.isfinite(prep.transform(pooled)).all()


def test_private_statistics_need_declared_bounds():
    from healthtransfer.errors import UserInputError
    from healthtransfer.federated._preprocess import private_stats

    with pytest.raises(UserInputError, match="declare"):
        private_stats(pd.DataFrame({"x": [1.0]}), ["x"], [], bounds={}, levels={},
                      noise_multiplier=1.0)
