"""Survival and regression studies from a TOML: errors, run, report, bundle and service."""

import json

import numpy as np
import pandas as pd
import pytest

from healthtransfer.errors import UserInputError
from healthtransfer.methods.survival import make_survival_domains
from healthtransfer.study.config import load_study
from healthtransfer.study.run import run_study


def _survival_csv(tmp_path, **changes):
    X, y, d = make_survival_domains(n_source=200, n_target=160, random_state=0)
    f = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
    f["site"] = np.where(d > 0, "north", "south")
    f["days"], f["died"] = y["time"].round(3), y["event"].astype(int)
    f["pid"] = np.arange(len(f))
    for col, (rows, value) in changes.items():
        f[col] = f[col].astype(object)
        f.loc[rows, col] = value
    path = tmp_path / "cohort.csv"
    f.to_csv(path, index=False)
    return path


def _study(tmp_path, data: dict, methods, budgets=(0, 40), seeds=1) -> "Path":
    def val(v):
        return json.dumps(v) if not isinstance(v, dict) else "{ " + ", ".join(f"{k} = {json.dumps(x)}" for k, x in v.items()) + " }"
    lines = ["[study]", 'name = "t"', "", "[data]", *[f"{k} = {val(v)}" for k, v in data.items()], "",
             "[transfer]", 'sources = ["north"]', 'target = "south"', f"labeled_target = {list(budgets)}",
             f"seeds = {seeds}", f"methods = {json.dumps(methods)}", "", "[selection]", "folds_source = 2",
             "folds_target = 2"]
    p = tmp_path / "study.toml"
    p.write_text("\n".join(lines))
    return p


BASE = {"path": "cohort.csv", "domain": "site", "group": "pid", "time": "days", "event": "died", "horizons": [1.0, 3.0]}


@pytest.mark.parametrize("data,match", [
    ({"time": "days"}, "both `time` and `event`"),
    ({"time": "days", "event": "died"}, "needs `horizons`"),
    ({"time": "days", "event": "died", "horizons": [-1]}, "positive"),
    ({"task": "survival", "label": "died"}, "needs `time` and `event`"),
    ({"label": "died", "horizons": [3]}, "only apply to a survival study"),
])
def test_study_file_errors(tmp_path, data, match):
    p = _study(tmp_path, {"path": "cohort.csv", "domain": "site", **data}, ["source_cox"])
    with pytest.raises(UserInputError, match=match):
        load_study(p)


@pytest.mark.parametrize("changes,data,match", [
    ({"days": ([3, 7], -2.0)}, {}, "negative"),
    ({"died": ([5], 2)}, {}, "0 \\(censored\\) or 1"),
    ({"died": (slice(None), 0)}, {}, "every row is censored"),
    ({"days": ([4], "ten")}, {}, "non-numeric"),
    ({}, {"horizons": [1.0, 500.0]}, "beyond the follow-up at target site 'south'"),
])
def test_bad_outcome_data_is_refused_before_any_fit(tmp_path, changes, data, match):
    _survival_csv(tmp_path, **changes)
    study = load_study(_study(tmp_path, {**BASE, **data}, ["source_cox"]))
    with pytest.raises(UserInputError, match=match):
        run_study(study, progress=False)


def test_survival_methods_refuse_a_regression_study(tmp_path):
    _survival_csv(tmp_path)
    study = load_study(_study(tmp_path, {"path": "cohort.csv", "domain": "site", "label": "days",
                                         "task": "regression"}, ["source_cox"]))
    with pytest.raises(UserInputError, match="do not fit a regression outcome"):
        run_study(study, progress=False)


@pytest.fixture(scope="module")
def survival_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("surv")
    _survival_csv(tmp)
    study = load_study(_study(tmp, BASE, ["source_cox", "pooled_cox", "recalibrated_cox", "coral_cox", "source_gbsurv"]))
    return tmp, run_study(study, progress=False, keep_predictions=True)


def test_survival_study_records(survival_run):
    _, res = survival_run
    df = res.frame()
    assert set(df["method"]) == {"source_cox", "pooled_cox", "recalibrated_cox", "coral_cox", "source_gbsurv", "selected"}
    assert df["c_harrell"].between(0, 1).all() and df["ibs"].between(0, 0.5).all()
    assert {"auc_1", "auc_3", "oe_1", "oe_3"} <= set(df.columns)
    # label-free methods give the same model at every budget; pooled needs labels
    assert not ((df["method"] == "pooled_cox") & (df["n_labeled"] == 0)).any()
    assert [s["criterion"] for s in res.selections][0] == "iw_source_cv"


def test_survival_report_bundle_and_service(survival_run, tmp_path):
    from fastapi.testclient import TestClient

    from healthtransfer.bundle._outcome import load_outcome_bundle
    from healthtransfer.reports.outcome_report import write_outcome_outputs
    from healthtransfer.serve.app import create_app

    _, res = survival_run
    report = write_outcome_outputs(res, tmp_path / "out")
    html = report.read_text()
    assert "Kaplan-Meier curves per site" in html and "observed/expected" in html
    out = json.loads((tmp_path / "out" / "results.json").read_text())
    assert out["outcome"]["horizons"] == [1.0, 3.0]
    b = load_outcome_bundle(tmp_path / "out" / "bundle" / "south")
    recs = [{"x0": 2.0, "x1": 1.0, "x2": 0.0, "x3": 0.0}, {"x0": -1.0, "x1": -1.0, "x2": 0.0, "x3": 0.0}]
    pred = b.predict_outcome(recs)
    assert set(pred[0]["risk"]) == {"1", "3"}
    for p in pred:  # risk grows with the horizon; the curve never rises
        assert 0 <= p["risk"]["1"] <= p["risk"]["3"] <= 1
        assert np.all(np.diff(p["curve"]["survival"]) <= 1e-12)
    from healthtransfer.serve import keys_add

    key = keys_add(tmp_path / "keys.json", "ward", ["predict"])
    client = TestClient(create_app(tmp_path / "out" / "bundle" / "south", api_keys_file=tmp_path / "keys.json",
                                   audit_url=str(tmp_path / "audit.sqlite"), allow_unsigned=True),
                        base_url="http://localhost")
    assert client.post("/v1/predict", json={"records": recs}).status_code == 401  # closed by default
    r = client.post("/v1/predict", json={"records": recs}, headers={"X-API-Key": key})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"][0]["risk"] == pytest.approx(pred[0]["risk"])


def test_tampered_outcome_bundle_is_refused(survival_run, tmp_path):
    from healthtransfer.bundle import BundleError
    from healthtransfer.bundle._outcome import load_outcome_bundle
    from healthtransfer.reports.outcome_report import write_outcome_outputs

    _, res = survival_run
    write_outcome_outputs(res, tmp_path / "o")
    model = tmp_path / "o" / "bundle" / "south" / "model.json"
    m = json.loads(model.read_text())
    m["coef"] = [10.0 * c for c in m["coef"]]
    model.write_text(json.dumps(m))
    with pytest.raises(BundleError, match="model.json is (truncated|changed)|modified"):
        load_outcome_bundle(tmp_path / "o" / "bundle" / "south")


def test_regression_study_end_to_end(tmp_path):
    from healthtransfer.bundle._outcome import load_outcome_bundle
    from healthtransfer.reports.outcome_report import write_outcome_outputs

    rng = np.random.default_rng(0)
    n = 360
    f = pd.DataFrame(rng.normal(size=(n, 3)), columns=["a", "b", "c"])
    f["site"] = np.where(np.arange(n) < 200, "north", "south")
    f["los"] = np.exp(0.5 * f["a"] + 0.3 * f["b"] + rng.normal(scale=0.4, size=n) + (f["site"] == "south") * 0.3)
    f.to_csv(tmp_path / "cohort.csv", index=False)
    study = load_study(_study(tmp_path, {"path": "cohort.csv", "domain": "site", "label": "los", "transform": "log"},
                              ["source_ridge", "pooled_ridge", "finetune_ridge", "iw_ridge"]))
    res = run_study(study, progress=False, keep_predictions=True)
    assert res.outcome.kind == "regression" and res.outcome.inferred
    df = res.frame()
    assert (df["mae"] > 0).all() and (df["r2"] <= 1).all()
    write_outcome_outputs(res, tmp_path / "out")
    b = load_outcome_bundle(tmp_path / "out" / "bundle" / "south")
    p = b.predict_outcome([{"a": 0.0, "b": 0.0, "c": 0.0}])[0]
    lo, hi = p["interval"]
    assert 0 < lo < p["prediction"] < hi
    assert "Outcome distribution per site" in (tmp_path / "out" / "report.html").read_text()


def test_cli_run_writes_the_outcome_report_and_bundle(tmp_path):
    from typer.testing import CliRunner

    from healthtransfer.cli import app

    _survival_csv(tmp_path)
    p = _study(tmp_path, BASE, ["source_cox", "recalibrated_cox"], budgets=(0, 40))
    r = CliRunner().invoke(app, ["run", str(p), "--out", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    assert "c_harrell" in r.output
    assert (tmp_path / "out" / "report.html").is_file() and (tmp_path / "out" / "bundle" / "south" / "model.json").is_file()


def test_outcome_bundle_per_target_holds_the_reported_model(survival_run, tmp_path):
    from healthtransfer.reports.outcome_report import write_outcome_outputs

    _, res = survival_run
    write_outcome_outputs(res, tmp_path / "out")
    out = json.loads((tmp_path / "out" / "results.json").read_text())
    fm, chk = out["finals"]["south"], out["deployment_check"]["south"]
    assert chk["passed"] and chk["max_abs_difference"] <= 1e-9 and chk["method"] == fm["method"]
    assert chk["bundle_dir"] == "bundle/south"
    training = json.loads((tmp_path / "out" / "bundle" / "south" / "training.json").read_text())
    metrics = json.loads((tmp_path / "out" / "bundle" / "south" / "metrics.json").read_text())
    assert training["method"] == fm["method"] and training["seed"] == fm["seed"]
    # the numbers the report prints are this object's run record, and the bundle's
    rec = next(r for r in res.records if r["method"] == fm["method"] and r["seed"] == fm["seed"]
               and r["n_labeled"] == fm["n_labeled"])
    assert metrics["overall"]["c_harrell"] == fm["evaluation"]["c_harrell"] == rec["c_harrell"]
    assert "Final model per target" in (tmp_path / "out" / "report.html").read_text()


def test_every_candidate_bundle_reproduces_it_and_another_model_fails(survival_run, tmp_path):
    """CORAL's map has an intercept and boosted Cox is trees: each bundle must still give the
    same risks; a bundle that holds another candidate's numbers fails the deployment check."""
    import copy

    from healthtransfer.bundle._outcome import export_model, write_outcome_bundle
    from healthtransfer.study.outcome_final import finalise_outcome, outcome_deployment_check

    _, res = survival_run
    res = copy.copy(res)
    fm = finalise_outcome(res)["south"]
    unit = next(u for u in res.shipped if u["seed"] == fm.seed and u["n_labeled"] == fm.n_labeled)
    X = fm.features(res.dataset.frame.iloc[fm.eval_positions])
    assert export_model(unit["models"]["source_gbsurv"], "survival", X)["form"] == "trees"
    for name, est in unit["models"].items():
        one = copy.copy(fm)
        one.method, one.model, one.export = name, est, export_model(est, "survival", X)
        one.evaluation = {**unit["records"][name], "rows": fm.evaluation["rows"]}
        write_outcome_bundle(one, res, tmp_path / name)
        chk = outcome_deployment_check(one, tmp_path / name, res)
        assert chk["passed"], (name, chk)
    other = next(n for n in unit["models"] if n != fm.method)
    wrong = copy.copy(fm)
    wrong.export = export_model(unit["models"][other], "survival", X)
    write_outcome_bundle(wrong, res, tmp_path / "wrong")
    chk = outcome_deployment_check(wrong, tmp_path / "wrong", res)
    assert not chk["passed"] and chk["max_abs_difference"] > 1e-6


def test_a_bundle_that_does_not_reproduce_its_model_writes_nothing(survival_run, tmp_path, monkeypatch):
    import copy

    from healthtransfer.reports.outcome_report import write_outcome_outputs
    from healthtransfer.study import outcome_final

    _, res = survival_run
    res = copy.copy(res)
    fm = outcome_final.finalise_outcome(res)["south"]
    fm.export = {**fm.export, "coef": [c * 1.01 for c in fm.export["coef"]]}
    with pytest.raises(UserInputError, match="does not reproduce"):
        write_outcome_outputs(res, tmp_path / "out")
    assert not (tmp_path / "out" / "report.html").exists() and not (tmp_path / "out" / "bundle").exists()


def test_malformed_trees_are_refused():
    from healthtransfer.bundle import BundleError
    from healthtransfer.bundle._outcome import _check_trees

    tree = {"left": [1, -1, -1], "right": [2, -1, -1], "feature": [0, -2, -2], "threshold": [0.0, 0, 0],
            "value": [0.0, -1.0, 1.0]}
    _check_trees({"trees": [tree], "learning_rate": 0.1}, 2, "t")
    for bad in ({"left": [0, -1, -1]}, {"feature": [5, -2, -2]}, {"value": [0.0]}):
        with pytest.raises(BundleError, match="malformed"):
            _check_trees({"trees": [{**tree, **bad}], "learning_rate": 0.1}, 2, "t")


def test_a_survival_model_on_the_reference_score_ships_with_the_score_as_a_required_input(tmp_path):
    from healthtransfer.bundle._outcome import load_outcome_bundle
    from healthtransfer.reports.outcome_report import write_outcome_outputs

    path = _survival_csv(tmp_path)
    f = pd.read_csv(path)
    lp = 0.8 * f["x0"] - 0.4 * np.maximum(f["x0"], 0) ** 2 + 0.5 * f["x1"]
    f["risk"] = (1 / (1 + np.exp(-(lp - 1.0)))).round(4)  # an existing score that ranks well
    f.to_csv(path, index=False)
    study = load_study(_study(tmp_path, {**BASE, "reference_score": "risk"}, ["source_cox", "reference_cox"]))
    res = run_study(study, progress=False)
    assert [s["bar"] for s in res.selections] == ["reference_cox", "reference_cox"]
    write_outcome_outputs(res, tmp_path / "out")
    out = json.loads((tmp_path / "out" / "results.json").read_text())
    assert out["finals"]["south"]["method"] == "reference_cox" and out["deployment_check"]["south"]["passed"]
    b = load_outcome_bundle(tmp_path / "out" / "bundle" / "south")
    spec = b.feature_specs["risk"]
    assert spec["required"] and spec["role"] == "reference_score"
    rec = {"x0": 1.0, "x1": 0.0, "x2": 0.0, "x3": 0.0}
    low, high = b.predict_outcome([{**rec, "risk": 0.05}, {**rec, "risk": 0.6}])
    assert low["risk"]["3"] < high["risk"]["3"]
    with pytest.raises(UserInputError, match="lack the reference score"):
        b.predict_outcome([rec])
