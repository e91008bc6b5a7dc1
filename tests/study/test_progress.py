"""The in-process progress bar: its total is the number of steps the runner reports."""

from __future__ import annotations

import contextlib

import pytest

from healthtransfer.study import Study
from healthtransfer.study import run as run_mod


@pytest.mark.parametrize("grid", [False, True])
def test_progress_total_counts_every_candidate(monkeypatch, grid):
    seen = {}

    @contextlib.contextmanager
    def fake_progress(enabled, total, label):
        seen["total"], seen["steps"] = total, 0

        def advance(*_):
            seen["steps"] += 1
        yield advance

    monkeypatch.setattr(run_mod, "StepProgress", fake_progress)
    study = Study.model_validate({
        "study": {"name": "bar"}, "data": {"dataset": "uci_heart"},
        "transfer": {"sources": ["cleveland"], "target": "va", "seeds": 1, "labeled_target": [0, 20],
                     "methods": ["source_lr", "linear_prior"]},  # linear_prior has a 3-point grid
        "selection": {"grid": grid, "diagnose": False},
    })
    run_mod.run_study(study, n_jobs=1, progress=True)
    assert seen["total"] == seen["steps"] > 0
