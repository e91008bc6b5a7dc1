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
    assert s["auroc"]["spread"][0] <= s["auroc"]["mean"] <= s["auroc"]["spread"][1] and "ci" not in s["auroc"]
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
    assert fams == {"baseline", "instance", "feature", "model", "relation"}


@pytest.mark.parametrize("args", [["methods"], ["methods", "--long"], ["methods", "--family", "model", "--long"]])
def test_methods_fits_an_80_column_terminal(args, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    names = {m["name"] for m in json.loads(runner.invoke(app, ["methods", "--json"]).output)}
    listed = set(res.output.replace("+", " ").replace("*", " ").split())
    if "--family" not in args:
        assert names <= listed  # every method appears, none is lost to wrapping


def test_demo_summary_fits_80_columns(demo_out):
    from healthtransfer.cli import format_summary, summary_tables

    import pandas as pd

    df = pd.DataFrame(json.loads((demo_out / "results.json").read_text())["results"])
    text = format_summary(df, width=80)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert text.count("target ") >= 3  # one table per target
    tabs = summary_tables(df)["targets"]
    assert set(tabs) == {"hungarian", "va", "switzerland"}
    # the JSON summary is the seed mean of the records, nothing else
    g = df[(df.target == "va") & (df.method == "source_lr") & (df.n_labeled == 0)]
    assert tabs["va"]["source_lr"][0] == pytest.approx(g["auroc"].mean(), abs=1e-4)


@pytest.mark.parametrize("argv", [["--debug", "demo", "--seeds", "0"], ["demo", "--debug", "--seeds", "0"],
                                  ["demo", "--seeds", "0", "--debug"]])
def test_debug_is_accepted_before_or_after_the_subcommand(argv):
    from healthtransfer.cli import route

    res = runner.invoke(app, route(argv))
    # --seeds 0 is refused by the option's own check, which proves --debug was parsed
    assert "No such option" not in res.output
    assert "--seeds" in res.output


def test_internal_error_names_the_exact_command_to_rerun(monkeypatch, capsys):
    import sys

    import healthtransfer._cli._study as study_commands
    import healthtransfer.cli as cli

    def boom(*_a, **_k):
        raise RuntimeError("patient value 123.456 must never be shown")

    monkeypatch.setattr(study_commands, "_execute", boom)
    monkeypatch.setattr(sys, "argv", ["healthtransfer", "demo", "--out", "my demo"])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "healthtransfer --debug demo --out 'my demo'" in err
    assert "123.456" not in err
    cli._state["debug"] = False


def test_a_study_without_methods_runs_every_family():
    """The default method list promises a member of each family; run it and look."""
    from healthtransfer.methods import get_method
    from healthtransfer.study import Study
    from healthtransfer.study.run import run_study

    study = Study.model_validate({
        "study": {"name": "defaults"},
        "data": {"dataset": "uci_heart", "features": ["age", "sex", "cp", "trestbps", "thalach", "oldpeak"]},
        "transfer": {"sources": ["cleveland"], "target": "hungarian", "labeled_target": [0, 20], "seeds": 1},
        "selection": {"diagnose": False},
    })
    res = run_study(study, progress=False)
    ran = {r["method"] for r in res.records if r["method"] != "selected"}
    assert {get_method(m).family for m in ran} == {"baseline", "instance", "feature", "model", "relation"}
    # every family has a member that ran at the label-free budget too, except the ones that need labels
    at_zero = {get_method(r["method"]).family for r in res.records if r["n_labeled"] == 0 and r["method"] != "selected"}
    assert {"instance", "feature", "relation"} <= at_zero


def test_a_study_with_a_reference_score_also_runs_the_reference_transfers():
    from healthtransfer.study import Study
    from healthtransfer.study.run import default_methods

    base = {"study": {"name": "x"}, "transfer": {"sources": ["a"], "target": "b"}}
    plain = Study.model_validate({**base, "data": {"dataset": "uci_heart"}})
    assert not any(m.startswith("reference_") for m in default_methods(plain))
    assert {"reference_recalibration", "reference_boosting"} <= set(default_methods(plain, reference_score="apache"))


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


def test_demo_writes_a_bundle_per_target_equal_to_its_deployment_check(demo_out):
    from healthtransfer.bundle import load_bundle

    payload = json.loads((demo_out / "results.json").read_text())
    targets = ["hungarian", "va", "switzerland"]
    assert sorted(p.name for p in (demo_out / "bundle").iterdir()) == sorted(targets)
    for t in targets:
        b = load_bundle(demo_out / "bundle" / t)
        p = b.predict_proba([{"age": 61, "sex": 1, "cp": 4, "trestbps": 140, "chol": 260, "fbs": 0,
                              "restecg": 0, "thalach": 120, "exang": 1, "oldpeak": 2.0}])
        assert 0 <= float(p[0, 1]) <= 1
        check = payload["deployment_check"][t]
        assert check["passed"]
        for k in ("auroc", "brier", "ece"):  # the card's numbers are the bundle's numbers on the same rows
            assert abs(b.metrics["overall"][k]["value"] - check["bundle"][k]) <= 1e-9
    assert (demo_out / "model_card.md").exists()


def test_demo_report_has_the_reviewer_sections(demo_out):
    page = (demo_out / "report.html").read_text()
    for section in ("Recommendation", "Shipped models", "Shift diagnostics", "Model selection", "Calibration",
                    "Subgroups", "Explanations"):
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
    # the run report says what ran: the study's sites and rounds, one log entry a round,
    # per-site metrics, and a global model that ranks better than chance
    report = json.loads((tmp_path / "fed.json").read_text())
    sites = ["cleveland", "hungarian", "switzerland", "va"]
    assert report["mode"].startswith("simulation") and sorted(report["sites"]) == sorted(sites)
    assert report["rounds"] == 2 and [r["round"] for r in report["rounds_log"]] == [1, 2]
    assert set(report["per_site"]) == set(sites)
    assert 0.5 < report["summary"]["mean_global_auroc"] <= 1.0
    assert "mean_finetuned_auroc" in report["summary"]


# -- --stream: Parquet read batch by batch ---------------------------------------------------
STREAM_SCHEMA = """
name = "toy_stream"
label = "y"
domain = "site"

[[features]]
name = "hr"
range = [20, 250]

[[features]]
name = "temp"
range = [30, 43]

[[features]]
name = "adm"
kind = "categorical"
categories = ["med", "surg"]

[sites."*".missing_values]
hr = [-1]

[sites.b.units.temp]
from_unit = "F"
factor = 0.5555555555555556
offset = -17.77777777777778

[sites.c.code_maps.adm]
"1" = "med"
"2" = "surg"
"""


def _stream_study(tmp_path, *, schema=True, path="pq", target='"c"'):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    d = tmp_path / "pq"
    d.mkdir(exist_ok=True)
    for i in range(3):
        n = 400
        site = rng.choice(["a", "b", "c"], n)
        hr = (rng.normal(80, 15, n) + 25 * (site == "c")).round().astype("float32")
        hr[rng.random(n) < 0.05] = -1
        hr[rng.random(n) < 0.02] = 400
        temp = np.where(site == "b", rng.normal(98.6, 1, n), rng.normal(37, 0.5, n)).astype("float32")
        adm = np.where(site == "c", rng.choice(["1", "2"], n), rng.choice(["med", "surg"], n))
        pd.DataFrame({"site": site, "hr": hr, "temp": temp, "adm": adm, "y": rng.integers(0, 2, n)}).to_parquet(
            d / f"part-{i}.parquet")
    (tmp_path / "schema.toml").write_text(STREAM_SCHEMA)
    study = tmp_path / "study.toml"
    study.write_text(
        '[study]\nname = "toy-stream"\n\n[data]\n'
        f'path = "{path}"\ndomain = "site"\nlabel = "y"\n'
        + ('schema = "schema.toml"\n' if schema else "")
        + f'\n[transfer]\nsources = ["a", "b"]\ntarget = {target}\n')
    return study


def test_data_inspect_stream_prints_the_report(tmp_path):
    study = _stream_study(tmp_path)
    res = runner.invoke(app, ["data", "inspect", str(study), "--stream"])
    assert res.exit_code == 0, res.output
    assert "1200 rows" in res.output and "streamed" in res.output
    assert "values converted to the harmonised unit" in res.output  # site b's Fahrenheit
    assert "sentinel values set missing" in res.output and "out-of-range values" in res.output


def test_data_inspect_stream_json_equals_in_memory(tmp_path):
    study = _stream_study(tmp_path)
    res = runner.invoke(app, ["data", "inspect", str(study), "--stream", "--json"])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.output)
    assert payload["dataset"]["rows"] == 1200 and payload["dataset"]["streamed"] is True
    import pandas as pd

    from healthtransfer.data.harmonise import harmonise
    from healthtransfer.data.schema import load_schema

    raw = pd.read_parquet(tmp_path / "pq")
    _, rep = harmonise(raw, load_schema(tmp_path / "schema.toml"))
    got = pd.DataFrame(payload["harmonisation"]["rows"]).sort_values(["site", "column"]).reset_index(drop=True)
    want = rep.rows.sort_values(["site", "column"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    c_adm = got[(got.site == "c") & (got.column == "adm")].iloc[0]
    assert c_adm["n_unmapped"] == 0  # the code map turned 1/2 into med/surg


def test_diagnose_stream(tmp_path):
    study = _stream_study(tmp_path)
    res = runner.invoke(app, ["diagnose", str(study), "--stream", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["target"] == "c" and out["sources"] == ["a", "b"] and out["streamed"] is True
    assert out["n_source"] + out["n_target"] == 1200
    assert out["features"][0]["feature"] == "hr"  # the shifted feature ranks first
    assert 0.5 < out["domain_classifier"]["auroc"] <= 1
    assert 0 <= out["mmd"]["p_value"] <= 1
    assert all(set(f) == {"feature", "smd", "missing_source", "missing_target", "missing_diff"} for f in out["features"])
    res = runner.invoke(app, ["diagnose", str(study), "--stream"])
    assert res.exit_code == 0, res.output
    assert "Shift diagnostics (streamed): a, b -> c" in res.output and "AUROC" in res.output


def test_diagnose_stream_several_targets_gives_a_list(tmp_path):
    study = _stream_study(tmp_path, target='["b", "c"]')
    study.write_text(study.read_text().replace('sources = ["a", "b"]', 'sources = ["a"]'))
    res = runner.invoke(app, ["diagnose", str(study), "--stream", "--json"])
    assert res.exit_code == 0, res.output
    assert [o["target"] for o in json.loads(res.output)] == ["b", "c"]


@pytest.mark.parametrize("case,needle", [
    ("no_schema", "--stream needs a schema"),
    ("builtin", "built-in dataset"),
    ("csv", "Parquet only"),
    ("unknown_site", "no rows for them"),
])
def test_stream_refuses_what_it_cannot_read(tmp_path, case, needle):
    if case == "builtin":
        study = tmp_path / "s.toml"
        study.write_text('[study]\nname = "x"\n[data]\ndataset = "uci_heart"\nschema = "s.toml"\n'
                         '[transfer]\nsources = ["cleveland"]\ntarget = "va"\n')
    elif case == "csv":
        study = _stream_study(tmp_path, path="t.csv")
        (tmp_path / "t.csv").write_text("site,y\na,1\n")
    else:
        study = _stream_study(tmp_path, schema=case != "no_schema", target='"zz"' if case == "unknown_site" else '"c"')
    for cmd in (["data", "inspect", str(study), "--stream"], ["diagnose", str(study), "--stream"]):
        if case == "unknown_site" and cmd[0] == "data":
            continue
        res = runner.invoke(app, cmd)
        assert res.exit_code == 2, res.output
        assert needle in res.output
        assert "Traceback" not in res.output


def test_demo_report_explains_the_selection_behind_each_shipped_model(demo_out):
    """Issue 16: which candidates, which weights, why not the bar, per shipped model."""
    page = (demo_out / "report.html").read_text()
    payload = json.loads((demo_out / "results.json").read_text())
    targets = {r["target"] for r in payload["results"]}
    assert page.count("the selection behind the shipped model") == len(targets)
    assert "The bar:" in page and "gain vs bar" in page
    assert ("The bar was kept." in page) or ("Why not the bar:" in page)
