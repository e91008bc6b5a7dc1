"""The one label-shift module: EM gives the maximum-likelihood prior (with labelled target counts),
BBSE recovers a known prior, and the diagnostics and the method call the same estimators."""

import numpy as np
import pytest
from scipy.optimize import minimize, minimize_scalar

from healthtransfer._label_shift import bbse_prior, em_prior


def _loglik(prior, P, ps, counts):
    return np.log((P / ps) @ prior).sum() + counts @ np.log(prior)


@pytest.mark.parametrize("true_q,counts", [(0.97, [0, 0]), (0.5, [3, 7]), (0.03, [5, 0]), (0.8, [0, 4])])
def test_binary_prior_is_the_likelihood_maximum(true_q, counts):
    rng = np.random.default_rng(1)
    ps = np.array([0.6, 0.4])
    # posteriors of a calibrated source model on target rows drawn with prior true_q
    y = rng.random(400) < true_q
    score = rng.normal(np.where(y, 1.5, -1.5))
    lik = np.column_stack([np.exp(-0.5 * (score + 1.5) ** 2), np.exp(-0.5 * (score - 1.5) ** 2)])
    P = lik * ps / (lik * ps).sum(axis=1, keepdims=True)
    counts = np.asarray(counts, float)
    prior, ok = em_prior(P, ps, labelled_counts=counts)
    best = minimize_scalar(lambda q: -_loglik(np.array([1 - q, q]), P, ps, counts),
                           bounds=(1e-9, 1 - 1e-9), method="bounded", options={"xatol": 1e-10})
    assert ok
    assert prior[1] == pytest.approx(best.x, abs=1e-6)


def test_multiclass_prior_is_the_likelihood_maximum_and_batches():
    rng = np.random.default_rng(2)
    ps = np.array([0.5, 0.3, 0.2])
    P = rng.dirichlet([1, 1, 1], size=300)
    counts = np.array([2.0, 0.0, 6.0])
    prior, ok = em_prior(P, ps, labelled_counts=counts)

    def neg(z):
        q = np.exp(z - z.max())
        return -_loglik(q / q.sum(), P, ps, counts)

    z = minimize(neg, np.zeros(3), method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000}).x
    q = np.exp(z - z.max())
    assert ok
    np.testing.assert_allclose(prior, q / q.sum(), atol=1e-4)
    many, _ = em_prior(np.stack([P, P]), ps, labelled_counts=counts)
    np.testing.assert_allclose(many, np.stack([prior, prior]))


def test_bbse_recovers_a_known_prior_with_nonnegative_weights():
    rng = np.random.default_rng(3)
    # a confusion matrix of soft predictions: class j's rows predict j with probability 0.8
    ys = rng.integers(0, 2, 2000)
    P_oof = np.where(ys[:, None] == np.arange(2), 0.8, 0.2)
    yt = (rng.random(3000) < 0.85).astype(int)
    P_t = np.where(yt[:, None] == np.arange(2), 0.8, 0.2)
    ps = np.bincount(ys) / len(ys)
    prior = bbse_prior(P_oof, ys, P_t, ps)
    assert prior[1] == pytest.approx(yt.mean(), abs=0.01)
    # a target more extreme than the confusion matrix allows: weights stay >= 0, prior valid
    prior = bbse_prior(P_oof, ys, np.tile([0.05, 0.95], (50, 1)), ps)
    assert np.all(prior >= 0) and prior.sum() == pytest.approx(1.0)
    # labelled target rows join the estimated class totals
    both = bbse_prior(P_oof, ys, P_t, ps, labelled_counts=[3000, 0])
    assert both[0] == pytest.approx((bbse_prior(P_oof, ys, P_t, ps)[0] * 3000 + 3000) / 6000)


def test_diagnostics_and_method_share_the_estimators():
    import healthtransfer.methods.instance as method
    import healthtransfer.shift._label as diagnostics

    assert diagnostics.em_prior is method.em_prior
    assert diagnostics.bbse_prior is method.bbse_prior
