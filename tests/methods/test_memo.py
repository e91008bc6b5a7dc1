"""The label-free stage memo: a hit gives exactly the model a fresh fit gives, and only the
target labels may differ between fits that share it."""

import numpy as np
import pytest

from healthtransfer.data.synthetic import make_shifted_domains
from healthtransfer.methods import _memo, make_method

MEMOISED = ["kmm_lr", "iw_domain_lr", "coral_lr", "sa_lr", "ot_map_lr", "tca_lr", "continued_boosting"]


@pytest.fixture
def domains():
    return make_shifted_domains("covariate", n_source=150, n_target=90, random_state=3)


def _fit(name, d, y, seed=0):
    return make_method(name, random_state=seed).fit(d.X, y, sample_domain=d.sample_domain)


@pytest.mark.parametrize("name", MEMOISED)
def test_hit_equals_fresh_fit_under_other_target_labels(name, domains):
    d = domains
    y_a, y_b = d.masked_y(30, random_state=0), d.masked_y(30, random_state=1)  # other labelled rows
    assert not np.array_equal(y_a, y_b)
    _memo.clear()
    fresh = _fit(name, d, y_b).predict_proba(d.X[d.target])
    _memo.clear()
    _fit(name, d, y_a)  # fills the memo
    entries = len(_memo._CACHE)
    assert entries >= 1
    reused = _fit(name, d, y_b)
    assert len(_memo._CACHE) == entries, "the second fit should reuse the stage, not add an entry"
    np.testing.assert_array_equal(reused.predict_proba(d.X[d.target]), fresh)


def test_other_rows_or_params_miss(domains):
    d = domains
    _memo.clear()
    _fit("coral_lr", d, d.masked_y(30))
    n = len(_memo._CACHE)
    X2 = d.X.copy()
    X2[np.flatnonzero(d.target)[0]] += 1.0  # one target row's features change: a new map
    make_method("coral_lr", random_state=0).fit(X2, d.masked_y(30), sample_domain=d.sample_domain)
    assert len(_memo._CACHE) == n + 1
    _fit("coral_lr", d, d.masked_y(30), seed=1)  # another random_state: another entry
    assert len(_memo._CACHE) == n + 2


def test_memo_is_bounded(domains, monkeypatch):
    monkeypatch.setattr(_memo, "MAX_ENTRIES", 2)
    _memo.clear()
    for seed in range(4):
        _fit("coral_lr", domains, domains.masked_y(10), seed=seed)
    assert len(_memo._CACHE) == 2


def test_memo_bounds_the_rows_it_holds(domains, monkeypatch):
    d = domains
    per_entry = d.X.nbytes  # about: Xs + Xt, plus the label and domain vectors
    monkeypatch.setattr(_memo, "MAX_TOTAL_BYTES", int(2.5 * per_entry))
    _memo.clear()
    for seed in range(4):
        _fit("coral_lr", d, d.masked_y(10), seed=seed)
    assert len(_memo._CACHE) == 2


def test_large_inputs_are_not_memoised(domains, monkeypatch):
    monkeypatch.setattr(_memo, "MAX_BYTES", 10)
    _memo.clear()
    _fit("coral_lr", domains, domains.masked_y(10))
    assert len(_memo._CACHE) == 0
