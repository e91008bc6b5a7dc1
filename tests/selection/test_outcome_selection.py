"""Selection for survival and regression: its criteria and its bar."""

from functools import partial

import numpy as np
from sksurv.metrics import concordance_index_censored

from healthtransfer.data.outcomes import masked_survival
from healthtransfer.methods import get_method, make_method
from healthtransfer.methods.survival import make_survival_domains
from healthtransfer.selection._outcomes import select_outcome, weighted_concordance


class _C:
    def __init__(self, name):
        self.name, self.spec, self.factory = name, get_method(name), partial(make_method, name)


def test_weighted_concordance_is_harrells_c_with_unit_weights():
    rng = np.random.default_rng(0)
    t = rng.permutation(200).astype(float) + 1  # no tied times
    e = rng.random(200) < 0.6
    r = rng.normal(size=200) - 0.01 * t
    assert np.isclose(weighted_concordance(t, e, r), concordance_index_censored(e, t, r)[0])
    # weights move it towards the heavily weighted rows' pairs
    w = np.where(np.arange(200) < 100, 10.0, 0.1)
    assert weighted_concordance(t, e, r, w) != weighted_concordance(t, e, r)


def _fit_rows(n_lab):
    X, y, d = make_survival_domains(n_source=300, n_target=300, shift=1.5, random_state=1)
    lab = np.ones(len(X), bool)
    tgt = np.flatnonzero(d < 0)
    lab[tgt[n_lab:]] = False
    return X, masked_survival(y, lab), d, np.r_[np.zeros((d > 0).sum(), bool), lab[d < 0]]


def test_label_free_criterion_without_target_labels():
    X, y, d, lt = _fit_rows(0)
    ch = select_outcome("survival", [_C("source_cox"), _C("iw_cox")], X, y, d, lt, seed=0, folds_source=2)
    assert ch.criterion == "iw_source_cv" and ch.bar == "source_cox"
    assert ch.chosen in ("source_cox", "iw_cox") and set(ch.scores) == {"source_cox", "iw_cox"}


def test_target_cv_with_enough_events_prefers_the_method_that_uses_them():
    X, y, d, lt = _fit_rows(250)
    ch = select_outcome("survival", [_C("source_cox"), _C("target_gbsurv")], X, y, d, lt, seed=0, folds_target=3)
    assert ch.criterion == "target_cv"
    assert ch.scores["target_gbsurv"] > ch.scores["source_cox"]


class _Oracle:
    """The true hazard of make_survival_domains (exponential, rate exp(lp) / 5); ``curves="flat"``
    keeps its ranking but predicts no event at all (good C, bad IBS); ``sign=-1``
    reverses it."""

    def __init__(self, sign=1.0, curves="true", random_state=None):
        self.sign, self.curves = sign, curves

    def fit(self, X, y, sample_domain=None):
        return self

    @staticmethod
    def _lp(X):
        return 0.8 * X[:, 0] - 0.4 * np.maximum(X[:, 0], 0) ** 2 + 0.5 * X[:, 1]

    def predict(self, X, sample_domain=None):
        return self.sign * self._lp(np.asarray(X))

    def predict_survival(self, X, times, sample_domain=None):
        if self.curves == "flat":
            return np.ones((len(X), len(times)))
        return np.exp(-np.asarray(times)[None, :] * np.exp(self.sign * self._lp(np.asarray(X)))[:, None] / 5.0)


def _fake(name, **kw):
    from types import SimpleNamespace

    spec = SimpleNamespace(family="model", uses_target="none", needs_labels=False, uses_reference=False)
    return SimpleNamespace(name=name, spec=spec, factory=lambda random_state=None: _Oracle(**kw))


def test_a_real_gain_replaces_the_bar_and_the_explanation_says_why():
    X, y, d, lt = _fit_rows(250)
    ch = select_outcome("survival", [_C("source_cox"), _fake("oracle")], X, y, d, lt, seed=0, folds_target=3)
    assert ch.criterion == "target_cv" and ch.bar == "source_cox" and ch.chosen == "oracle"
    row = next(r for r in ch.explanation["candidates"] if r["name"] == "oracle")
    assert row["gain"] > ch.explanation["threshold_se"] * row["se"] and row["verdict"].startswith("chosen")
    assert "beat the bar source_cox" in ch.reason


def test_the_bar_is_kept_when_the_challenger_is_worse_or_its_curves_are():
    X, y, d, lt = _fit_rows(250)
    cands = [_C("source_cox"), _fake("reversed", sign=-1.0), _fake("flat", curves="flat")]
    ch = select_outcome("survival", cands, X, y, d, lt, seed=0, folds_target=3)
    assert ch.chosen == "source_cox" == ch.bar
    verdicts = {r["name"]: r["verdict"] for r in ch.explanation["candidates"]}
    assert "not above" in verdicts["reversed"] and verdicts["flat"].startswith("IBS worse")
    # the bar was chosen without target labels, and that choice is reported
    assert ch.explanation["label_free"]["bar"] == "source_cox"


def test_no_target_labels_keeps_the_label_free_bar_unless_the_gain_is_beyond_noise():
    X, y, d, lt = _fit_rows(0)
    ch = select_outcome("survival", [_C("source_cox"), _C("source_gbsurv"), _fake("reversed", sign=-1.0)],
                        X, y, d, lt, seed=0, folds_source=2)
    assert ch.criterion == "iw_source_cv" and ch.bar in ("source_cox", "source_gbsurv")
    assert ch.chosen != "reversed"
    if ch.chosen != ch.bar:
        r = next(r for r in ch.explanation["candidates"] if r["name"] == ch.chosen)
        assert r["lower"] > 0


def test_regression_selection_uses_mae_with_the_same_bar_rule():
    rng = np.random.default_rng(0)
    n = 400
    X = rng.normal(size=(n, 3))
    d = np.r_[np.ones(250, int), -np.ones(150, int)]
    y = X @ np.array([1.0, 0.5, 0.0]) + 0.8 * (d < 0) + rng.normal(scale=0.3, size=n)
    y[250 + 100:] = np.nan  # 100 labelled target rows
    lt = np.r_[np.zeros(250, bool), np.arange(150) < 100]
    ch = select_outcome("regression", [_C("source_ridge"), _C("pooled_ridge"), _C("finetune_ridge")], X, y, d, lt,
                        seed=0, folds_target=3)
    assert ch.criterion == "target_cv" and ch.bar == "source_ridge" and ch.explanation["primary"] == "MAE"
    assert ch.chosen in ("pooled_ridge", "finetune_ridge")  # the target shift is large and real
