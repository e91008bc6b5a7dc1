"""Survival transfer methods: contract, and they do what they claim on synthetic shift."""

import numpy as np
import pytest

from healthtransfer.data.outcomes import masked_survival
from healthtransfer.evaluation.survival import survival_scores
from healthtransfer.methods import available_methods, make_method
from healthtransfer.methods.survival import make_survival_domains

SURVIVAL = [n for n, s in available_methods().items() if s.outcome == "survival"]


def _setup(n_lab, seed=0, shift=1.5):
    X, y, d = make_survival_domains(n_source=400, n_target=400, shift=shift, random_state=seed)
    tgt = np.flatnonzero(d < 0)
    fit = np.r_[np.flatnonzero(d > 0), tgt[:200]]
    lab = np.zeros(len(X), bool)
    lab[d > 0] = True
    lab[tgt[:n_lab]] = True
    return X, y, d, fit, masked_survival(y, lab), tgt[200:]


def test_registry_has_every_family():
    fams = {available_methods()[n].family for n in SURVIVAL}
    assert fams == {"baseline", "instance", "feature", "model"}


@pytest.mark.parametrize("name", SURVIVAL)
def test_contract(name):
    X, y, d, fit, ym, test = _setup(60)
    Xr = np.column_stack([X, X[:, 0]]) if available_methods()[name].uses_reference else X
    m = make_method(name, random_state=0).fit(Xr[fit], ym[fit], sample_domain=d[fit])
    S = m.predict_survival(Xr[test], [0.5, 1.0, 4.0])
    assert S.shape == (len(test), 3)
    assert np.all((S >= 0) & (S <= 1)) and np.all(np.diff(S, axis=1) <= 1e-12)  # survival never rises
    risk = m.predict_risk(Xr[test], [1.0])
    assert np.allclose(risk[:, 0], 1 - S[:, 1])
    assert np.isfinite(m.predict(Xr[test])).all()


def test_rejects_a_non_survival_target():
    with pytest.raises(ValueError, match="structured array"):
        make_method("source_cox").fit(np.zeros((4, 2)), np.array([0, 1, 0, 1]))


def _c(name, n_lab, seed):
    X, y, d, fit, ym, test = _setup(n_lab, seed)
    m = make_method(name, random_state=seed).fit(X[fit], ym[fit], sample_domain=d[fit])
    grid = np.linspace(0.05, 8, 40)
    return survival_scores(y[test], m.predict(X[test]), m.predict_survival(X[test], grid), grid, [1.0, 3.0])


def test_pooled_and_revised_beat_source_only_under_concept_mismatch():
    # the linear source model misranks the shifted target region (non-linear hazard):
    # target labels must help
    gains = [_c("revised_cox", 200, s)["c_harrell"] - _c("source_cox", 200, s)["c_harrell"] for s in range(3)]
    assert np.mean(gains) > 0.01


def test_recalibration_restores_calibration_at_the_horizon():
    oe_src = [_c("source_cox", 200, s)["oe_3"] for s in range(3)]
    oe_rec = [_c("recalibrated_cox", 200, s)["oe_3"] for s in range(3)]
    assert np.mean(np.abs(np.log(oe_rec))) < np.mean(np.abs(np.log(oe_src)))


def test_recalibration_with_few_events_keeps_the_source_ranking():
    X, y, d, fit, ym, test = _setup(8)
    src = make_method("source_cox").fit(X[fit], ym[fit], sample_domain=d[fit])
    rec = make_method("recalibrated_cox").fit(X[fit], ym[fit], sample_domain=d[fit])
    assert rec.refit_ in ("scale", "none")
    assert np.corrcoef(src.predict(X[test]), rec.predict(X[test]))[0, 1] > 0.999


def test_importance_weights_follow_the_shift():
    X, y, d, fit, ym, test = _setup(0)
    m = make_method("iw_cox", random_state=0).fit(X[fit], ym[fit], sample_domain=d[fit])
    src_x0 = X[fit][d[fit] > 0, 0]
    # the target sits at larger x0: source rows there must weigh more
    assert np.corrcoef(src_x0, m.weights_)[0, 1] > 0.3


def test_linear_forms_reproduce_the_predictions():
    X, y, d, fit, ym, test = _setup(200)
    for name in ("source_cox", "pooled_cox", "recalibrated_cox", "revised_cox", "iw_cox"):
        m = make_method(name, random_state=0).fit(X[fit], ym[fit], sample_domain=d[fit])
        lf = m.linear_form()
        lp = X[test] @ np.asarray(lf["coef"])
        assert np.corrcoef(lp, m.predict(X[test]))[0, 1] > 0.999, name


def test_few_events_rescale_the_source_hazard_towards_the_target():
    # the target's hazard is the source's times 3 (same covariate effects): with a handful of
    # events the rescaled source model must move its 2-unit risk most of the way there
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1400, 3))
    lp = X @ [0.7, -0.5, 0.0]
    d = np.r_[np.ones(800, int), -np.ones(600, int)]
    t = rng.exponential(20.0 * np.exp(-lp)) / np.where(d < 0, 3.0, 1.0)
    c = rng.exponential(30.0, len(X))
    from healthtransfer.data.outcomes import SURV_DTYPE
    y = np.empty(len(X), SURV_DTYPE)
    y["time"], y["event"] = np.minimum(t, c), t <= c
    tgt = np.flatnonzero(d < 0)
    lab = np.ones(len(X), bool)
    lab[tgt] = False
    lab[tgt[:8]] = True  # eight random labelled target rows: under 10 events
    m = make_method("recalibrated_cox").fit(X[:1200], masked_survival(y, lab)[:1200], sample_domain=d[:1200])
    assert y["event"][tgt[:8]].sum() < 10
    assert m.refit_ == "scale" and 1.8 < m.hazard_scale_ < 6.0, m.hazard_scale_
