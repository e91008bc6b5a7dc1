"""Selection never reads target test labels, picks a helpful method when the evidence is there,
and keeps the baseline when it is not."""

import numpy as np
import pytest

from healthtransfer.data import load_dataset
from healthtransfer.data.splits import TargetSplit
from healthtransfer.data.synthetic import make_shifted_domains
from healthtransfer.evaluation.calibration import Recalibrator, prior_shift_adjust
from healthtransfer.selection import expand_candidates, select
from healthtransfer.study.config import SelectionSection
from healthtransfer.study import run as run_mod

HEART = ["age", "sex", "cp", "trestbps", "chol", "fbs", "restecg", "thalach", "exang", "oldpeak"]
METHODS = ["source_lr", "pooled_lr", "target_lr", "coral_lr", "linear_prior", "label_shift_em_lr"]


def _unit(ds, monkeypatch, split):
    monkeypatch.setattr(run_mod, "target_split", lambda *a, **k: split)
    return run_mod.run_unit(ds, ["cleveland"], "va", 0, [0, 20], METHODS, 0.5, False, SelectionSection(folds_target=3))


def test_permuting_test_labels_changes_no_selection(monkeypatch):
    """The leakage test: shuffle the target's test labels (the split held fixed) and every
    selection, criterion score and calibration stays exactly the same."""
    ds = load_dataset("uci_heart").with_features(HEART)
    ds.categorical = ["cp", "restecg"]
    va = ds.frame.index[ds.frame[ds.domain] == "va"]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(va))
    split = TargetSplit(pool=np.sort(order[:100]), test=np.sort(order[100:]), seed=0)
    _, _, _, sel_a = _unit(ds, monkeypatch, split)

    shuffled = ds.with_features(HEART)
    shuffled.frame = ds.frame.copy()
    test_rows = va[split.test]
    shuffled.frame.loc[test_rows, ds.label] = rng.permutation(shuffled.frame.loc[test_rows, ds.label].to_numpy())
    assert not shuffled.frame[ds.label].equals(ds.frame[ds.label])
    _, _, _, sel_b = _unit(shuffled, monkeypatch, split)

    assert [s["chosen"] for s in sel_a] == [s["chosen"] for s in sel_b]
    assert [s["scores"] for s in sel_a] == [s["scores"] for s in sel_b]
    assert [s["calibration"] for s in sel_a] == [s["calibration"] for s in sel_b]


def test_selection_picks_the_method_that_helps_with_target_labels():
    d = make_shifted_domains("concept", n_source=300, n_target=300, random_state=1)
    y = d.masked_y(60, random_state=1)
    cands = expand_candidates(["source_lr", "pooled_lr", "target_lr", "linear_prior"], grid=False)
    s = select(cands, d.X, y, d.sample_domain, 2, seed=0)
    assert s.criterion == "target_cv"
    assert s.chosen in {"target_lr", "linear_prior"}  # source-only is wrong under concept shift


def test_selection_keeps_the_baseline_without_shift():
    """No shift at all: no transfer method can show a gain beyond noise, so the baseline stays."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(500, 4))
    y_true = (X[:, 0] + 0.5 * X[:, 1] + rng.normal(scale=0.8, size=500) > 0).astype(int)
    sd = np.r_[np.ones(300, int), -np.ones(200, int)]
    y = np.where(sd < 0, -1, y_true)
    cands = expand_candidates(["source_lr", "coral_lr", "iw_domain_lr", "domain_std_lr"], grid=False)
    s = select(cands, X, y, sd, 2, seed=0)
    assert s.criterion == "iwcv+dev"
    assert s.chosen == "source_lr", s.reason
    assert set(s.scores["source_lr"]) >= {"auroc", "dev_logloss", "reverse_auroc", "target_entropy"}


def test_grid_expands_candidates_with_readable_names():
    names = [c.name for c in expand_candidates(["coral_lr", "source_lr"], grid=True)]
    assert names[0] == "coral_lr" and any(n.startswith("coral_lr[") for n in names)
    assert names.count("source_lr") == 1


def test_recalibration_guard_for_tiny_budgets():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 12)
    assert Recalibrator().fit(y, rng.random(12)).kind == "intercept"
    y = rng.integers(0, 2, 100)
    p = np.clip(0.5 * y + 0.5 * rng.random(100), 0.01, 0.99)
    assert Recalibrator().fit(y, p).kind == "platt"


def test_recalibration_fixes_a_miscalibrated_score():
    from healthtransfer.evaluation import expected_calibration_error

    rng = np.random.default_rng(1)
    z = rng.normal(size=400)
    y = (rng.random(400) < 1 / (1 + np.exp(-z))).astype(int)
    bad = 1 / (1 + np.exp(-(3 * z + 1)))  # over-confident and shifted
    cal = Recalibrator().fit(y[:200], bad[:200])
    assert expected_calibration_error(y[200:], cal.transform(bad[200:])) < expected_calibration_error(y[200:], bad[200:]) - 0.05


def test_prior_shift_adjustment_moves_the_mean_and_keeps_the_ranking():
    p = np.array([0.1, 0.3, 0.5, 0.7])
    q = prior_shift_adjust(p, [0.5, 0.5], [0.2, 0.8])
    assert np.all(q > p) and np.all(np.diff(q) > 0)
