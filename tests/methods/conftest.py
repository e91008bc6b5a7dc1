"""Shared checks for the methods tests."""

import numpy as np
import pytest

from healthtransfer.data.synthetic import make_heart_sized
from healthtransfer.methods import make_method


@pytest.fixture()
def check_fits_heart_sized():
    """Every named method fits the heart-sized problem (``make_heart_sized``, the one
    ``benchmarks/fit_times.py`` times) and gives valid, reproducible target probabilities that
    use the labelled target rows (they change when those labels are hidden)."""

    def check(names, **data):
        X, y, d = make_heart_sized(**data)
        y_hidden = np.where(d < 0, -1, y)
        for name in names:
            p = make_method(name, random_state=0).fit(X, y, sample_domain=d).predict_proba(X[300:])
            assert p.shape == (150, 2) and np.isfinite(p).all(), name
            assert np.all((p >= 0) & (p <= 1)) and np.allclose(p.sum(axis=1), 1), name
            again = make_method(name, random_state=0).fit(X, y, sample_domain=d).predict_proba(X[300:])
            np.testing.assert_array_equal(p, again, err_msg=name)
            blind = make_method(name, random_state=0).fit(X, y_hidden, sample_domain=d).predict_proba(X[300:])
            assert not np.allclose(p, blind), f"{name} ignores the labelled target rows"

    return check
