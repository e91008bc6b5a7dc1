"""Survival and continuous outcome columns: every bad input gets a clear error."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from healthtransfer.data.outcomes import (check_horizons, infer_task, masked_survival, regression_target,
                                          survival_target)
from healthtransfer.errors import UserInputError


def _frame(times, events, sites=None):
    n = len(times)
    return pd.DataFrame({"t": times, "e": events, "site": sites or ["a"] * n})


def test_structured_target_keeps_order_and_values():
    y = survival_target(_frame([3.0, 1.5, 7.0], [1, 0, 1]), time="t", event="e")
    assert y.dtype.names == ("event", "time")
    assert y["time"].tolist() == [3.0, 1.5, 7.0]
    assert y["event"].tolist() == [True, False, True]


@pytest.mark.parametrize("times,events,match", [
    ([-1.0, 2.0, 3.0], [1, 0, 1], "negative"),
    ([1.0, 2.0, 3.0], [1, 2, 0], "0 \\(censored\\) or 1"),
    ([1.0, 2.0, 3.0], [0, 0, 0], "every row is censored"),
    (["1", "two", "3"], [1, 0, 1], "non-numeric"),
    ([1.0, np.nan, 3.0], [1, 0, 1], "empty"),
    ([1.0, 2.0, 3.0], [1, np.nan, 0], "0 \\(censored\\) or 1"),
])
def test_bad_survival_columns_are_refused(times, events, match):
    with pytest.raises(UserInputError, match=match) as err:
        survival_target(_frame(times, events, ["x", "y", "z"]), time="t", event="e", domain="site")
    assert "Fix:" in str(err.value)


def test_error_names_the_site_but_no_value():
    f = _frame([1.0, -123.456, 3.0], [1, 0, 1], ["north", "south", "north"])
    with pytest.raises(UserInputError) as err:
        survival_target(f, time="t", event="e", domain="site")
    assert "south" in str(err.value) and "123" not in str(err.value)


def test_missing_columns_are_named():
    with pytest.raises(UserInputError, match="'days'"):
        survival_target(_frame([1.0], [1]), time="days", event="e")
    with pytest.raises(UserInputError, match="'died'"):
        survival_target(_frame([1.0], [1]), time="t", event="died")


def test_horizon_beyond_target_follow_up():
    y = survival_target(_frame([1.0, 2, 3, 4, 5, 6, 7, 8], [1, 0, 1, 0, 1, 0, 0, 1]), time="t", event="e")
    check_horizons(y, [2.0], "south")
    with pytest.raises(UserInputError, match="beyond the follow-up at target site 'south'"):
        check_horizons(y, [7.5], "south")


def test_all_censored_target_is_refused():
    y = survival_target(_frame([1.0, 2.0], [1, 0]), time="t", event="e")
    with pytest.raises(UserInputError, match="censored"):
        check_horizons(masked_survival(y, np.array([False, True]))[1:], [1.0], "west")


def test_regression_label_checks():
    f = pd.DataFrame({"los": [1.0, 2.0, 0.0]})
    assert regression_target(f, label="los").tolist() == [1.0, 2.0, 0.0]
    with pytest.raises(UserInputError, match="log1p"):
        regression_target(f, label="los", transform="log")
    with pytest.raises(UserInputError, match="non-numeric"):
        regression_target(pd.DataFrame({"los": ["1", "long"]}), label="los")


def test_task_inference():
    assert infer_task(pd.Series(np.linspace(0, 10, 50))) == "regression"
    assert infer_task(pd.Series([0, 1] * 20)) == "classification"
    assert infer_task(pd.Series(["a", "b"] * 20)) == "classification"


cells = st.one_of(st.floats(allow_nan=True, allow_infinity=False, width=32), st.integers(-5, 5),
                  st.text(max_size=4), st.none(), st.booleans())


@settings(max_examples=200, deadline=None)
@given(times=st.lists(cells, min_size=1, max_size=12), events=st.lists(cells, min_size=1, max_size=12))
def test_parser_accepts_exactly_valid_columns(times, events):
    n = min(len(times), len(events))
    f = pd.DataFrame({"t": pd.Series(times[:n], dtype=object), "e": pd.Series(events[:n], dtype=object)})
    is_flag = f["t"].map(lambda v: isinstance(v, bool))
    t_num = pd.to_numeric(f["t"].where(~is_flag).astype(str).where(f["t"].notna()), errors="coerce")
    try:
        y = survival_target(f, time="t", event="e")
    except UserInputError as exc:
        assert "Fix:" in str(exc)
        return
    # accepted: every time a number >= 0 (never a True/False), every event 0/1 with at least one 1
    assert not is_flag.any()
    assert np.all(y["time"] >= 0) and not np.isnan(y["time"]).any()
    assert y["event"].any()
    assert len(y) == n
    assert np.allclose(y["time"], t_num.to_numpy(float))


def test_eicu_follow_up_and_length_of_stay_columns():
    import os
    from pathlib import Path

    from healthtransfer.data import load_dataset

    data = Path(os.environ["HEALTHTRANSFER_DATA"])  # set in conftest.py
    if not (data / "eicu_demo").is_dir():
        pytest.skip("the staged eICU demo is not here")
    ds = load_dataset("eicu_demo", data_dir=data)
    f = ds.frame
    y = survival_target(f, time="hospital_days", event="death", domain=ds.domain)
    assert len(y) == 1881 and int(y["event"].sum()) == int(f["death"].sum())
    assert (y["time"] > 0).all()
    # follow-up from hospital admission covers the ICU stay
    assert (f["hospital_days"] >= f["icu_days"] - 1e-9).mean() > 0.99
    # APACHE IV's predicted stays exist where its mortality prediction does, and are positive
    assert (f["apache_iv_hospital_los"].dropna() > 0).all()
    assert f["apache_iv_hospital_los"].notna().sum() >= 0.95 * f["apache_iv"].notna().sum()
    assert not {"hospital_days", "icu_days", "apache_iv_hospital_los"} & set(ds.features)
