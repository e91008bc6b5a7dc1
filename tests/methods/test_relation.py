import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score
from sklearn.utils.estimator_checks import parametrize_with_checks

from healthtransfer.data.synthetic import make_shifted_domains
from healthtransfer.methods import get_method, make_method
from healthtransfer.methods.relation import FeatureBridge, GraphLabelPropagation, RelationImputation


@pytest.fixture(autouse=True)
def _one_thread():
    """One BLAS/OpenMP thread: on a loaded 2-core box, oversubscribed thread pools (HGB's
    OpenMP, BLAS inside lbfgs) make these small fits 10-100x slower."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield



def _expected_failures(est):
    if isinstance(est, GraphLabelPropagation):
        return {"check_sample_weight_equivalence_on_dense_data":
                "the kNN graph counts a repeated row as several nodes; weights only enter the "
                "base classifier, so weighting != repeating."}
    return {}


@parametrize_with_checks(
    [GraphLabelPropagation(), RelationImputation(), RelationImputation(imputer="trees")],
    expected_failed_checks=_expected_failures,
)
def test_sklearn_contract(estimator, check):
    check(estimator)


def _fit_eval(m, d, y):
    test = d.target & (y == -1)
    p = m.fit(d.X, y, sample_domain=d.sample_domain).predict_proba(d.X[test])
    yt = d.y[test]
    return {
        "auc": roc_auc_score(yt, p[:, 1]) if p.shape[1] == 2 else roc_auc_score(yt, p, multi_class="ovr"),
        "acc": float((p.argmax(1) == yt).mean()),
        "ll": log_loss(yt, p, labels=np.arange(p.shape[1])),
    }


@pytest.mark.parametrize("n_labelled", [0, 40])
def test_relation_imputation_beats_median_imputation_on_missing_feature(n_labelled):
    for seed in (0, 1, 2):
        d = make_shifted_domains("missing_feature", n_source=400, n_target=400, random_state=seed)
        y = d.masked_y(n_labelled, random_state=seed)
        base = _fit_eval(make_method("source_lr"), d, y)  # median imputation + indicators
        ours = _fit_eval(RelationImputation(), d, y)
        assert ours["acc"] > base["acc"], (seed, ours, base)
        assert ours["ll"] < base["ll"], (seed, ours, base)
        assert ours["auc"] > base["auc"] - 0.005, (seed, ours, base)


def test_feature_bridge_fills_a_feature_absent_at_the_target():
    rng = np.random.default_rng(0)
    Xs = rng.normal(size=(300, 4))
    Xs[:, 3] = 2 * Xs[:, 0] - Xs[:, 1] + 0.1 * rng.normal(size=300)
    Xt = rng.normal(size=(100, 4))
    truth = 2 * Xt[:, 0] - Xt[:, 1]
    Xt[:, 3] = np.nan  # never measured at the target
    Xt[::10, 0] = np.nan  # shared feature, sometimes missing
    fb = FeatureBridge().fit(Xs, Xt)
    assert fb.bridged_features_.tolist() == [3]
    filled = fb.transform(Xt)
    ok = ~np.isnan(Xt[:, 0])
    assert np.corrcoef(filled[ok, 3], truth[ok])[0, 1] > 0.98
    assert np.isnan(filled[:, 0]).sum() == 10  # the rest is left to the iterative imputer


def test_relation_imputation_with_a_feature_entirely_absent_at_target():
    d = make_shifted_domains("missing_feature", n_source=400, n_target=300, random_state=0)
    X = d.X.copy()
    X[d.target, 0] = np.nan
    y = d.masked_y(0)
    m = RelationImputation().fit(X, y, sample_domain=d.sample_domain)
    p = m.predict_proba(X[d.target])
    assert np.isfinite(p).all()
    src = make_method("source_lr").fit(X, y, sample_domain=d.sample_domain).predict_proba(X[d.target])
    yt = d.y[d.target]
    assert (p.argmax(1) == yt).mean() > (src.argmax(1) == yt).mean()


def _cluster_shift(seed, n_classes=2, n=300):
    """Class clusters; the target site measures in other units (affine per feature): the
    clusters keep their structure but sit elsewhere."""
    return make_shifted_domains("scale", n_source=n, n_target=n, n_classes=n_classes,
                                random_state=seed)


def test_label_propagation_beats_source_only_on_cluster_shift():
    gains = []
    for seed in (0, 1, 2):
        d = _cluster_shift(seed)
        y = d.masked_y(0)
        base = _fit_eval(make_method("source_lr"), d, y)
        ours = _fit_eval(GraphLabelPropagation(), d, y)
        gains.append(ours["acc"] - base["acc"])
        assert ours["acc"] >= base["acc"], (seed, ours, base)
    assert np.mean(gains) > 0.05, gains


def test_label_propagation_uses_labelled_target_rows_and_multiclass():
    d = _cluster_shift(3, n_classes=3)
    dom = d.sample_domain.copy()
    dom[np.flatnonzero(d.source)[::2]] = 2  # two source sites, each standardised on its own
    for n_lab in (0, 30):
        y = d.masked_y(n_lab)
        m = GraphLabelPropagation().fit(d.X, y, sample_domain=dom)
        test = d.target & (y == -1)
        p = m.predict_proba(d.X[test])
        assert p.shape == (test.sum(), 3)
        np.testing.assert_allclose(p.sum(1), 1)
        assert (p.argmax(1) == d.y[test]).mean() > 0.8


def test_relation_multiclass_and_two_sources():
    d = make_shifted_domains("missing_feature", n_source=400, n_target=200, n_classes=3,
                             random_state=0)
    dom = d.sample_domain.copy()
    dom[np.flatnonzero(d.source)[::2]] = 2
    y = d.masked_y(20)
    for m in (RelationImputation(), RelationImputation(base="gbm", imputer="trees"),
              GraphLabelPropagation()):
        p = m.fit(d.X, y, sample_domain=dom).predict_proba(d.X[d.target])
        assert p.shape == (200, 3) and np.isfinite(p).all()


def test_registered():
    for name in ("graph_label_propagation", "relation_imputation_lr", "relation_imputation_gbm"):
        spec = get_method(name)
        assert spec.family == "relation"
        make_method(name, random_state=0)


def test_heart_sized_fits_are_valid_reproducible_and_use_target_labels(check_fits_heart_sized):
    """Fit times of the same problem: ``benchmarks/fit_times.py``."""
    check_fits_heart_sized(("graph_label_propagation", "relation_imputation_lr", "relation_imputation_gbm"), target_hidden_cols=3)
