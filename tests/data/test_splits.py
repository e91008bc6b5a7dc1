import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from healthtransfer.data.splits import label_budget, target_split


@settings(max_examples=30, deadline=None)
@given(n0=st.integers(4, 80), n1=st.integers(4, 80), seed=st.integers(0, 1000), frac=st.sampled_from([0.3, 0.5]))
def test_split_is_a_stratified_partition(n0, n1, seed, frac):
    y = np.r_[np.zeros(n0, int), np.ones(n1, int)]
    s = target_split(y, seed=seed, test_fraction=frac)
    assert len(np.intersect1d(s.pool, s.test)) == 0
    assert len(s.pool) + len(s.test) == len(y)
    assert set(y[s.test]) == {0, 1}
    again = target_split(y, seed=seed, test_fraction=frac)
    assert np.array_equal(s.test, again.test)  # reproducible from the seed


def test_groups_never_straddle():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 40, size=200)
    y = (rng.random(200) < 0.3).astype(int)
    s = target_split(y, seed=3, groups=groups)
    assert not set(groups[s.pool]) & set(groups[s.test])


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 500), prevalence=st.floats(0.05, 0.95))
def test_budgets_are_nested_stratified_and_sized(seed, prevalence):
    rng = np.random.default_rng(seed)
    y = (rng.random(150) < prevalence).astype(int)
    if len(set(y)) < 2:
        return
    pool = np.arange(150)
    prev = np.array([], int)
    for n in (10, 20, 40):
        lab = label_budget(y, pool, n, seed=seed)
        assert len(lab) == n
        assert set(prev) <= set(lab)
        assert set(y[lab]) == {0, 1}
        prev = lab
