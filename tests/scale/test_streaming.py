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


# -- the vectorised batch harmonisation equals harmonise() -------------------------------------
RICH = DatasetSchema.model_validate({
    "name": "rich", "label": "y", "domain": "site",
    "features": [
        {"name": "hr", "range": [20, 250]},
        {"name": "temp", "range": [30, 43]},
        {"name": "lab64", "range": [0, 50]},
        {"name": "count_int", "range": [0, 10]},  # stored as integers: goes through harmonise
        {"name": "coded_num", "kind": "numeric"},  # code map on a numeric feature
        {"name": "flag", "kind": "binary"},
        {"name": "adm", "kind": "categorical", "categories": ["med", "surg"]},
        {"name": "never"},
    ],
    "sites": {"*": {"missing_values": {"lab64": [999, "999.0", "NA"]}},
              "a": {"missing_values": {"hr": [-1, "-1"], "temp": [0.5]}},
              "b": {"units": {"temp": {"from_unit": "F", "factor": 5 / 9, "offset": -160 / 9}},
                    "rename": {"heart_rate": "hr"}},
              "c": {"code_maps": {"adm": {"1": "med", "2": "surg"}, "coded_num": {"7": 70}},
                    "missing_values": {"flag": [True]}}},
})


def _rich_batch(n, seed):
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    site = rng.choice(["c", "a", "b"], size=n)
    hr = rng.normal(80, 30, n).round().astype(np.float32)
    hr[rng.random(n) < 0.05] = -1
    hr[rng.random(n) < 0.1] = np.nan
    heart_rate = np.where(site == "b", hr, np.nan).astype(np.float32)
    hr[site == "b"] = np.nan
    temp = np.where(site == "b", rng.normal(98.6, 3, n), rng.normal(37, 3, n)).astype(np.float32)
    temp[rng.random(n) < 0.05] = 0.5
    lab64 = rng.gamma(2, 5, n)
    lab64[rng.random(n) < 0.05] = 999
    count_int = rng.integers(-2, 13, n)
    coded_num = rng.choice([7.0, 8.0, np.nan], n)
    flag = rng.choice([0.0, 1.0, np.nan], n)
    adm = np.where(site == "c", rng.choice(["1", "2", "3"], n), rng.choice(["med", "surg", "x"], n)).astype(object)
    adm[rng.random(n) < 0.1] = None
    return pa.record_batch({
        "site": pa.array(site), "y": pa.array(rng.integers(0, 2, n)), "hr": pa.array(hr),
        "heart_rate": pa.array(heart_rate), "temp": pa.array(temp), "lab64": pa.array(lab64),
        "count_int": pa.array(count_int), "coded_num": pa.array(coded_num), "flag": pa.array(flag),
        "adm": pa.array(adm, pa.string()),
    })


@pytest.mark.parametrize("seed", [0, 1])
def test_batch_harmonisation_equals_harmonise(seed):
    from healthtransfer.data.streaming import _harmonise_arrow, _harmonise_pandas, _records

    batch = _rich_batch(5000, seed)
    want = ["hr", "temp", "lab64", "count_int", "coded_num", "flag", "never"]
    fast = _harmonise_arrow(batch, RICH, want, "x")
    assert fast is not None  # the batch path applies
    table, rep = harmonise(batch.to_pandas(), RICH, source="x")
    assert fast.records == _records(rep)
    assert fast.sites == list(dict.fromkeys(rep.rows["site"]))
    np.testing.assert_array_equal(fast.X, table[want].to_numpy(float))
    np.testing.assert_array_equal(np.array(fast.sites)[fast.codes], table["site"].to_numpy(str))
    ref, _ = _harmonise_pandas(batch.to_pandas(), RICH, want, "x")
    np.testing.assert_array_equal(fast.X, ref.X)


def test_batch_harmonisation_falls_back_for_errors():
    import pyarrow as pa

    from healthtransfer.data.streaming import _harmonise_batch
    from healthtransfer.errors import UserInputError

    batch = _rich_batch(500, 0)
    hr = batch.column("hr").to_numpy(zero_copy_only=False).copy()
    hr[np.flatnonzero(batch.column("site").to_numpy(zero_copy_only=False) == "a")[0]] = np.inf
    bad = batch.set_column(batch.schema.get_field_index("hr"), "hr", pa.array(hr))
    with pytest.raises(UserInputError, match="infinite") as err:
        _harmonise_batch(bad, RICH, source="x")
    assert "column 'hr' at site 'a'" in str(err.value) and "inf" not in str(err.value).replace("infinite", "")
    # site b holding values in both 'heart_rate' and 'hr': the rename clash is reported
    both = batch.set_column(batch.schema.get_field_index("hr"), "hr",
                            pa.array(np.full(batch.num_rows, 80.0, np.float32)))
    with pytest.raises(UserInputError, match="both 'heart_rate' and 'hr'"):
        _harmonise_batch(both, RICH, source="x")


def test_is_sentinel_numeric_fast_path_matches_text_rule():
    from healthtransfer.data._rules import _as_text, _is_sentinel

    def reference(values, sentinels):  # the rule as written for any dtype: text or number
        text = _as_text(values.astype(object))
        as_num = pd.to_numeric(values, errors="coerce")
        hit = pd.Series(False, index=values.index)
        for s in sentinels:
            hit |= text == str(s)
            try:
                hit |= as_num == float(s)
            except (TypeError, ValueError):
                pass
        return hit.fillna(False).to_numpy(dtype=bool)

    rng = np.random.default_rng(0)
    vals = np.r_[rng.choice([-1, 0, 0.5, 0.1, 999, 1e20, 2.5], 200), np.nan]
    sentinels = [-1, "-1", 999.0, "999", "0.1", 0.5, "NA", True, 1e20, "inf"]
    for dtype in (np.float64, np.float32):
        s = pd.Series(vals.astype(dtype))
        np.testing.assert_array_equal(_is_sentinel(s, sentinels), reference(s, sentinels))
    s = pd.Series(rng.integers(-2, 3, 100))
    np.testing.assert_array_equal(_is_sentinel(s, [-1, "1", "x"]), reference(s, [-1, "1", "x"]))


def test_shift_summary_auroc_does_not_depend_on_batching(parquet):
    """Held-out rows are a uniform sample scored by the final classifier, so the AUROC is the
    same whatever the batch size (it used to score early rows with a half-trained model)."""
    d, _ = parquet
    a = streaming_shift_summary(d, SCHEMA, ["a"], "c", batch_rows=20_000, n_permutations=0)["domain_classifier"]
    b = streaming_shift_summary(d, SCHEMA, ["a"], "c", batch_rows=100_000, n_permutations=0)["domain_classifier"]
    assert a["n_holdout"] == a["n_holdout_seen"] > 0
    assert abs(a["auroc"] - b["auroc"]) < 0.01


def test_a_column_typed_differently_across_files_names_no_value(tmp_path):
    """pyarrow's cast error can quote a value; ours names the file, column and types only."""
    from healthtransfer.errors import UserInputError

    pd.DataFrame({"site": ["a"], "hr": [80.5]}).to_parquet(tmp_path / "p0.parquet")
    pd.DataFrame({"site": ["a"], "hr": ["eighty-one"]}).to_parquet(tmp_path / "p1.parquet")
    with pytest.raises(UserInputError) as err:
        list(iter_batches(tmp_path, ["site", "hr"]))
    assert "hr" in str(err.value) and "eighty" not in str(err.value)
