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
