import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from healthtransfer.data import DatasetSchema, harmonise, load_dataset
from healthtransfer.errors import UserInputError

SCHEMA = DatasetSchema.model_validate({
    "name": "toy", "label": "y", "domain": "site",
    "features": [
        {"name": "chol", "unit": "mg/dL", "range": [50, 700]},
        {"name": "temp", "unit": "C", "range": [30, 45]},
        {"name": "cp", "kind": "categorical", "categories": ["typical", "atypical"]},
    ],
    "sites": {
        "*": {"missing_values": {"chol": [0]}},
        "us": {"rename": {"TEMP_F": "temp"}, "units": {"temp": {"from_unit": "F", "factor": 0.5555555556, "offset": -17.7777777778}},
               "code_maps": {"cp": {"1": "typical", "2": "atypical"}}},
        "eu": {"missing_values": {"temp": [-1]}},
    },
})


def _raw():
    return pd.DataFrame({
        "site": ["us", "us", "us", "eu", "eu", "eu"],
        "chol": [0, 200, 900, 180, np.nan, 250],
        "TEMP_F": [98.6, 102.2, np.nan, np.nan, np.nan, np.nan],
        "temp": [np.nan, np.nan, np.nan, 37.0, -1, 50],
        "cp": ["1", "2", "3", "typical", "atypical", "weird"],
        "y": [0, 1, 0, 1, 0, 1],
    })


def test_each_rule_is_applied_and_counted():
    raw = _raw().drop(columns=["temp"]).iloc[:3]
    raw = pd.concat([raw, _raw().drop(columns=["TEMP_F"]).iloc[3:]])
    table, report = harmonise(raw, SCHEMA)
    rows = report.rows.set_index(["site", "column"])
    us, eu = table[table.site == "us"], table[table.site == "eu"]
    assert us["temp"].round(1).tolist()[:2] == [37.0, 39.0]  # Fahrenheit converted
    assert rows.loc[("us", "temp"), "n_converted"] == 2
    assert rows.loc[("us", "chol"), "n_sentinel"] == 1  # chol = 0
    assert rows.loc[("us", "chol"), "n_out_of_range"] == 1  # chol = 900
    assert us["cp"].tolist()[:2] == ["typical", "atypical"]
    assert rows.loc[("us", "cp"), "n_unmapped"] == 1  # code "3"
    assert rows.loc[("eu", "temp"), "n_sentinel"] == 1  # -1 at eu
    assert rows.loc[("eu", "temp"), "n_out_of_range"] == 1  # 50 C
    assert rows.loc[("eu", "cp"), "n_unmapped"] == 1  # "weird"
    assert eu["chol"].isna().sum() == 1
    assert rows.loc[("eu", "chol"), "missing_share"] == pytest.approx(1 / 3)


def test_absent_column_is_reported():
    raw = _raw().drop(columns=["TEMP_F", "temp"])
    _, report = harmonise(raw, SCHEMA)
    assert report.absent() == {"us": ["temp"], "eu": ["temp"]}
    assert any("absent columns: temp" in line for line in report.summary_lines())


def test_text_in_numeric_column_names_site_and_column_not_values():
    raw = _raw()
    raw["chol"] = raw["chol"].astype(object)
    raw.loc[4, "chol"] = "secret-value-123"
    with pytest.raises(UserInputError) as err:
        harmonise(raw, SCHEMA)
    msg = str(err.value)
    assert "'chol'" in msg and "'eu'" in msg and "Fix" in msg
    assert "secret-value-123" not in msg


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=False, width=32),
                          st.sampled_from([0, 0.0, "0"])), min_size=1, max_size=30))
def test_property_range_and_sentinel_never_leak(values):
    """Whatever numbers a site sends, harmonised chol is NaN or inside the allowed range, and
    the counts add up."""
    raw = pd.DataFrame({"site": "eu", "chol": values, "y": 0})
    table, report = harmonise(raw, SCHEMA)
    chol = table["chol"].to_numpy(float)
    ok = np.isnan(chol) | ((chol >= 50) & (chol <= 700))
    assert ok.all()
    r = report.rows.set_index("column").loc["chol"]
    observed = pd.to_numeric(pd.Series(values), errors="coerce").notna().sum()
    assert r.n_sentinel + r.n_out_of_range + np.isfinite(chol).sum() == observed


def test_uci_heart_harmonisation_report():
    ds = load_dataset("uci_heart")
    rows = ds.report.rows.set_index(["site", "column"])
    assert rows.loc[("switzerland", "chol"), "n_sentinel"] == 123
    assert rows.loc[("va", "chol"), "n_sentinel"] == 49
    assert rows.loc[("va", "trestbps"), "n_sentinel"] == 1
    assert ds.report.absent()["switzerland"] == ["chol"]
    assert ds.site("switzerland")["chol"].isna().all()
