"""Streaming (out-of-core) report and shift summary agree with the in-memory versions."""

import numpy as np
import pandas as pd
import pytest

from healthtransfer.data.harmonise import harmonise
from healthtransfer.data.schema import DatasetSchema
from healthtransfer.data.streaming import (
    iter_batches,
    streaming_feature_stats,
    streaming_harmonisation_report,
    streaming_shift_summary,
)

SCHEMA = DatasetSchema.model_validate({
    "name": "toy", "label": "y", "domain": "site",
    "features": [
        {"name": "chol", "range": [50, 700]},
        {"name": "hr", "range": [20, 250]},
        {"name": "temp"},
        {"name": "sex", "kind": "categorical", "categories": ["m", "f"]},
    ],
    "sites": {"*": {"missing_values": {"chol": [0], "hr": [-1]}},
              "b": {"units": {"temp": {"from_unit": "F", "factor": 0.5556, "offset": -17.78}},
                    "code_maps": {"sex": {"1": "m", "2": "f"}}}},
})


def _raw(n, seed=0):
    rng = np.random.default_rng(seed)
    site = rng.choice(["a", "b", "c"], size=n, p=[0.5, 0.3, 0.2])
    chol = rng.normal(220, 60, n).round()
    chol[rng.random(n) < 0.05] = 0
    chol[rng.random(n) < 0.01] = 900
    hr = rng.normal(80, 15, n) + (site == "c") * 20
    hr[rng.random(n) < 0.05] = -1
    hr[rng.random(n) < 0.1] = np.nan
    temp = np.where(site == "b", rng.normal(98.6, 1, n), rng.normal(37, 0.5, n))
    sex = np.where(site == "b", rng.choice(["1", "2", "9"], n), rng.choice(["m", "f", "x"], n))
    y = (rng.random(n) < 0.3).astype(int)
    return pd.DataFrame(dict(site=site, chol=chol, hr=hr, temp=temp, sex=sex, y=y))


@pytest.fixture(scope="module")
def parquet(tmp_path_factory):
    d = tmp_path_factory.mktemp("pq")
    raw = _raw(300_000)
    # a directory of several files, as a partitioned export would be
    for i, idx in enumerate(np.array_split(np.arange(len(raw)), 3)):
        part = raw.iloc[idx]
        part.to_parquet(d / f"part{i}.parquet", row_group_size=50_000)
    return d, raw


def test_batches_cover_all_rows(parquet):
    d, raw = parquet
    n = sum(len(b) for b in iter_batches(d, ["site"], batch_rows=40_000))
    assert n == len(raw)


def test_streaming_report_equals_harmonise(parquet):
    d, raw = parquet
    _, rep = harmonise(raw, SCHEMA)
    srep = streaming_harmonisation_report(d, SCHEMA, batch_rows=37_000)
    a = rep.rows.sort_values(["site", "column"]).reset_index(drop=True)
    b = srep.rows.sort_values(["site", "column"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-12, check_dtype=False)
    assert srep.summary_lines() == rep.summary_lines() or sorted(srep.summary_lines()) == sorted(rep.summary_lines())


def test_feature_stats_match_pandas(parquet):
    d, raw = parquet
    table, _ = harmonise(raw, SCHEMA)
    st = streaming_feature_stats(d, SCHEMA, batch_rows=50_000).set_index(["site", "feature"])
    for site, part in table.groupby("site"):
        for f in ("chol", "hr", "temp"):
            r = st.loc[(site, f)]
            assert r["n_missing"] == part[f].isna().sum()
            assert r["mean"] == pytest.approx(part[f].mean(), rel=1e-9)
            assert r["var"] == pytest.approx(part[f].var(), rel=1e-7)
            assert r["median"] == pytest.approx(part[f].median(), abs=0.1 * part[f].std())


def test_shift_summary_finds_the_shift(parquet):
    d, raw = parquet
    out = streaming_shift_summary(d, SCHEMA, ["a"], "c", batch_rows=60_000, n_permutations=50)
    feats = out["features"].set_index("feature")
    table, _ = harmonise(raw, SCHEMA)
    a, c = table[table.site == "a"], table[table.site == "c"]
    exact_smd = (c.hr.mean() - a.hr.mean()) / np.sqrt((a.hr.var() + c.hr.var()) / 2)
    assert feats.loc["hr", "smd"] == pytest.approx(exact_smd, rel=1e-6)
    assert out["features"]["feature"].iloc[0] == "hr"  # the shifted feature ranks first
    assert out["domain_classifier"]["auroc"] > 0.7
    assert out["mmd"]["p_value"] < 0.05
    assert out["n_source"] == len(a) and out["n_target"] == len(c)
