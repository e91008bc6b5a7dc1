"""The base class's imputer samples rows on large inputs but keeps a full fit's columns."""

import numpy as np
from sklearn.impute import SimpleImputer

from healthtransfer.methods._base import _fit_imputer


def test_sampled_imputer_matches_a_full_fit():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20_000, 5))
    X[rng.random(X.shape) < 0.1] = np.nan
    X[:, 3] = rng.normal(size=20_000)
    X[17_777, 3] = np.nan  # missing in one row only: the sample must still add its indicator
    full = SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True).fit(X)
    part = _fit_imputer(X, max_rows=2_000)
    assert np.array_equal(part.indicator_.features_, full.indicator_.features_)
    assert np.allclose(part.statistics_, full.statistics_, atol=0.1)
    assert part.transform(X).shape == full.transform(X).shape
    assert not np.isnan(part.transform(X)).any()


def test_small_inputs_are_fitted_exactly():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(500, 3))
    X[::7, 1] = np.nan
    full = SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True).fit(X)
    assert np.array_equal(_fit_imputer(X).statistics_, full.statistics_)
