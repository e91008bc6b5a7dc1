"""Regression transfer methods: contract and gains where they must appear."""

import numpy as np
import pytest
from sklearn.metrics import mean_squared_error

from healthtransfer.methods import available_methods, make_method

REGRESSION = [n for n, s in available_methods().items() if s.outcome == "regression"]


def _data(seed=0, n_lab=100):
    rng = np.random.default_rng(seed)
    Xs = rng.normal(size=(400, 4))
    Xt = rng.normal(size=(400, 4)) + [1.5, 0, 0, 0]
    X = np.vstack([Xs, Xt])
    y = X @ [1.0, 0.5, 0.0, 0.0] + rng.normal(scale=0.3, size=800)
    y[400:] += 0.8 * X[400:, 1] + 1.0  # the target's relation differs (offset and slope)
    d = np.r_[np.ones(400, int), -np.ones(400, int)]
    ref = y + rng.normal(scale=1.0, size=800)
    fit = np.r_[np.arange(400), np.arange(400, 600)]
    ym = y.copy()
    ym[400 + n_lab:600] = np.nan
    return X, y, d, fit, ym, np.arange(600, 800), ref


def test_registry_has_every_family():
    assert {available_methods()[n].family for n in REGRESSION} == {"baseline", "instance", "feature", "model"}


@pytest.mark.parametrize("name", REGRESSION)
def test_contract(name):
    X, y, d, fit, ym, test, ref = _data()
    Xr = np.column_stack([X, ref]) if available_methods()[name].uses_reference else X
    m = make_method(name, random_state=0).fit(Xr[fit], ym[fit], sample_domain=d[fit])
    p = m.predict(Xr[test])
    assert p.shape == (len(test),) and np.isfinite(p).all()
    assert -1 < m.score(Xr[test], y[test]) <= 1


def _mse(name, seed):
    X, y, d, fit, ym, test, ref = _data(seed)
    Xr = np.column_stack([X, ref]) if available_methods()[name].uses_reference else X
    return mean_squared_error(y[test], make_method(name, random_state=seed).fit(Xr[fit], ym[fit], sample_domain=d[fit])
                              .predict(Xr[test]))


@pytest.mark.parametrize("name", ["finetune_ridge", "pooled_ridge", "reference_recalibration_reg"])
def test_target_labels_help_where_the_relation_moved(name):
    assert np.mean([_mse(name, s) for s in range(3)]) < 0.8 * np.mean([_mse("source_ridge", s) for s in range(3)])


def test_unlabelled_target_rows_are_nan_not_minus_one():
    X, y, d, fit, ym, test, ref = _data(n_lab=0)
    a = make_method("source_ridge").fit(X[fit], ym[fit], sample_domain=d[fit]).predict(X[test])
    b = make_method("source_ridge").fit(X[d > 0], y[d > 0]).predict(X[test])
    assert np.allclose(a, b)
