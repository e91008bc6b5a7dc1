import numpy as np
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from healthtransfer.methods import Pooled, SourceOnly, TargetOnly, available_methods, make_method


@parametrize_with_checks([SourceOnly(), TargetOnly(), Pooled()])
def test_sklearn_contract(estimator, check):
    check(estimator)


def _shifted(seed=0):
    rng = np.random.default_rng(seed)
    Xs = rng.normal(size=(200, 2))
    ys = (Xs[:, 0] > 0).astype(int)
    Xt = rng.normal(size=(200, 2))
    yt = (Xt[:, 1] > 0).astype(int)  # concept shift: another feature decides at the target
    return Xs, ys, Xt, yt


def test_target_and_pooled_use_labelled_target_rows():
    Xs, ys, Xt, yt = _shifted()
    X = np.vstack([Xs, Xt[:100]])
    y = np.r_[ys, yt[:60], -np.ones(40, int)]
    d = np.r_[np.ones(200, int), -np.ones(100, int)]
    acc = {}
    for name in ("source_lr", "target_lr", "pooled_lr"):
        m = make_method(name, random_state=0).fit(X, y, sample_domain=d)
        acc[name] = (m.predict(Xt[100:]) == yt[100:]).mean()
    assert acc["target_lr"] > acc["source_lr"] + 0.2
    assert acc["pooled_lr"] > acc["source_lr"]


def test_missing_values_are_imputed_inside():
    Xs, ys, Xt, _ = _shifted()
    Xs[::7, 0] = np.nan
    m = make_method("source_lr").fit(Xs, ys)
    assert np.isfinite(m.predict_proba(np.where(np.isnan(Xt), 0, Xt))).all()
    Xt[::5, 1] = np.nan
    assert np.isfinite(m.predict_proba(Xt)).all()


def test_registry_names_are_unique_and_described():
    specs = available_methods()
    assert {"source_lr", "source_gbm", "target_gbm", "pooled_lr"} <= set(specs)
    for spec in specs.values():
        assert spec.family in {"baseline", "instance", "feature", "model", "relation"}
        assert spec.uses_target in {"none", "unlabelled", "labelled", "both"}
        assert spec.description


def test_unknown_method_suggests_a_name():
    from healthtransfer.errors import UserInputError

    with pytest.raises(UserInputError, match="source_lr"):
        make_method("source_lrr")
