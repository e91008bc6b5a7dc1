"""Property: a random multi-site table harmonised in memory and streamed from Parquet in random
batches gives the same values and the same report (both paths call the one rule engine)."""

import os
import tempfile

import numpy as np
import pandas as pd
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from healthtransfer.data._batches import _harmonise_batch
from healthtransfer.data.harmonise import harmonise
from healthtransfer.data.schema import DatasetSchema
from healthtransfer.data.streaming import streaming_harmonisation_report

SITES = ["a", "b", "c", "d"]
# raw values: plain, sentinels (-1, 999), out of range (> 300), missing
NUMBERS = st.sampled_from([1.0, 2.0, 55.5, 120.0, 250.0, -1.0, 999.0, 400.0, 0.0, np.nan])
CODES = st.sampled_from(["1", "2", "m", "f", "9", "NA", None])


@st.composite
def tables(draw):
    n = draw(st.integers(1, 40))
    sites = draw(st.lists(st.sampled_from(SITES), min_size=n, max_size=n))
    raw = {"site": sites, "y": draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))}
    for col in ("x", "temp", "r_raw"):
        raw[col] = draw(st.lists(NUMBERS, min_size=n, max_size=n))
    raw["cnt"] = draw(st.lists(st.integers(-1, 500), min_size=n, max_size=n))
    raw["sex"] = draw(st.lists(CODES, min_size=n, max_size=n))
    frame = pd.DataFrame(raw)
    frame["x"] = frame["x"].astype(draw(st.sampled_from(["float64", "float32"])))
    # a raw column may be missing from the export altogether
    drop = draw(st.lists(st.sampled_from(["x", "temp", "r_raw", "cnt", "sex"]), unique=True, max_size=2))
    frame = frame.drop(columns=drop)
    site_rules = {}
    for s in SITES:
        rules = {}
        if draw(st.booleans()):
            rules["missing_values"] = {"x": draw(st.sampled_from([[-1], [999], [-1, "999"], ["NA"]])),
                                       "cnt": [-1], "sex": ["NA"]}
        if draw(st.booleans()):
            rules["units"] = {"temp": {"from_unit": "F", "factor": 0.5556, "offset": -17.78}}
        if draw(st.booleans()):
            rules["code_maps"] = {"sex": {"1": "m", "2": "f"}}
        if draw(st.booleans()):
            rules["rename"] = {"r_raw": "r"}
        site_rules[s] = rules
    schema = DatasetSchema.model_validate({
        "name": "prop", "label": "y", "domain": "site",
        "features": [{"name": "x", "range": [0, 300]}, {"name": "temp", "range": [-50, 200]},
                     {"name": "r"}, {"name": "cnt", "range": [0, 300]},
                     {"name": "sex", "kind": "categorical", "categories": ["m", "f"]},
                     {"name": "never"}],
        "sites": site_rules,
    })
    return frame, schema, draw(st.integers(1, 15))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables())
def test_streamed_and_in_memory_harmonisation_agree(case):
    frame, schema, batch_rows = case
    table, report = harmonise(frame, schema)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "t.parquet")
        frame.to_parquet(path, index=False)
        streamed = streaming_harmonisation_report(path, schema, batch_rows=batch_rows)
    pd.testing.assert_frame_equal(streamed.rows.reset_index(drop=True), report.rows.reset_index(drop=True))
    # the values, batch by batch, equal the in-memory table's rows
    numeric = ["x", "temp", "r", "cnt", "never"]
    batch = pa.RecordBatch.from_pandas(frame, preserve_index=False)
    for start in range(0, len(frame), batch_rows):
        part = batch.slice(start, batch_rows)
        h = _harmonise_batch(part, schema, numeric, source="t")
        expect = table.iloc[start:start + batch_rows][numeric].to_numpy(float)
        np.testing.assert_array_equal(h.X, expect)
        np.testing.assert_array_equal(np.array(h.sites)[h.codes], frame["site"].iloc[start:start + batch_rows])
