"""Selection never reads target test labels, picks a helpful method when the evidence is there,
and keeps the baseline when it is not."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

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


def test_too_few_labels_of_a_class_keep_the_label_free_choice():
    """Concept shift makes target_lr the right answer with enough labels, but with 3 labelled
    rows of the rare class target CV cannot show it: the label-free choice stays, and says why."""
    d = make_shifted_domains("concept", n_source=300, n_target=300, random_state=1)
    tgt = np.flatnonzero(d.sample_domain < 0)
    pos, neg = tgt[d.y[tgt] == 1][:3], tgt[d.y[tgt] == 0][:27]
    y = np.where(d.sample_domain < 0, -1, d.y)
    y[pos], y[neg] = 1, 0
    cands = expand_candidates(["source_lr", "pooled_lr", "target_lr", "linear_prior"], grid=False)
    s = select(cands, d.X, y, d.sample_domain, 2, seed=0)
    assert s.criterion == "target_cv"
    assert s.anchor == "source_lr" and s.chosen == "source_lr"
    assert "rarest class" in s.reason and "3" in s.reason
    # with the bar lowered, the same scores let target CV decide
    s2 = select(cands, d.X, y, d.sample_domain, 2, seed=0, min_per_class=2, margin=0, min_gain=0)
    assert s2.chosen == s2.best_candidate


def test_one_labelled_row_of_a_class_returns_the_label_free_selection_without_rescoring(monkeypatch):
    """Target CV is impossible with a single labelled positive: the label-free selection is the
    answer, and the candidates' source CV is not run a second time."""
    from healthtransfer.selection import _select

    d = make_shifted_domains("covariate", n_source=300, n_target=200, random_state=2)
    tgt = np.flatnonzero(d.sample_domain < 0)
    y = np.where(d.sample_domain < 0, -1, d.y)
    pos, neg = tgt[d.y[tgt] == 1][:1], tgt[d.y[tgt] == 0][:9]
    y[pos], y[neg] = 1, 0
    cands = expand_candidates(["source_lr", "coral_lr", "target_lr"], grid=False)
    calls = []
    real = _select.source_cv_oof
    monkeypatch.setattr(_select, "source_cv_oof", lambda *a, **k: calls.append(1) or real(*a, **k))
    s = select(cands, d.X, y, d.sample_domain, 2, seed=0)
    assert len(calls) == 2  # source_lr and coral_lr, once each (target_lr needs labels)
    assert s.criterion == "iwcv+dev" and s.chosen == s.anchor == s.label_free.chosen
    assert "too few for target CV" in s.reason


def test_labelled_rows_must_beat_the_label_free_choice():
    """No shift: target-trained candidates cannot beat the label-free choice beyond noise."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(500, 4))
    y_true = (X[:, 0] + 0.5 * X[:, 1] + rng.normal(scale=0.8, size=500) > 0).astype(int)
    sd = np.r_[np.ones(300, int), -np.ones(200, int)]
    y = np.where(sd < 0, -1, y_true)
    y[300:340] = y_true[300:340]  # 40 labelled target rows
    cands = expand_candidates(["source_lr", "target_lr", "pooled_lr", "feat_aug_lr"], grid=False)
    s = select(cands, X, y, sd, 2, seed=0)
    assert s.anchor == "source_lr"
    assert s.chosen == "source_lr", s.reason
    assert s.to_dict()["anchor"] == "source_lr"


def test_repeated_target_cv_averages_each_row_over_repeats():
    from healthtransfer.selection._criteria import target_cv_oof

    d = make_shifted_domains("concept", n_source=200, n_target=200, random_state=2)
    y = d.masked_y(30, random_state=2)
    fac = expand_candidates(["target_lr"])[0].factory
    one = target_cv_oof(fac, d.X, y, d.sample_domain, 2, n_repeats=1)
    three = target_cv_oof(fac, d.X, y, d.sample_domain, 2, n_repeats=3)
    assert np.array_equal(one.rows, three.rows)
    assert np.allclose(three.proba.sum(axis=1), 1)
    assert not np.allclose(one.proba, three.proba)  # other fold assignments were averaged in


def test_large_inputs_are_scored_on_a_sample_that_keeps_every_labelled_row():
    from healthtransfer.selection._select import _sample_rows

    rng = np.random.default_rng(0)
    sd = np.r_[np.ones(3000, int), -np.ones(2000, int)]
    y = np.where(sd > 0, rng.integers(0, 2, 5000), -1)
    y[3000:3040] = rng.integers(0, 2, 40)
    X = rng.normal(size=(5000, 3))
    Xs, ys, sds, mask, extra = _sample_rows(X, y, sd, np.ones(5000, bool), lambda c: np.arange(5000.0), 1000, 0)
    assert len(Xs) == 1000 and mask.shape == (1000,)
    assert ((sds < 0) & (ys != -1)).sum() == 40  # every labelled target row kept
    assert np.array_equal(X[extra(None).astype(int)], Xs)  # the reference column follows the rows
    d = make_shifted_domains("covariate", n_source=400, n_target=300, random_state=0)
    s = select(expand_candidates(["source_lr", "coral_lr"]), d.X, d.masked_y(0), d.sample_domain, 2, max_rows=300)
    assert s.chosen.split("[")[0] in {"source_lr", "coral_lr"} and len(s.oof["source_lr"].y) < 300


def test_reference_score_is_a_label_free_candidate_and_can_set_the_bar():
    """A study with a reference score (eICU's APACHE IV): at n_t = 0 the recalibrated score is
    scored like the baselines (its column may be missing for some rows) and, being far better
    than the features here, is chosen; with labels it is the anchor the others must beat."""
    rng = np.random.default_rng(4)
    n = 900
    X = rng.normal(size=(n, 4))
    eta = 2.5 * rng.normal(size=n)  # the outcome depends on what the score sees, not on X
    y_true = (rng.random(n) < 1 / (1 + np.exp(-(eta - 1)))).astype(int)
    ref = eta - 1 + rng.normal(scale=0.3, size=n)
    ref[rng.random(n) < 0.1] = np.nan  # no score for some stays
    sd = np.r_[np.ones(600, int), -np.ones(300, int)]
    y = np.where(sd < 0, -1, y_true)
    cands = expand_candidates(["source_lr", "coral_lr", "reference_recalibration"], grid=False)
    s0 = select(cands, X, y, sd, 2, extra_columns=lambda c: ref, score_mask=~np.isnan(ref))
    assert s0.chosen == "reference_recalibration", s0.reason
    y[600:680] = y_true[600:680]
    s1 = select(cands, X, y, sd, 2, extra_columns=lambda c: ref, score_mask=~np.isnan(ref), label_free=s0)
    assert s1.anchor == "reference_recalibration" and s1.chosen == "reference_recalibration", s1.reason


def test_a_baseline_must_clearly_beat_the_reference_score_to_replace_it():
    """The recalibrated reference score is what the site already trusts: at n_t = 0 a plain
    source model that ranks a little higher on IWCV (within noise) does not replace it."""
    rng = np.random.default_rng(7)
    n = 900
    X = rng.normal(size=(n, 3))
    z = 2.0 * X[:, 0] - 1.0
    y_true = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    ref = z + rng.normal(scale=0.3, size=n)  # the score sees the same signal, a little noisier
    sd = np.r_[np.ones(600, int), -np.ones(300, int)]
    y = np.where(sd < 0, -1, y_true)
    cands = expand_candidates(["source_lr", "reference_recalibration"], grid=False)
    s = select(cands, X, y, sd, 2, extra_columns=lambda c: ref)
    assert s.best_candidate == "source_lr"
    assert s.best_baseline == "reference_recalibration"
    assert s.chosen == "reference_recalibration", s.reason


# ---- the bar-first rule (issue 16) ------------------------------------------------------------

def _oof(y, p, weight=None):
    from healthtransfer.selection import OOF

    p = np.clip(np.asarray(p, float), 1e-4, 1 - 1e-4)
    return OOF(y=np.asarray(y), proba=np.column_stack([1 - p, p]),
               weight=np.ones(len(y)) if weight is None else weight, criterion="target_cv")


def _decide(oofs, bar="bar", **kw):
    from healthtransfer.selection._select import _decide as decide

    names = list(oofs)
    scores = {n: {"auroc": 0.5} for n in names}
    fam = {n: "baseline" if n == bar else "model" for n in names}
    return decide(names, bar, oofs, scores, fam, "target_cv", seed=0, **{"margin": 1.0, "min_gain": 0.01, **kw})


def test_many_noisy_challengers_do_not_displace_the_bar():
    """Twelve challengers that are the bar plus noise: one of them scores best by chance, as the
    old winner-take-all rule would have picked, but none clears the multiplicity-aware bar."""
    from healthtransfer.selection._select import _auroc, _paired_gain

    rng = np.random.default_rng(3)
    n = 60
    z = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-1.5 * z))).astype(int)
    oofs = {"bar": _oof(y, 1 / (1 + np.exp(-z)))}  # the bar ranks by the true risk: nothing is better
    for k in range(12):
        oofs[f"c{k}"] = _oof(y, 1 / (1 + np.exp(-(z + rng.normal(scale=0.6, size=n)))))
    best = max(oofs, key=lambda k: _auroc(oofs[k].y, oofs[k].proba))
    gain, se = _paired_gain(oofs[best], oofs["bar"])
    assert best != "bar" and gain > se and gain > 0.01  # the old rule (best score, 1 se) took this noisy winner
    chosen, reason, rows, z_used = _decide(oofs)
    assert chosen == "bar", reason
    assert z_used > 2.0  # twelve comparisons: one standard error is not enough
    assert {r["name"] for r in rows} == set(oofs) and rows[0]["verdict"] == "the bar"
    assert "kept the bar" in reason


def test_a_clearly_better_challenger_is_chosen_with_its_evidence():
    rng = np.random.default_rng(1)
    n = 200
    z = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-3 * z))).astype(int)
    oofs = {"bar": _oof(y, 1 / (1 + np.exp(-(z + rng.normal(scale=2.0, size=n))))),
            "good": _oof(y, 1 / (1 + np.exp(-3 * z))),
            "noise": _oof(y, rng.random(n))}
    chosen, reason, rows, _ = _decide(oofs)
    assert chosen == "good", reason
    good = next(r for r in rows if r["name"] == "good")
    assert good["lower"] > 0 and good["gain"] > 0.05 and good["verdict"].startswith("chosen")
    assert next(r for r in rows if r["name"] == "noise")["gain"] < 0


def test_a_better_ranking_with_a_much_worse_brier_does_not_replace_the_bar():
    """Evidence says worse on one of the two metrics the user receives: keep the bar."""
    rng = np.random.default_rng(2)
    n = 300
    z = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    bar = 1 / (1 + np.exp(-(0.5 * z + rng.normal(scale=0.5, size=n))))
    sharp = 1 / (1 + np.exp(-30 * z))  # ranks as well as possible, but claims near-certainty
    chosen, reason, rows, _ = _decide({"bar": _oof(y, bar), "sharp": _oof(y, sharp)})
    r = next(r for r in rows if r["name"] == "sharp")
    assert r["lower"] > 0 and r["brier_diff"] > 0.03  # clearly better AUROC, clearly worse Brier
    assert "Brier worse" in r["verdict"]
    assert chosen == "bar", reason


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 8), st.integers(20, 120))
def test_the_rule_never_returns_what_the_evidence_says_is_worse(seed, k, n):
    """Whatever the candidates: the answer is the bar, or a challenger whose paired gain over
    the bar is positive beyond its noise and whose Brier is not worse beyond noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    z = rng.normal(size=n) + y * rng.uniform(0, 2)
    oofs = {"bar": _oof(y, 1 / (1 + np.exp(-z)))}
    for j in range(k):
        oofs[f"c{j}"] = _oof(y, 1 / (1 + np.exp(-(rng.uniform(0, 2) * z + rng.normal(scale=rng.uniform(0.1, 2), size=n)))))
    chosen, _, rows, z_used = _decide(oofs)
    if chosen != "bar":
        r = next(r for r in rows if r["name"] == chosen)
        assert r["gain"] > 0.01 and r["gain"] - z_used * r["se"] > 0


def test_threshold_grows_with_the_number_of_challengers():
    from healthtransfer.selection._select import _threshold

    assert _threshold(1.0, 1) == pytest.approx(1.0)
    assert _threshold(1.0, 1) < _threshold(1.0, 5) < _threshold(1.0, 20)
    assert _threshold(0.0, 10) == 0.0


def test_selection_explains_itself_as_data():
    """The explanation is plain data (JSON-safe): the bar, each candidate's evidence, the
    weights of what ships, and why the bar was or was not kept; and it renders to HTML."""
    import json

    from healthtransfer.selection import explanation_html

    d = make_shifted_domains("concept", n_source=300, n_target=300, random_state=1)
    y = d.masked_y(60, random_state=1)
    cands = expand_candidates(["source_lr", "pooled_lr", "target_lr", "linear_prior"], grid=False)
    s = select(cands, d.X, y, d.sample_domain, 2, seed=0)
    e = s.explanation
    assert e["bar"] == s.bar == "source_lr" and e["chosen"] == s.chosen != "source_lr"
    assert e["weights"] == {s.chosen: 1.0} and e["why_not_bar"]
    assert {r["name"] for r in e["candidates"]} == {c.name for c in cands}
    json.dumps(e, allow_nan=False)
    json.dumps(s.to_dict())
    html = explanation_html(e)
    assert "source_lr" in html and s.chosen in html and "<table" in html


def test_recalibration_is_applied_only_where_cross_fitting_shows_it_helps():
    """A fitted recalibration map is a candidate like any other: on a few dozen calibrated rows it
    only adds noise (kept raw); on a clearly miscalibrated model it lowers held-out Brier."""
    from healthtransfer.selection import recalibration_evidence

    rng = np.random.default_rng(0)
    z = rng.normal(size=300)
    y = (rng.random(300) < 1 / (1 + np.exp(-z))).astype(int)
    calibrated = 1 / (1 + np.exp(-z))
    assert not recalibration_evidence(y[:30], calibrated[:30])["helps"]
    bad = 1 / (1 + np.exp(-(3 * z + 1.5)))
    ev = recalibration_evidence(y, bad)
    assert ev["helps"] and ev["brier_change"] < -ev["se"]
    assert recalibration_evidence(np.r_[np.zeros(10, int), 1], np.full(11, 0.5))["helps"] is False  # one positive
