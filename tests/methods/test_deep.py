import numpy as np
import pytest
import torch
from sklearn.utils.estimator_checks import parametrize_with_checks

from healthtransfer.data.synthetic import make_shifted_domains
from healthtransfer.methods import available_methods, make_method
from healthtransfer.methods._torch import (
    coral_loss,
    grad_reverse,
    mmd_linear,
    mmd_loss,
    mmd_quadratic,
)
from healthtransfer.methods.deep import DANN, DeepCORAL, FineTuneMLP, JointMMD, MLPSource

# -- scikit-learn contract -------------------------------------------------------------------
# Small configurations so the ~50 checks per estimator stay fast; a few more epochs and a
# larger learning rate so `check_classifiers_train` (accuracy > 0.83 on blobs) is met.
_FAST = dict(max_epochs=5, lr=1e-2, random_state=0)

# Minibatch SGD is not invariant to repeating a row vs giving it weight 2 (batches differ), so
# the weight/repetition equivalence check cannot hold for any of the deep methods.
_XFAIL = {
    "check_sample_weight_equivalence_on_dense_data":
        "minibatch SGD: a weight of 2 is not the same as a repeated row",
    "check_sample_weight_equivalence_on_sparse_data":
        "minibatch SGD: a weight of 2 is not the same as a repeated row",
}


def _expected_failures(estimator):
    return _XFAIL


@parametrize_with_checks(
    [
        MLPSource(**_FAST),
        JointMMD(mmd="linear", **_FAST),
        DANN(**_FAST),
        DeepCORAL(**_FAST),
        FineTuneMLP(mode="l2sp", finetune_epochs=3, **_FAST),
    ],
    expected_failed_checks=_expected_failures,
)
def test_sklearn_contract(estimator, check):
    check(estimator)


# -- losses ----------------------------------------------------------------------------------
def _gauss(n, d=3, shift=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) + shift


def test_mmd_is_near_zero_for_same_distribution_and_positive_for_shift():
    xs, xt, xu = _gauss(300, seed=0), _gauss(300, seed=1), _gauss(300, shift=1.0, seed=2)
    for kind in ("quadratic", "linear"):
        same = float(mmd_loss(xs, xt, kind=kind))
        shifted = float(mmd_loss(xs, xu, kind=kind))
        assert abs(same) < 0.02, (kind, same)
        assert shifted > 0.1, (kind, shifted)
        assert shifted > 5 * abs(same)
    assert float(mmd_quadratic(xs, xt)) >= 0.0  # V-statistic is non-negative


def test_linear_mmd_agrees_in_expectation_with_quadratic():
    # Both estimators are unbiased for the same MMD^2 (U-statistic for the quadratic one) when
    # they share a kernel bandwidth: their means over repetitions agree; the linear one is noisier.
    lin, quad = [], []
    for r in range(40):
        xs, xt = _gauss(100, seed=2 * r), _gauss(100, shift=0.5, seed=2 * r + 1)
        lin.append(float(mmd_linear(xs, xt, bandwidth=6.0)))
        quad.append(float(mmd_quadratic(xs, xt, bandwidth=6.0, unbiased=True)))
    lin, quad = np.array(lin), np.array(quad)
    se = np.sqrt(lin.var() / len(lin) + quad.var() / len(quad))
    assert quad.mean() > 0.05
    assert abs(lin.mean() - quad.mean()) < 3 * se + 0.01
    assert lin.std() > quad.std()


def test_mmd_rejects_unknown_kind_and_handles_tiny_batches():
    with pytest.raises(ValueError, match="linear"):
        mmd_loss(_gauss(4), _gauss(4), kind="cubic")
    assert float(mmd_linear(_gauss(1), _gauss(5))) == 0.0
    assert float(coral_loss(_gauss(1), _gauss(5))) == 0.0


def test_coral_loss():
    xs, xt = _gauss(500, seed=0), _gauss(500, seed=1)
    assert float(coral_loss(xs, xt)) < 0.01
    assert float(coral_loss(xs, xt * 3.0)) > 0.5


def test_gradient_reversal():
    x = torch.ones(3, requires_grad=True)
    (grad_reverse(x, 0.5) * 2.0).sum().backward()
    assert torch.allclose(x.grad, torch.full((3,), -1.0))
    assert torch.equal(grad_reverse(x, 0.5), x)


# -- determinism, bookkeeping ----------------------------------------------------------------
def test_deterministic_given_random_state_and_global_state_restored():
    d = make_shifted_domains("scale", n_source=120, n_target=80, random_state=0)
    y = d.masked_y(10)
    threads = torch.get_num_threads()
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    for cls in (JointMMD, DANN, FineTuneMLP):
        fits = [cls(max_epochs=10, random_state=7).fit(d.X, y, sample_domain=d.sample_domain)
                for _ in range(2)]
        p1, p2 = (m.predict_proba(d.X) for m in fits)
        np.testing.assert_array_equal(p1, p2)
        other = cls(max_epochs=10, random_state=8).fit(d.X, y, sample_domain=d.sample_domain)
        assert not np.array_equal(p1, other.predict_proba(d.X))
    # the fits neither consumed the global torch generator nor changed global settings
    assert torch.equal(torch.rand(1), before)
    assert torch.get_num_threads() == threads


def test_multiclass_several_sources_and_missing_values():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(160, 4))
    y = np.digitize(X[:, 0] + X[:, 1], [-0.7, 0.7])  # 3 classes
    X[rng.random(X.shape) < 0.1] = np.nan
    dom = np.r_[np.full(60, 1), np.full(50, 2), np.full(50, -1)]
    y_fit = y.copy()
    y_fit[110 + 10:] = -1
    for cls, kw in [(MLPSource, {}), (JointMMD, {}), (JointMMD, {"mmd": "linear"}), (DANN, {}),
                    (DeepCORAL, {}), (FineTuneMLP, {"mode": "last_layer"})]:
        m = cls(max_epochs=5, random_state=0, **kw).fit(X, y_fit, sample_domain=dom)
        p = m.predict_proba(X[110:])
        assert p.shape == (50, 3)
        assert np.isfinite(p).all()
        np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-6)
        assert m.embed(X[:5]).shape == (5, m.embedding_dim)


def test_finetune_without_labelled_target_is_the_source_model():
    d = make_shifted_domains("concept", n_source=100, n_target=60, random_state=0)
    y = d.masked_y(0)
    ft = FineTuneMLP(max_epochs=10, random_state=0).fit(d.X, y, sample_domain=d.sample_domain)
    src = MLPSource(max_epochs=10, random_state=0).fit(d.X, y, sample_domain=d.sample_domain)
    assert not ft.finetuned_
    np.testing.assert_array_equal(ft.predict_proba(d.X), src.predict_proba(d.X))


def test_bad_options_raise():
    d = make_shifted_domains("scale", n_source=30, n_target=20, random_state=0)
    with pytest.raises(ValueError, match="quadratic"):
        JointMMD(mmd="cubic", max_epochs=1).fit(d.X, d.y, sample_domain=d.sample_domain)
    with pytest.raises(ValueError, match="l2sp"):
        FineTuneMLP(mode="all", max_epochs=1).fit(d.X, d.y, sample_domain=d.sample_domain)


def test_registry_entries():
    specs = available_methods()
    names = {"mlp_source", "joint_mmd", "joint_mmd_linear", "dann", "deep_coral",
             "finetune_full", "finetune_last", "finetune_l2sp"}
    assert names <= set(specs)
    for name in names:
        spec = specs[name]
        assert spec.deep
        m = make_method(name, random_state=3)
        assert m.random_state == 3
        assert spec.family == type(m).family
        assert spec.uses_target == type(m).uses_target
        for params in spec.grid:
            m.set_params(**params)
    assert make_method("joint_mmd_linear").mmd == "linear"
    assert make_method("finetune_l2sp").mode == "l2sp"
    assert specs["finetune_full"].needs_labels


# -- behaviour on synthetic shift ------------------------------------------------------------
def _acc(model, d, y_fit, rows):
    model.fit(d.X, y_fit, sample_domain=d.sample_domain)
    return (model.predict(d.X[rows]) == d.y[rows]).mean()


def test_joint_mmd_and_deep_coral_beat_source_mlp_under_rotation():
    # Rotation of the target inputs (3 classes, unlabelled target): aligning the embeddings
    # helps on average. (On `covariate` shift, where p(y|x) is unchanged and the target simply
    # lives elsewhere, alignment does not help and often hurts; on `scale` it is seed-dependent.)
    acc = {"src": [], "mmd": [], "coral": []}
    for seed in range(4):
        d = make_shifted_domains("rotation", n_source=200, n_target=200, n_classes=3,
                                 random_state=seed)
        y = d.masked_y(0)
        acc["src"].append(_acc(MLPSource(random_state=0), d, y, d.target))
        acc["mmd"].append(_acc(JointMMD(random_state=0), d, y, d.target))
        acc["coral"].append(_acc(DeepCORAL(random_state=0), d, y, d.target))
    mean = {k: np.mean(v) for k, v in acc.items()}
    assert mean["mmd"] > mean["src"] + 0.02, mean
    assert mean["coral"] > mean["src"] + 0.01, mean


def _weight_distance(m):
    return np.sqrt(sum(((p.detach().numpy() - m.source_params_[k]) ** 2).sum()
                       for k, p in m.module_.named_parameters() if k.startswith("features")))


def test_finetuning_beats_source_mlp_under_concept_shift_and_l2sp_stays_close():
    acc = {"src": [], "full": [], "last_layer": [], "l2sp": []}
    dist = {"full": [], "last_layer": [], "l2sp": []}
    for seed in range(2):
        d = make_shifted_domains("concept", n_source=200, n_target=200, random_state=seed)
        y = d.masked_y(40, random_state=seed)
        test_rows = d.target & (y == -1)
        acc["src"].append(_acc(MLPSource(random_state=0), d, y, test_rows))
        for mode in ("full", "last_layer", "l2sp"):
            m = FineTuneMLP(mode=mode, random_state=0)
            acc[mode].append(_acc(m, d, y, test_rows))
            assert m.finetuned_
            dist[mode].append(_weight_distance(m))
    mean = {k: np.mean(v) for k, v in acc.items()}
    assert mean["full"] > mean["src"] + 0.05, mean
    assert mean["l2sp"] > mean["src"] + 0.05, mean
    assert mean["last_layer"] > mean["src"] + 0.02, mean
    # L2-SP keeps the shared layers near the source solution; last_layer does not move them.
    assert np.mean(dist["l2sp"]) < 0.7 * np.mean(dist["full"]), dist
    assert np.max(dist["last_layer"]) == 0.0
