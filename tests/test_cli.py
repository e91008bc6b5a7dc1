"""End-to-end: the commands a new user runs."""

import json

import pytest
from typer.testing import CliRunner

from healthtransfer.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    res = runner.invoke(app, ["demo", "--out", str(out), "--seeds", "2", "--jobs", "1"])
    assert res.exit_code == 0, res.output
    return out


def test_demo_writes_results_with_the_promised_shape(demo_out):
    payload = json.loads((demo_out / "results.json").read_text())
    recs = payload["results"]
    assert recs
    for key in ("method", "family", "sources", "target", "n_labeled", "seed", "auroc", "auprc", "brier", "ece"):
        assert all(key in r for r in recs), key
    assert {r["target"] for r in recs} == {"hungarian", "va", "switzerland"}
    assert {r["n_labeled"] for r in recs} == {0, 10, 20, 40}
    assert all(r["sources"] == ["cleveland"] for r in recs)
    methods = {r["method"] for r in recs}
    assert {"source_lr", "source_gbm", "target_lr", "target_gbm", "pooled_lr", "pooled_gbm"} <= methods
    summ = {(s["method"], s["n_labeled"]): s for s in payload["summary"]}
    s = summ[("source_lr", 0)]
    assert s["auroc"]["ci"][0] <= s["auroc"]["mean"] <= s["auroc"]["ci"][1]
    assert 0.6 < s["auroc"]["mean"] < 0.95  # Cleveland's LR transfers, imperfectly
    assert payload["harmonisation"]["rows"]


def test_demo_report_is_self_contained(demo_out):
    page = (demo_out / "report.html").read_text()
    for section in ("Study", "Harmonisation", "Results", "Reproducibility"):
        assert section in page
    assert "data:image/png;base64," in page
    assert "http://" not in page and "https://" not in page.replace("https://doi.org", "")
    assert "<script" not in page


def test_methods_lists_every_family():
    res = runner.invoke(app, ["methods", "--json"])
    assert res.exit_code == 0
    fams = {m["family"] for m in json.loads(res.output)}
    assert "baseline" in fams


def test_data_inspect_builtin():
    res = runner.invoke(app, ["data", "inspect", "--dataset", "uci_heart", "--json"])
    assert res.exit_code == 0
    payload = json.loads(res.output)
    assert payload["dataset"]["rows"] == 920


def test_run_example_study(tmp_path):
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "heart_cleveland_to_va.toml"
    text = example.read_text().replace("seeds = 20", "seeds = 1")
    study = tmp_path / "s.toml"
    study.write_text(text + 'methods = ["source_lr", "pooled_lr"]\n')
    out = tmp_path / "out"
    res = runner.invoke(app, ["run", str(study), "--out", str(out), "--jobs", "1"])
    assert res.exit_code == 0, res.output
    assert {r["method"] for r in json.loads((out / "results.json").read_text())["results"]} == {"source_lr", "pooled_lr", "selected"}


def test_unknown_method_is_a_clean_error(tmp_path):
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "heart_cleveland_to_va.toml"
    out = tmp_path / "out"
    res = runner.invoke(app, ["run", str(example), "--out", str(out), "-m", "source_lrr"])
    assert res.exit_code == 2
    assert "source_lr" in res.output and "Traceback" not in res.output
    assert not out.exists()


def test_serve_keys_add_routes_and_stores_only_a_hash(tmp_path):
    from healthtransfer.cli import route

    keys = tmp_path / "keys.json"
    res = runner.invoke(app, route(["serve", "keys", "add", str(keys), "--id", "ward", "--scope", "predict"]))
    assert res.exit_code == 0, res.output
    key = res.output.strip().splitlines()[-1]
    assert len(key) > 20 and key not in keys.read_text()
    assert route(["--debug", "serve", "keys", "add"]) == ["--debug", "serve-keys", "add"]
    assert route(["serve", "bundle-dir"]) == ["serve", "bundle-dir"]


def test_demo_writes_a_loadable_bundle(demo_out):
    from healthtransfer.bundle import load_bundle

    b = load_bundle(demo_out / "bundle")
    p = b.predict_proba([{"age": 61, "sex": 1, "cp": 4, "trestbps": 140, "chol": 260, "fbs": 0,
                          "restecg": 0, "thalach": 120, "exang": 1, "oldpeak": 2.0}])
    assert 0 <= float(p[0, 1]) <= 1
    assert (demo_out / "model_card.md").exists()


def test_demo_report_has_the_reviewer_sections(demo_out):
    page = (demo_out / "report.html").read_text()
    for section in ("Recommendation", "Shift diagnostics", "Model selection", "Calibration", "Subgroups", "Explanations"):
        assert f">{section}</h2>" in page, section
    payload = json.loads((demo_out / "results.json").read_text())
    assert payload["selected"] and {"chosen", "criterion", "n_labeled", "seed"} <= set(payload["selected"][0])
    assert payload["selection_summary"] and payload["shift"]


def test_federate_command_runs_a_simulation(tmp_path):
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "federated_heart.toml"
    text = example.read_text()
    import re

    study = tmp_path / "fed.toml"
    study.write_text(re.sub(r"rounds\s*=\s*\d+", "rounds = 2", text))
    res = runner.invoke(app, ["federate", str(study), "--simulate", "--out", str(tmp_path / "fed.json")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "fed.json").exists()
