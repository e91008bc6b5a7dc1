import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.utils.estimator_checks import parametrize_with_checks

from healthtransfer.data.synthetic import make_shifted_domains
from healthtransfer.methods import get_method, make_method
from healthtransfer.methods.model import (
    ContinuedBoosting,
    LinearPriorTransfer,
    Recalibration,
    ReferenceBoosting,
    ReferenceRecalibration,
    ReferenceStacking,
    Stacking,
    fit_bias_temperature,
    penalised_logistic,
)

_SW = "check_sample_weight_equivalence_on_dense_data"


@pytest.fixture(autouse=True)
def _one_thread():
    """One BLAS/OpenMP thread: on a loaded 2-core box, oversubscribed thread pools (HGB's
    OpenMP, BLAS inside lbfgs) make these small fits 10-100x slower."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield



def _expected_failures(est):
    if isinstance(est, ContinuedBoosting):
        return {_SW: "HistGradientBoosting's binning is not exactly invariant to repeating rows "
                     "vs weighting them (same as scikit-learn's own HGB)."}
    if isinstance(est, ReferenceBoosting):
        return {_SW: "min_samples_leaf counts rows, not their weight (as in scikit-learn's "
                     "own trees), so repeating a row is not the same as weighting it.",
                "check_classifiers_train": "the generic data have no score column: their last "
                "feature, taken as the score, ranks the blobs wrongly, and a few damped rounds "
                "from a wrong starting score cannot reach 83% training accuracy (by design)."}
    return {}


# The reference methods read the LAST column as logit(score); the generic checks' data have
# no such column, but the methods still fit and predict sensibly (the last column is just
# taken as the score), and they declare multi_class=False so only binary data are used.
@parametrize_with_checks(
    [
        ContinuedBoosting(max_iter=20, n_target_iter=5),
        LinearPriorTransfer(),
        Stacking(),
        Recalibration(),
        ReferenceRecalibration(),
        ReferenceStacking(),
        ReferenceBoosting(min_samples_leaf=5, n_iter=10),
    ],
    expected_failed_checks=_expected_failures,
)
def test_sklearn_contract(estimator, check):
    check(estimator)


def _auc(m, d, y):
    test = d.target & (y == -1)
    p = m.fit(d.X, y, sample_domain=d.sample_domain).predict_proba(d.X[test])
    if p.shape[1] == 2:
        return roc_auc_score(d.y[test], p[:, 1]), log_loss(d.y[test], p, labels=[0, 1])
    return roc_auc_score(d.y[test], p, multi_class="ovr"), log_loss(d.y[test], p)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ContinuedBoosting(max_iter=60, random_state=0),
        lambda: LinearPriorTransfer(),
        lambda: Stacking(base="lr"),
    ],
    ids=["continued_boosting", "linear_prior", "stacking"],
)
def test_beats_source_only_on_concept_shift(make):
    gains = []
    for seed in (0, 1):
        d = make_shifted_domains("concept", n_source=400, n_target=400, random_state=seed)
        y = d.masked_y(40, random_state=seed)
        src = make()
        if isinstance(src, ContinuedBoosting):
            src.set_params(n_target_iter=0)  # its own source booster
            base_auc = _auc(src, d, y)[0]
        else:
            base_auc = _auc(make_method("source_lr"), d, y)[0]
        gains.append(_auc(make(), d, y)[0] - base_auc)
    assert np.mean(gains) > 0.03, gains
    assert min(gains) > 0


def test_recalibration_fixes_label_shift_calibration():
    for seed in (0, 1):
        d = make_shifted_domains("label", n_source=400, n_target=400, random_state=seed)
        y = d.masked_y(40, random_state=seed)
        _, ll_src = _auc(make_method("source_lr"), d, y)
        _, ll_rec = _auc(Recalibration(), d, y)
        assert ll_rec < ll_src


def test_recalibration_intercept_only_for_tiny_n():
    d = make_shifted_domains("label", n_source=300, n_target=200, random_state=0)
    small = Recalibration().fit(d.X, d.masked_y(10), sample_domain=d.sample_domain)
    big = Recalibration().fit(d.X, d.masked_y(80), sample_domain=d.sample_domain)
    assert small.slope_ == 1.0 and small.bias_[1] - small.bias_[0] > 0  # prevalence up
    assert big.slope_ != 1.0


def test_no_labels_means_source_model():
    d = make_shifted_domains("concept", n_source=300, n_target=100, random_state=0)
    y = d.masked_y(0)
    Xt = d.X[d.target]
    lp = LinearPriorTransfer().fit(d.X, y, sample_domain=d.sample_domain)
    np.testing.assert_allclose(lp.coef_, lp.source_coef_)
    rec = Recalibration().fit(d.X, y, sample_domain=d.sample_domain)
    src = make_method("source_lr").fit(d.X, y, sample_domain=d.sample_domain)
    np.testing.assert_allclose(rec.predict_proba(Xt), src.predict_proba(Xt), atol=1e-6)
    for m in (Stacking(), ContinuedBoosting(max_iter=20)):
        p = m.fit(d.X, y, sample_domain=d.sample_domain).predict_proba(Xt)
        np.testing.assert_allclose(p, m.predict_proba(Xt, sample_domain=np.ones(len(Xt), int)))


def test_linear_prior_large_C_approaches_target_only_small_C_source():
    d = make_shifted_domains("concept", n_source=300, n_target=300, random_state=0)
    y = d.masked_y(200)
    tight = LinearPriorTransfer(C=1e-4).fit(d.X, y, sample_domain=d.sample_domain)
    loose = LinearPriorTransfer(C=1e3).fit(d.X, y, sample_domain=d.sample_domain)
    assert np.abs(tight.coef_ - tight.source_coef_).max() < 0.05
    assert np.abs(loose.coef_ - loose.source_coef_).max() > 0.5


@pytest.mark.parametrize(
    "make",
    [
        lambda: ContinuedBoosting(max_iter=30, random_state=0),
        LinearPriorTransfer,
        Stacking,
        Recalibration,
    ],
    ids=["continued_boosting", "linear_prior", "stacking", "recalibration"],
)
def test_multiclass_and_two_sources(make):
    d = make_shifted_domains("concept", n_source=400, n_target=300, n_classes=3, random_state=0)
    dom = d.sample_domain.copy()
    dom[np.flatnonzero(d.source)[::2]] = 2  # two source sites
    y = d.masked_y(45)
    m = make().fit(d.X, y, sample_domain=dom)
    test = d.target & (y == -1)
    p = m.predict_proba(d.X[test])
    assert p.shape == (test.sum(), 3)
    np.testing.assert_allclose(p.sum(axis=1), 1, atol=1e-8)
    auc = roc_auc_score(d.y[test], p, multi_class="ovr")
    assert auc > 0.6


def test_multiclass_target_adaptation_helps():
    d = make_shifted_domains("concept", n_source=400, n_target=400, n_classes=3, random_state=1)
    y = d.masked_y(60, random_state=1)
    src, _ = _auc(make_method("source_lr"), d, y)
    lp, _ = _auc(LinearPriorTransfer(), d, y)
    assert lp > src


def test_target_missing_a_class_is_handled():
    d = make_shifted_domains("concept", n_source=300, n_target=100, n_classes=3, random_state=0)
    y = d.masked_y(0)
    t = np.flatnonzero(d.target)
    keep = t[d.y[t] != 2][:20]
    y[keep] = d.y[keep]
    for m in (LinearPriorTransfer(), Stacking(), Recalibration(), ContinuedBoosting(max_iter=20)):
        p = m.fit(d.X, y, sample_domain=d.sample_domain).predict_proba(d.X[t])
        assert np.isfinite(p).all() and p.shape == (len(t), 3)


# -- reference score ---------------------------------------------------------------------------
def _reference_case(seed=0, n_s=400, n_t=400, missing=0.1):
    """Target outcome driven by something the local features barely see but an external score
    (APACHE-like) captures; the score is slightly miscalibrated and missing at some rows."""
    rng = np.random.default_rng(seed)

    def site(n, target):
        X = rng.normal(size=(n, 5))
        h = rng.normal(size=n)  # severity the features do not measure
        if target:
            z = 2.0 * h + 0.6 * X[:, 0] - 0.5
        else:
            z = 1.5 * X[:, 1] - 1.0 * X[:, 2] + 0.5 * h
        y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
        score_logit = 0.7 * (2.0 * h + 0.6 * X[:, 0]) + 0.8 + 0.2 * rng.normal(size=n)
        score_logit[rng.random(n) < missing] = np.nan
        return np.column_stack([X, score_logit]), y

    Xs, ys = site(n_s, False)
    Xt, yt = site(n_t, True)
    return Xs, ys, Xt, yt


@pytest.mark.parametrize("cls", [ReferenceRecalibration, ReferenceStacking, ReferenceBoosting])
def test_reference_methods_beat_source_only_with_good_score(cls):
    for seed in (0, 1):
        Xs, ys, Xt, yt = _reference_case(seed)
        n_lab = 40
        X = np.vstack([Xs, Xt])
        y = np.r_[ys, yt[:n_lab], -np.ones(len(yt) - n_lab, int)]
        d = np.r_[np.ones(len(ys), int), -np.ones(len(yt), int)]
        test = slice(n_lab, None)
        # source-only never sees the score: it is not an ordinary feature
        src = make_method("source_lr").fit(Xs[:, :-1], ys)
        p_src = src.predict_proba(Xt[test, :-1])[:, 1]
        m = cls().fit(X, y, sample_domain=d)
        p = m.predict_proba(Xt[test])[:, 1]
        assert np.isfinite(p).all()
        assert roc_auc_score(yt[test], p) > roc_auc_score(yt[test], p_src) + 0.1
        assert log_loss(yt[test], p) < log_loss(yt[test], p_src)


def test_reference_recalibration_slope_and_fallback():
    Xs, ys, Xt, yt = _reference_case(0, missing=0.0)
    X = np.vstack([Xs, Xt])
    d = np.r_[np.ones(len(ys), int), -np.ones(len(yt), int)]
    y = np.r_[ys, yt[:100], -np.ones(len(yt) - 100, int)]
    m = ReferenceRecalibration().fit(X, y, sample_domain=d)
    assert 1.1 < m.slope_ < 2.0  # true slope 1 / 0.7
    Xmiss = Xt.copy()
    Xmiss[:, -1] = np.nan
    p = m.predict_proba(Xmiss)
    assert np.isfinite(p).all()
    np.testing.assert_allclose(p, ReferenceStacking().fit(X, y, sample_domain=d)
                               .predict_proba(Xmiss), atol=0.5)  # both fall back, both finite


def test_reference_methods_are_binary_and_registered():
    d = make_shifted_domains("concept", n_source=100, n_target=50, n_classes=3, random_state=0)
    for cls in (ReferenceRecalibration, ReferenceStacking, ReferenceBoosting):
        with pytest.raises(ValueError, match="binary"):
            cls().fit(d.X, d.masked_y(10), sample_domain=d.sample_domain)
    for name in ("reference_recalibration", "reference_stacking", "reference_boosting"):
        spec = get_method(name)
        assert spec.uses_reference and not spec.multiclass and spec.family == "model"
    assert not get_method("recalibration_lr").uses_reference
    assert not get_method("source_lr").uses_reference


def test_helpers():
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(300, 3))
    y = (rng.random(300) < 1 / (1 + np.exp(-(2 * Z[:, 0] - Z[:, 1])))).astype(int)
    W, b = penalised_logistic(Z, y, 2, coef_penalty=1e-6)
    from sklearn.linear_model import LogisticRegression

    ref = LogisticRegression(C=1e6, max_iter=1000).fit(Z, y)
    np.testing.assert_allclose(W, ref.coef_, atol=1e-2)
    S = np.column_stack([np.zeros(300), 2 * Z[:, 0] - Z[:, 1]]) / 2.0
    beta, bias = fit_bias_temperature(S, y, slope=True)
    assert 1.6 < beta < 2.5


def _score_misses_a_local_effect(seed, n_s=1500, n_t=600):
    """The external score ranks well but misses one effect the local rows show (a unit type
    that does worse than the score says), at the source and the target alike."""
    rng = np.random.default_rng(seed)

    def site(n, shift):
        X = rng.normal(size=(n, 4))
        h = rng.normal(size=n)
        z = 1.5 * h + 1.5 * (X[:, 1] > 0.5) - 2.0 + shift
        y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
        return np.column_stack([X, 1.5 * h - 1.5]), y

    Xs, ys = site(n_s, 0.0)
    Xt, yt = site(n_t, 0.3)
    return Xs, ys, Xt, yt


@pytest.mark.parametrize("n_lab", [0, 200])
def test_reference_boosting_learns_what_the_score_misses(n_lab):
    """Designed-for shift: boosting from the score adds the missed effect, so it ranks better
    than the score alone (which recalibration cannot change) and than source-only."""
    gains = []
    for seed in (0, 1, 2):
        Xs, ys, Xt, yt = _score_misses_a_local_effect(seed)
        X = np.vstack([Xs, Xt])
        y = np.r_[ys, yt[:n_lab], -np.ones(len(yt) - n_lab, int)]
        d = np.r_[np.ones(len(ys), int), -np.ones(len(yt), int)]
        test = slice(200, None)  # the same test rows at both budgets
        p_boost = ReferenceBoosting(random_state=0).fit(X, y, sample_domain=d).predict_proba(Xt[test])[:, 1]
        p_recal = ReferenceRecalibration().fit(X, y, sample_domain=d).predict_proba(Xt[test])[:, 1]
        p_src = make_method("source_gbm", random_state=0).fit(Xs[:, :-1], ys).predict_proba(Xt[test, :-1])[:, 1]
        auc_b = roc_auc_score(yt[test], p_boost)
        assert auc_b > roc_auc_score(yt[test], p_src)
        gains.append(auc_b - roc_auc_score(yt[test], p_recal))
        assert log_loss(yt[test], p_boost) < log_loss(yt[test], p_recal) + 0.01
    assert np.mean(gains) > 0.01


def test_reference_boosting_is_the_score_without_trees_and_falls_back():
    Xs, ys, Xt, yt = _score_misses_a_local_effect(0, n_s=40, n_t=20)
    X = np.vstack([Xs, Xt])
    d = np.r_[np.ones(len(ys), int), -np.ones(len(yt), int)]
    y = np.r_[ys, -np.ones(len(yt), int)]
    m = ReferenceBoosting(min_samples_leaf=30).fit(X, y, sample_domain=d)  # too few rows for a leaf
    assert m.trees_ == []
    np.testing.assert_allclose(m.predict_proba(Xt)[:, 1], 1 / (1 + np.exp(-Xt[:, -1])))
    Xmiss = Xt.copy()
    Xmiss[:, -1] = np.nan
    assert np.isfinite(m.predict_proba(Xmiss)).all()
    assert not get_method("reference_boosting").needs_labels


def test_reference_recalibration_needs_no_target_labels():
    """At n_t = 0 the score is recalibrated on the source rows, so it can be the label-free bar."""
    import numpy as np

    assert not get_method("reference_recalibration").needs_labels
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 3))
    y = (rng.random(300) < 1 / (1 + np.exp(-(X[:, 2] - 1)))).astype(int)
    d = np.r_[np.ones(200, int), -np.ones(100, int)]
    y[200:] = -1
    m = make_method("reference_recalibration", random_state=0).fit(X, y, sample_domain=d)
    assert m.slope_ > 0 and m.predict_proba(X[200:]).shape == (100, 2)


def test_methods_registered():
    for name in ("continued_boosting", "linear_prior", "stacking_lr", "stacking_gbm",
                 "recalibration_lr", "recalibration_gbm"):
        spec = get_method(name)
        assert spec.family == "model" and spec.needs_labels
        make_method(name, random_state=0)


def test_heart_sized_fits_are_valid_reproducible_and_use_target_labels(check_fits_heart_sized):
    """Fit times of the same problem: ``benchmarks/fit_times.py``."""
    check_fits_heart_sized(("continued_boosting", "linear_prior", "stacking_lr", "stacking_gbm",
                            "recalibration_lr", "recalibration_gbm", "reference_recalibration",
                            "reference_stacking", "reference_boosting"))
