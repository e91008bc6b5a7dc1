"""A schema input marked ``required`` (an existing score a model recalibrates) is never optional."""

import math

import pytest

pytest.importorskip("pydantic")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from healthtransfer.serve._schemas import record_model, safe_errors  # noqa: E402

SCHEMA = {"features": [
    {"name": "age", "kind": "numeric", "range": [0, 120]},
    {"name": "apache_iv", "kind": "numeric", "unit": "probability", "range": [0.0, 1.0], "required": True,
     "description": "APACHE IV predicted mortality"},
]}
Record = record_model(SCHEMA)
SPECS = {f["name"]: f for f in SCHEMA["features"]}

values = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5),
                   st.text(max_size=5), st.booleans())


@settings(max_examples=300, deadline=None)
@given(age=values, score=values, present=st.booleans())
def test_the_required_score_is_accepted_only_as_a_number_from_0_to_1(age, score, present):
    rec = {"age": age} | ({"apache_iv": score} if present else {})
    ok_score = (present and isinstance(score, (int, float)) and not isinstance(score, bool)
                and math.isfinite(score) and 0 <= score <= 1)
    ok_age = age is None or (isinstance(age, (int, float)) and not isinstance(age, bool)
                             and math.isfinite(age) and 0 <= age <= 120)
    try:
        Record.model_validate(rec)
        accepted = True
    except ValidationError as exc:
        accepted = False
        errs = safe_errors(exc.errors(), SPECS, 10)
        locs = {e["loc"][-1] for e in errs}
        assert ("apache_iv" in locs) == (not ok_score)
        for e in errs:
            assert "input" not in e
            if e["loc"][-1] == "apache_iv":
                assert e["expected"] == "a number from 0 to 1 probability (required)"
    assert accepted == (ok_score and ok_age)
