import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from healthtransfer.data.synthetic import make_shifted_domains
from healthtransfer.methods import make_method
from healthtransfer.methods.instance import (
    KLIEPIW,
    KMMIW,
    METHODS,
    DomainClassifierIW,
    LabelShiftEM,
    TrAdaBoost,
    em_prior,
)


@parametrize_with_checks(
    [DomainClassifierIW(), KMMIW(), KLIEPIW(random_state=0), TrAdaBoost(n_estimators=4),
     LabelShiftEM(), LabelShiftEM(method="bbse")]
)
def test_sklearn_contract(estimator, check):
    check(estimator)


NAMES = [spec.name for spec in METHODS]
SEEDS = (0, 1, 2)


def _brier(p, y):
    return float(np.mean(np.sum((p - np.eye(p.shape[1])[y]) ** 2, axis=1)))


def _scores(name, kind, n_labelled=0, seeds=SEEDS, **kw):
    """Mean target accuracy and Brier score over a few seeds."""
    acc, brier = [], []
    for seed in seeds:
        d = make_shifted_domains(kind, n_source=400, n_target=300, random_state=seed, **kw)
        y = d.masked_y(n_labelled, random_state=seed)
        m = make_method(name, random_state=0).fit(d.X, y, sample_domain=d.sample_domain)
        p = m.predict_proba(d.X[d.target])
        acc.append(np.mean(m.classes_[p.argmax(1)] == d.y[d.target]))
        brier.append(_brier(p, d.y[d.target]))
    return float(np.mean(acc)), float(np.mean(brier))


@pytest.mark.parametrize("name", ["iw_domain_lr", "kmm_lr", "kliep_lr"])
def test_reweighting_helps_under_covariate_shift(name):
    acc0, brier0 = _scores("source_lr", "covariate")
    acc, brier = _scores(name, "covariate")
    assert brier < brier0 - 0.02, (brier, brier0)
    assert acc > acc0 + 0.01, (acc, acc0)


@pytest.mark.parametrize("name", ["label_shift_em_lr", "label_shift_em_gbm"])
def test_label_shift_correction_helps_under_label_shift(name):
    acc0, brier0 = _scores(name.replace("label_shift_em", "source"), "label")
    acc, brier = _scores(name, "label")
    assert brier < brier0 - 0.01, (brier, brier0)
    assert acc >= acc0, (acc, acc0)


@pytest.mark.parametrize("method", ["em", "bbse"])
def test_label_shift_recovers_the_target_prior(method):
    d = make_shifted_domains("label", n_source=600, n_target=400, random_state=0)
    m = LabelShiftEM(method=method, random_state=0).fit(
        d.X, d.masked_y(0), sample_domain=d.sample_domain
    )
    true = np.bincount(d.y[d.target], minlength=2) / d.target.sum()
    assert np.abs(m.target_prior_ - true).max() < 0.06, (m.target_prior_, true)
    assert np.abs(m.source_prior_ - [0.7, 0.3]).max() < 0.06
    np.testing.assert_allclose(m.predict_proba(d.X).sum(axis=1), 1.0)


def test_label_shift_leaves_source_rows_alone():
    d = make_shifted_domains("label", n_source=300, n_target=200, random_state=1)
    m = LabelShiftEM().fit(d.X, d.masked_y(0), sample_domain=d.sample_domain)
    Xs = d.X[d.source]
    p_src = m.predict_proba(Xs, sample_domain=np.ones(len(Xs), int))
    np.testing.assert_allclose(p_src, m.estimator_.predict_proba(Xs))
    assert not np.allclose(p_src, m.predict_proba(Xs))


def test_em_prior_with_labelled_rows_only_counts_them():
    prior, _ = em_prior(np.empty((0, 2)), np.array([0.5, 0.5]), labelled_counts=[1, 9])
    np.testing.assert_allclose(prior, [0.1, 0.9], atol=1e-6)


def test_tradaboost_uses_a_few_target_labels_under_concept_shift():
    acc0, brier0 = _scores("source_lr", "concept", n_labelled=30)
    acc, brier = _scores("tradaboost", "concept", n_labelled=30)
    assert acc > acc0 + 0.03, (acc, acc0)
    assert brier < brier0, (brier, brier0)


def test_tradaboost_without_target_labels_is_source_only():
    d = make_shifted_domains("concept", n_source=200, n_target=100, random_state=0)
    y = d.masked_y(0)
    m = make_method("tradaboost", random_state=0).fit(d.X, y, sample_domain=d.sample_domain)
    s = make_method("source_lr", random_state=0).fit(d.X, y, sample_domain=d.sample_domain)
    np.testing.assert_allclose(m.predict_proba(d.X), s.predict_proba(d.X), atol=1e-8)


def test_importance_weights_are_normalised_with_effective_sample_size():
    d = make_shifted_domains("covariate", n_source=300, n_target=200, random_state=0)
    m = make_method("iw_domain_lr", random_state=0).fit(
        d.X, d.masked_y(0), sample_domain=d.sample_domain
    )
    w = m.weights_
    assert w.shape == (300,) and np.all(w >= 0)
    assert w.mean() == pytest.approx(1.0)
    assert m.effective_sample_size_ == pytest.approx(w.sum() ** 2 / np.sum(w**2))
    assert 0.05 < m.ess_fraction_ < 1.0  # shifted: fewer effective rows, but not collapsed
    assert w.max() <= 20.0 + 1e-9


@pytest.mark.parametrize("name", NAMES)
def test_labelled_target_rows_are_used(name):
    d = make_shifted_domains("concept", n_source=200, n_target=120, random_state=3)
    kw = dict(sample_domain=d.sample_domain)
    p0 = make_method(name, random_state=0).fit(d.X, d.masked_y(0), **kw).predict_proba(d.X)
    p1 = make_method(name, random_state=0).fit(d.X, d.masked_y(30), **kw).predict_proba(d.X)
    assert np.abs(p1 - p0).max() > 1e-3


def _multi(kind="covariate", n_classes=2, seed=0):
    """Two source domains (1, 2) and one target (-1), with 20 labelled target rows."""
    a = make_shifted_domains(kind, 150, 120, n_classes=n_classes, random_state=seed)
    b = make_shifted_domains(kind, 100, 10, n_classes=n_classes, random_state=seed + 1)
    X = np.vstack([a.X[a.source], b.X[b.source] + 0.3, a.X[a.target]])
    y_true = np.r_[a.y[a.source], b.y[b.source], a.y[a.target]]
    y = y_true.copy()
    y[250 + 20:] = -1
    d = np.r_[np.ones(150, int), 2 * np.ones(100, int), -np.ones(120, int)]
    return X, y, y_true, d


@pytest.mark.parametrize("name", NAMES)
def test_multiclass_and_two_sources(name):
    X, y, y_true, d = _multi("label", n_classes=3)
    m = make_method(name, random_state=0).fit(X, y, sample_domain=d)
    assert list(m.classes_) == [0, 1, 2]
    p = m.predict_proba(X[d < 0])
    assert p.shape == (120, 3) and np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-8)
    assert np.mean(m.predict(X[d < 0]) == y_true[d < 0]) > 0.6
    ps = m.predict_proba(X[d > 0], sample_domain=d[d > 0])
    assert ps.shape == (250, 3) and np.isfinite(ps).all()


def test_string_labels_and_unlabelled_marker():
    d = make_shifted_domains("label", n_source=200, n_target=100, random_state=0)
    y = np.array(["healthy", "sick"], dtype=object)[d.y]
    y[np.flatnonzero(d.target)[20:]] = -1
    m = LabelShiftEM().fit(d.X, y, sample_domain=d.sample_domain)
    assert set(m.predict(d.X[d.target])) <= {"healthy", "sick"}


def test_importing_skada_methods_keeps_metadata_routing_off():
    import subprocess
    import sys

    code = (
        "import sklearn, numpy as np\n"
        "import healthtransfer, healthtransfer.methods as M\n"
        "M.available_methods()\n"
        "assert not sklearn.get_config()['enable_metadata_routing'], 'import'\n"
        "from healthtransfer.data.synthetic import make_shifted_domains\n"
        "d = make_shifted_domains('covariate', 100, 60, random_state=0)\n"
        "for n in ('kmm_lr', 'kliep_lr', 'tca_lr', 'ot_map_lr'):\n"
        "    M.make_method(n).fit(d.X, d.masked_y(0), sample_domain=d.sample_domain)\n"
        "assert not sklearn.get_config()['enable_metadata_routing'], 'fit'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_domain_classifier_calibration_matches_scikit_learns_calibrated_cv():
    """The written-out calibration is CalibratedClassifierCV(sigmoid, 5 folds) without its cost:
    the same importance weights (to solver tolerance)."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from healthtransfer.methods.instance import DomainClassifierIW, _clip_normalise

    d = make_shifted_domains("covariate", n_source=300, n_target=150, random_state=4)
    m = DomainClassifierIW(random_state=0).fit(d.X, d.masked_y(0), sample_domain=d.sample_domain)
    Xs, Xt = d.X[d.sample_domain > 0], d.X[d.sample_domain < 0]
    Z = StandardScaler().fit_transform(np.vstack([Xs, Xt]))
    dom = np.r_[np.zeros(len(Xs), int), np.ones(len(Xt), int)]
    cal = CalibratedClassifierCV(LogisticRegression(C=1.0, max_iter=2000), method="sigmoid", cv=5).fit(Z, dom)
    pt = np.clip(cal.predict_proba(Z[: len(Xs)])[:, 1], 1e-6, 1 - 1e-6)
    ref = _clip_normalise(pt / (1 - pt) * len(Xs) / len(Xt), m.clip_quantile, m.max_weight)
    np.testing.assert_allclose(m.weights_, ref, rtol=2e-3)  # warm-started folds stop within lbfgs tol
