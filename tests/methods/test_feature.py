import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from healthtransfer.data.synthetic import make_shifted_domains
from healthtransfer.methods import make_method
from healthtransfer.methods.feature import (
    CORAL,
    METHODS,
    TCA,
    DomainStandardization,
    FeatureAugmentation,
    OTMapping,
    SubspaceAlignment,
)


@parametrize_with_checks(
    [DomainStandardization(), CORAL(), SubspaceAlignment(), TCA(), OTMapping(),
     FeatureAugmentation()]
)
def test_sklearn_contract(estimator, check):
    check(estimator)


NAMES = [spec.name for spec in METHODS]
SEEDS = (0, 1, 2)


def _brier(p, y):
    return float(np.mean(np.sum((p - np.eye(p.shape[1])[y]) ** 2, axis=1)))


def _scores(name, kind, n_labelled=0, seeds=SEEDS, **params):
    """Mean target accuracy and Brier score over a few seeds."""
    acc, brier = [], []
    for seed in seeds:
        d = make_shifted_domains(kind, n_source=400, n_target=300, random_state=seed)
        y = d.masked_y(n_labelled, random_state=seed)
        m = make_method(name, random_state=0, **params).fit(d.X, y, sample_domain=d.sample_domain)
        p = m.predict_proba(d.X[d.target])
        acc.append(np.mean(m.classes_[p.argmax(1)] == d.y[d.target]))
        brier.append(_brier(p, d.y[d.target]))
    return float(np.mean(acc)), float(np.mean(brier))


@pytest.mark.parametrize("name", ["domain_std_lr", "coral_lr", "ot_map_lr", "sa_lr", "tca_lr"])
def test_alignment_helps_under_device_scale_shift(name):
    acc0, brier0 = _scores("source_lr", "scale")
    acc, brier = _scores(name, "scale")
    assert acc > acc0 + 0.05, (acc, acc0)
    assert brier < brier0 - 0.05, (brier, brier0)


def test_tca_with_pooled_scaling_still_helps_under_scale_shift():
    acc0, _ = _scores("source_lr", "scale")
    acc, _ = _scores("tca_lr", "scale", standardize="pooled")
    assert acc > acc0 + 0.03, (acc, acc0)


def test_feature_augmentation_uses_a_few_target_labels_under_concept_shift():
    acc0, brier0 = _scores("source_lr", "concept", n_labelled=30)
    accp, _ = _scores("pooled_lr", "concept", n_labelled=30)
    acc, brier = _scores("feat_aug_lr", "concept", n_labelled=30)
    assert acc > acc0 + 0.05, (acc, acc0)
    assert acc > accp + 0.05, (acc, accp)
    assert brier < brier0 - 0.05, (brier, brier0)


def test_coral_matches_target_moments():
    d = make_shifted_domains("scale", n_source=400, n_target=300, random_state=0)
    m = CORAL(reg=1e-6).fit(d.X, d.masked_y(0), sample_domain=d.sample_domain)
    Xs, Xt = d.X[d.source], d.X[d.target]
    Zs = m._map(Xs, "source", 1)
    np.testing.assert_allclose(Zs.mean(0), Xt.mean(0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.cov(Zs.T), np.cov(Xt.T), rtol=0.05, atol=1e-6 * Xt.var())
    np.testing.assert_array_equal(m._map(Xt, "target", -1), Xt)


def test_domain_std_aligns_each_source_site_separately():
    # two source sites measuring in other units + a target site in a third
    a = make_shifted_domains("scale", 300, 200, random_state=0)
    b = make_shifted_domains("scale", 300, 1, random_state=0)  # same centres, new units
    Xb = b.X[b.source] * 7.0 - 40.0
    X = np.vstack([a.X[a.source], Xb, a.X[a.target]])
    y = np.r_[a.y[a.source], b.y[b.source], -np.ones(200, int)]
    d = np.r_[np.ones(300, int), 2 * np.ones(300, int), -np.ones(200, int)]
    yt = a.y[a.target]
    acc = {}
    for name in ("source_lr", "domain_std_lr", "coral_lr"):
        m = make_method(name, random_state=0).fit(X, y, sample_domain=d)
        acc[name] = np.mean(m.predict(X[d < 0]) == yt)
    assert acc["domain_std_lr"] > acc["source_lr"] + 0.05, acc
    assert acc["coral_lr"] > acc["source_lr"] + 0.05, acc
    # rows of a source site are standardised with that site's moments at predict time too
    m = make_method("domain_std_lr", random_state=0).fit(X, y, sample_domain=d)
    assert np.mean(m.predict(Xb, sample_domain=np.full(300, 2)) == b.y[b.source]) > 0.9


@pytest.mark.parametrize("name", NAMES)
def test_labelled_target_rows_are_used(name):
    d = make_shifted_domains("concept", n_source=200, n_target=120, random_state=3)
    kw = dict(sample_domain=d.sample_domain)
    p0 = make_method(name, random_state=0).fit(d.X, d.masked_y(0), **kw).predict_proba(d.X)
    p1 = make_method(name, random_state=0).fit(d.X, d.masked_y(30), **kw).predict_proba(d.X)
    assert np.abs(p1 - p0).max() > 1e-3


def _multi(kind="scale", n_classes=3, seed=0):
    """Two source domains (1, 2) and one target (-1), with 20 labelled target rows."""
    a = make_shifted_domains(kind, 150, 120, n_classes=n_classes, random_state=seed)
    b = make_shifted_domains(kind, 100, 10, n_classes=n_classes, random_state=seed)
    X = np.vstack([a.X[a.source], b.X[b.source] * 2 + 1, a.X[a.target]])
    y_true = np.r_[a.y[a.source], b.y[b.source], a.y[a.target]]
    y = y_true.copy()
    y[250 + 20:] = -1
    d = np.r_[np.ones(150, int), 2 * np.ones(100, int), -np.ones(120, int)]
    return X, y, y_true, d


@pytest.mark.parametrize("name", NAMES)
def test_multiclass_and_two_sources(name):
    X, y, y_true, d = _multi()
    m = make_method(name, random_state=0).fit(X, y, sample_domain=d)
    assert list(m.classes_) == [0, 1, 2]
    p = m.predict_proba(X[d < 0])
    assert p.shape == (120, 3) and np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-8)
    assert np.mean(m.predict(X[d < 0]) == y_true[d < 0]) > 0.6
    ps = m.predict_proba(X[d > 0], sample_domain=d[d > 0])
    assert ps.shape == (250, 3) and np.isfinite(ps).all()


def test_missing_values_are_handled():
    d = make_shifted_domains("missing_feature", n_source=200, n_target=100, random_state=0)
    for name in NAMES:
        m = make_method(name, random_state=0).fit(d.X, d.masked_y(10), sample_domain=d.sample_domain)
        assert np.isfinite(m.predict_proba(d.X[d.target])).all(), name
