"""`run --dry-run`: the plan counts what the run would fit and writes nothing; progress in logs."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from healthtransfer.cli import app
from healthtransfer.study import Study
from healthtransfer.study._plan import format_plan, plan_study
from healthtransfer.study.run import run_study


def _study(**transfer):
    return Study.model_validate({
        "study": {"name": "plan"},
        "data": {"dataset": "uci_heart", "features": ["age", "sex", "cp", "trestbps", "thalach", "oldpeak"]},
        "transfer": {"sources": ["cleveland"], "target": "hungarian", **transfer},
        "selection": {"diagnose": False},
    })


def test_plan_counts_the_fits_the_run_makes():
    study = _study(labeled_target=[0, 10], seeds=2, methods=["source_lr", "target_lr", "coral_lr"])
    plan = plan_study(study)
    assert plan["units"] == 2
    # target_lr needs labels: it does not run at n_t = 0
    assert plan["fits_by_method"] == {"source_lr": 4, "target_lr": 2, "coral_lr": 4}
    res = run_study(study, progress=False)
    made = [r for r in res.records if r["method"] != "selected"]
    assert len(made) == plan["fits"]
    assert set(plan["per_fit_seconds"]) == {"source_lr", "target_lr", "coral_lr"}
    assert all(s >= 0 for s in plan["per_fit_seconds"].values())
    assert plan["estimated_fit_seconds"] > 0
    text = format_plan(plan)
    assert "10 method fits" in text and max(len(line) for line in text.splitlines()) <= 120


def test_dry_run_writes_nothing(tmp_path):
    study = tmp_path / "s.toml"
    study.write_text('[study]\nname = "dry"\n[data]\ndataset = "uci_heart"\n[transfer]\nsources = ["cleveland"]\n'
                     'target = "va"\nseeds = 3\nlabeled_target = [0, 20]\nmethods = ["source_lr", "pooled_lr"]\n')
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["run", str(study), "--out", str(out), "--dry-run", "--json"])
    assert res.exit_code == 0, res.output
    plan = json.loads(res.output)
    assert plan["units"] == 3 and plan["fits"] == 3 * 2 + 3 * 1
    assert not out.exists()


def test_progress_prints_lines_with_time_left_when_not_a_terminal(capsys):
    run_study(_study(labeled_target=[0], seeds=2, methods=["source_lr"]), progress=True)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if " done, " in line]
    assert lines, err
    assert lines[-1].startswith("plan: ") and "left" in lines[-1] and "elapsed" in lines[-1]
    done = [int(line.split(" done, ")[0].split()[-1].split("/")[0]) for line in lines]
    assert done == sorted(done) and done[-1] == int(lines[-1].split(" done, ")[0].split("/")[-1])


def test_plan_counts_the_selection_refits_the_run_makes(monkeypatch):
    import healthtransfer.selection as selection
    from healthtransfer.methods._base import TransferClassifier

    study = _study(labeled_target=[0, 40], seeds=1, methods=["source_lr", "target_lr", "coral_lr"])
    plan = plan_study(study)
    # n_t = 0: 3 source folds for each label-free-capable method; n_t = 40: 5 folds x 3 repeats
    # for the two that read target labels, one fit for source_lr
    assert plan["selection_refits_by_method"] == {"source_lr": 3 + 1, "target_lr": 15, "coral_lr": 3 + 15}
    inside, refits = [False], []
    select, fit = selection.select, TransferClassifier.fit

    def counting_select(*a, **k):
        inside[0] = True
        try:
            return select(*a, **k)
        finally:
            inside[0] = False

    def counting_fit(self, *a, **k):
        if inside[0]:
            refits.append(type(self).__name__)
        return fit(self, *a, **k)

    monkeypatch.setattr(selection, "select", counting_select)
    monkeypatch.setattr(TransferClassifier, "fit", counting_fit)
    run_study(study, progress=False)
    assert len(refits) == plan["selection_refits"]
    assert "refits" in format_plan(plan)
