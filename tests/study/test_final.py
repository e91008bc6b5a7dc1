"""One final model per target: calibrated as evaluated, one bundle each, a deployment check.

A small real study (UCI heart, Cleveland -> Switzerland and VA) runs once per module.
"""

import json

import numpy as np
import pytest

pytest.importorskip("skops")

from healthtransfer.bundle import load_bundle  # noqa: E402
from healthtransfer.evaluation.metrics import score  # noqa: E402
from healthtransfer.study import Study  # noqa: E402
from healthtransfer.study.final import deployment_check, finalise  # noqa: E402
from healthtransfer.study.outputs import bundle_folder, write_study_outputs  # noqa: E402
from healthtransfer.study.run import run_study  # noqa: E402

TARGETS = ["switzerland", "va"]


@pytest.fixture(scope="module")
def study_out(tmp_path_factory):
    study = Study.model_validate({
        "study": {"name": "final-test"},
        "data": {"dataset": "uci_heart", "features": ["age", "sex", "cp", "trestbps", "thalach", "exang", "oldpeak"],
                 "categorical": ["cp"], "subgroups": ["sex"]},
        "transfer": {"sources": ["cleveland"], "target": TARGETS, "seeds": 2, "labeled_target": [0, 40],
                     "methods": ["source_lr", "target_lr", "pooled_lr", "iw_domain_lr"]},
        "selection": {"folds_target": 3, "diagnose": False},
    })
    result = run_study(study, progress=False)
    finalise(result)
    out = tmp_path_factory.mktemp("final")
    write_study_outputs(result, out)
    return result, out


def test_a_bundle_per_target_whose_card_numbers_equal_the_deployment_check(study_out):
    result, out = study_out
    assert sorted(p.name for p in (out / "bundle").iterdir()) == sorted(bundle_folder(t) for t in TARGETS)
    for t in TARGETS:
        fm, path = result.finals[t], out / "bundle" / bundle_folder(t)
        b = load_bundle(path)
        rows = result.dataset.frame.iloc[fm.eval_positions]
        got = score(rows[result.dataset.label].to_numpy().astype(int), b.predict_risk(rows))
        card = b.metrics["overall"]
        for k in ("auroc", "brier", "ece"):
            assert abs(got[k] - card[k]["value"]) <= 1e-9
            assert abs(got[k] - result.deployment[t]["bundle"][k]) <= 1e-9
        assert f"{card['auroc']['value']:.3f}" in b.card
        assert result.deployment[t]["passed"]


def test_the_shipped_model_is_the_evaluated_one_with_its_calibration(study_out):
    result, _ = study_out
    for t in TARGETS:
        fm = result.finals[t]
        rec = fm.evaluation["run_record"]
        for k in ("auroc", "brier", "ece"):  # the run's selected record, re-scored from the object
            assert abs(fm.evaluation[k]["value"] - rec[k]) <= 1e-12
        sel = [r for r in result.records if r["method"] == "selected" and r["target"] == t
               and r["seed"] == fm.seed and r["n_labeled"] == fm.n_labeled][0]
        assert fm.calibration == sel["calibration"]
        assert (fm.model.calibration is None) == (sel["calibration"] == "none")
        if sel["calibration"] != "none":  # calibrated as evaluated: the map changes the risks
            rows = result.dataset.frame.iloc[fm.eval_positions]
            raw = fm.model.estimator.predict_proba(fm.preprocessor.transform(rows[fm.inputs]),
                                                   sample_domain=-np.ones(len(rows), int))[:, 1]
            assert not np.allclose(raw, fm.predict_risk(rows))


def test_training_description_comes_from_what_the_fit_used(study_out):
    result, out = study_out
    for t in TARGETS:
        fm = result.finals[t]
        training = json.loads((out / "bundle" / bundle_folder(t) / "training.json").read_text())
        if fm.training["uses_target"] == "none":  # e.g. source_lr: no target row in the fit
            assert training["domains"] == {"cleveland": 303} and training["n_rows"] == 303
            assert f"reads no {t} data" in training["description"]["text"]
        assert sum(training["domains"].values()) == training["n_rows"] == len(fm.training_frame)


def test_deployment_check_catches_a_bundle_that_is_not_the_evaluated_model(study_out, tmp_path):
    result, out = study_out
    fm = result.finals[TARGETS[1]]
    other = result.finals[TARGETS[0]]
    # the other target's bundle scored on this target's rows: not the reported numbers
    check = deployment_check(fm, out / "bundle" / bundle_folder(TARGETS[0]), result.dataset)
    assert other.candidate and not check["passed"] and check["max_abs_difference"] > 1e-9


def test_report_and_results_say_which_numbers_were_picked_with_test_labels(study_out):
    result, out = study_out
    page = (out / "report.html").read_text()
    assert "Deployment check" in page and "picked with test labels" in page
    assert "Target-sample interval" in page and "Spread over splits" in page
    payload = json.loads((out / "results.json").read_text())
    assert set(payload["final_models"]) == set(TARGETS) and all(c["passed"] for c in payload["deployment_check"].values())
    assert "oracle" in payload["selection_summary"][0]["picked_with_test_labels"]
    assert all("ci" not in v for row in payload["summary"] for v in row.values() if isinstance(v, dict))
