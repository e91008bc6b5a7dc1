"""A model that recalibrates APACHE IV ships with the score as a declared, required input.

Real data: the eICU demo (Midwest -> South) from ``HEALTHTRANSFER_DATA``. The study is
``examples/eicu_midwest_to_south.toml`` with its reference-score methods and the source
baseline only, and two seeds, so it runs in about a minute.
"""

import math
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("skops")

from fastapi.testclient import TestClient  # noqa: E402

from healthtransfer.bundle import load_bundle  # noqa: E402
from healthtransfer.errors import UserInputError  # noqa: E402
from healthtransfer.serve import create_app, keys_add  # noqa: E402
from healthtransfer.study import load_study  # noqa: E402
from healthtransfer.study.final import finalise  # noqa: E402
from healthtransfer.study.outputs import write_study_outputs  # noqa: E402
from healthtransfer.study.run import run_study  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "eicu_midwest_to_south.toml"
DATA = Path(os.environ["HEALTHTRANSFER_DATA"])  # set in conftest.py
pytestmark = [pytest.mark.skipif(not (DATA / "eicu_demo").is_dir(), reason="eICU demo data not staged"),
              pytest.mark.slow]


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    study = load_study(EXAMPLE)
    study.transfer.methods = ["source_lr", "reference_recalibration", "reference_boosting"]
    study.transfer.seeds = 2
    study.transfer.labeled_target = [200]
    study.selection.diagnose = False
    result = run_study(study, data_dir=DATA, progress=False)
    finalise(result)
    out = tmp_path_factory.mktemp("eicu")
    write_study_outputs(result, out)
    keys = out / "keys.json"
    key = keys_add(keys, "clinic", ["predict", "read"])
    return {"result": result, "final": result.finals["South"], "bundle": out / "bundle" / "South",
            "keys": keys, "key": key, "out": out}


def _records(s, n=3):
    ds, fm = s["result"].dataset, s["final"]
    rows = ds.frame.iloc[fm.eval_positions[:n]]
    recs = []
    for _, r in rows[fm.inputs].iterrows():
        recs.append({k: (None if isinstance(v, float) and math.isnan(v) else
                         (v.item() if hasattr(v, "item") else v)) for k, v in r.items()})
    return rows, recs


def test_the_recommended_reference_model_ships_with_the_score_declared(shipped):
    fm = shipped["final"]
    assert fm.reference_input is not None and fm.candidate.startswith("reference_")
    spec = load_bundle(shipped["bundle"]).feature_specs["apache_iv"]
    assert spec["required"] is True and spec["range"] == [0.0, 1.0] and "apache_iv" in spec["description"]
    check = shipped["result"].deployment["South"]
    assert check["passed"] and check["max_abs_difference"] <= 1e-9


def test_serve_answers_with_the_score_and_refuses_without_it(shipped):
    app = create_app(shipped["bundle"], api_keys_file=shipped["keys"], audit_url=shipped["out"] / "audit.sqlite",
                     allow_unsigned=True)  # the bundle this test just wrote: origin known
    client = TestClient(app, base_url="http://localhost")
    head = {"X-API-Key": shipped["key"]}
    rows, recs = _records(shipped)
    ok = client.post("/v1/predict", json={"records": recs}, headers=head)
    assert ok.status_code == 200, ok.text
    got = np.array([p["probability"] for p in ok.json()["predictions"]])
    want = shipped["final"].predict_risk(rows)
    assert np.allclose(got, want, rtol=0, atol=1e-12)

    without = {k: v for k, v in recs[0].items() if k != "apache_iv"}
    bad = client.post("/v1/predict", json={"record": without}, headers=head)
    assert bad.status_code == 422
    err = bad.json()["errors"][0]
    assert err["loc"][-1] == "apache_iv" and err["type"] == "missing" and "required" in err["expected"]
    assert "input" not in err  # the error names the field, never echoes patient values

    null = client.post("/v1/predict", json={"record": {**recs[0], "apache_iv": None}}, headers=head)
    assert null.status_code == 422
    out_of_range = client.post("/v1/predict", json={"record": {**recs[0], "apache_iv": 1.5}}, headers=head)
    assert out_of_range.status_code == 422


def test_python_callers_get_a_clear_error_not_a_fallback(shipped):
    b = load_bundle(shipped["bundle"])
    _, recs = _records(shipped, 1)
    with pytest.raises(UserInputError, match="apache_iv"):
        b.predict_risk([{k: v for k, v in recs[0].items() if k != "apache_iv"}])


def test_the_service_uses_the_compiled_path_for_the_reference_model(shipped):
    from healthtransfer.serve._fast import Predictor

    b = load_bundle(shipped["bundle"])
    p = Predictor(b)
    assert p.path == "compiled", p.reason
    _, recs = _records(shipped, 20)
    assert np.max(np.abs(p.predict_proba(recs) - b.predict_proba(recs))) <= 1e-9
