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
    assert rec.refit_ in ("shrunk", "none") and rec.weight_ < 0.5
    assert np.corrcoef(src.predict(X[test]), rec.predict(X[test]))[0, 1] > 0.999


def test_importance_weights_follow_the_shift():
    X, y, d, fit, ym, test = _setup(0)
    m = make_method("iw_cox", random_state=0).fit(X[fit], ym[fit], sample_domain=d[fit])
    src_x0 = X[fit][d[fit] > 0, 0]
    # the target sits at larger x0: source rows there must weigh more
    assert np.corrcoef(src_x0, m.weights_)[0, 1] > 0.3


def test_linear_forms_reproduce_the_predictions():
    X, y, d, fit, ym, test = _setup(200)
    for name in ("source_cox", "pooled_cox", "recalibrated_cox", "revised_cox", "iw_cox", "stratified_cox"):
        m = make_method(name, random_state=0).fit(X[fit], ym[fit], sample_domain=d[fit])
        lf = m.linear_form()
        lp = X[test] @ np.asarray(lf["coef"])
        assert np.corrcoef(lp, m.predict(X[test]))[0, 1] > 0.999, name


def _whas500():
    """scikit-survival's bundled Worcester Heart Attack Study rows: men are the source, women the
    target (a real population shift in age and baseline risk); follow-up in years."""
    from sksurv.datasets import load_whas500

    from healthtransfer.data.outcomes import SURV_DTYPE

    f, yy = load_whas500()
    X = f[["age", "bmi", "hr", "sysbp", "diasbp", "chf", "afb", "sho"]].astype(float).to_numpy()
    X = (X - X.mean(0)) / X.std(0)
    y = np.empty(len(X), SURV_DTYPE)
    y["event"], y["time"] = yy["fstat"], yy["lenfol"] / 365.25
    return X, y, np.where(f["gender"].to_numpy().astype(float) == 1, -1, 1)


def _recalibrated(X, y, d, pool, labelled, **kw):
    lab = d > 0
    lab[labelled] = True
    fit = np.r_[np.flatnonzero(d > 0), pool]
    return make_method("recalibrated_cox", **kw).fit(X[fit], masked_survival(y, lab)[fit], sample_domain=d[fit])


def test_recalibration_with_a_handful_of_events_stays_near_the_source_on_real_rows():
    from healthtransfer.evaluation.survival import calibration_at_horizon

    X, y, d = _whas500()
    tgt = np.flatnonzero(d < 0)
    rng = np.random.default_rng(0)
    oe = {"source": [], "shrunk": [], "full": []}
    events = []
    for _ in range(12):
        perm = rng.permutation(tgt)
        pool, test = perm[:100], perm[100:]
        labelled = pool[:10]  # ten labelled women: about 4 deaths
        events.append(int(y["event"][labelled].sum()))
        fit = np.r_[np.flatnonzero(d > 0), pool]
        models = {"source": make_method("source_cox").fit(X[fit], masked_survival(y, d > 0)[fit], sample_domain=d[fit]),
                  "shrunk": _recalibrated(X, y, d, pool, labelled),
                  "full": _recalibrated(X, y, d, pool, labelled, prior_events=0.0)}
        for k, m in models.items():
            oe[k].append(calibration_at_horizon(y[test], 1 - m.predict_survival(X[test], [1.0])[:, 0], 1.0)["oe"])
    err = {k: np.nanmean(np.abs(np.log(np.asarray(v, float)))) for k, v in oe.items()}
    assert 2 <= np.median(events) <= 6
    # the unshrunk refit on ~4 events wrecks calibration; the shrunk one stays near the source's
    assert err["shrunk"] < 0.5 * err["full"], err
    assert err["shrunk"] < err["source"] + 0.05, err


def test_recalibration_with_many_events_approaches_the_full_refit():
    X, y, d = _whas500()
    perm = np.random.default_rng(1).permutation(np.flatnonzero(d < 0))
    pool, test = perm[:150], perm[150:]
    shrunk = _recalibrated(X, y, d, pool, pool)
    full = _recalibrated(X, y, d, pool, pool, prior_events=0.0)
    lab = d > 0
    src = make_method("source_cox").fit(X[d > 0], masked_survival(y, lab)[d > 0], sample_domain=d[d > 0])
    risk = {k: 1 - m.predict_survival(X[test], [1.0])[:, 0] for k, m in (("s", shrunk), ("f", full), ("src", src))}
    assert shrunk.n_events_ > 50 and shrunk.weight_ > 0.85
    assert np.abs(risk["s"] - risk["f"]).mean() < 0.25 * np.abs(risk["src"] - risk["f"]).mean()
    assert abs(shrunk.slope_ - full.slope_) < 0.1 * abs(1 - full.slope_) + 0.02

def test_stratified_cox_has_a_baseline_per_site_and_matches_lifelines():
    import pandas as pd

    X, y, d, fit, ym, test = _setup(200)
    d = d.copy()
    d[(d > 0) & (X[:, 2] > 0)] = 2  # two source sites
    m = make_method("stratified_cox").fit(X[fit], ym[fit], sample_domain=d[fit])
    assert m.strata_ == [0, 1, 2] and m.baseline_from_ == "target"
    # the target's curves are lifelines' own for the target stratum (at its event times: between
    # them lifelines interpolates, we keep the step function)
    rows = pd.DataFrame(X[test][:, m.used_], columns=[f"x{i}" for i in m.used_]).assign(_site=0)
    times = m.est_.unique_times_[::25]
    want = m.lifelines_.predict_survival_function(rows, times=times).to_numpy().T
    assert np.allclose(m.predict_survival(X[test], times), want, atol=1e-8)
    # a separate baseline per site: the strata's curves differ
    H = m.lifelines_.baseline_cumulative_hazard_
    assert not np.allclose(H[1].to_numpy(), H[2].to_numpy())
    # with a handful of target events the target is predicted with the source strata's baselines
    few = make_method("stratified_cox").fit(X[fit], _setup(6)[4][fit], sample_domain=d[fit])
    assert few.baseline_from_ == "sources"
    # a constant column (a category absent from the fitted rows) gets coefficient 0
    Xc = np.column_stack([X, np.ones(len(X))])
    const = make_method("stratified_cox").fit(Xc[fit], ym[fit], sample_domain=d[fit])
    assert const.est_.coef_[-1] == 0 and np.allclose(const.predict(Xc[test]), m.predict(X[test]), atol=1e-6)


@pytest.mark.parametrize("shift,n_lab", [(1.0, 60), (2.0, 120), (2.5, 40)])
def test_recalibration_blend_lies_between_the_source_and_the_full_refit(shift, n_lab):
    """At every time, the shrunk recalibration's mean risk over the target rows lies between the
    source model's and the full refit's (prior_events=0): a blend of two calibrations, never
    outside both (the refit's baseline is re-expressed for the blended slope, as the source's)."""
    from healthtransfer.methods.survival import CoxSurvival, RecalibratedCox

    X, y, d = make_survival_domains(n_source=300, n_target=240, shift=shift, random_state=3)
    lab = np.zeros(int((d < 0).sum()), bool)
    lab[:n_lab] = True
    yf = np.concatenate([y[d > 0], masked_survival(y[d < 0], lab)])
    Xt = X[d < 0]
    times = np.quantile(y["time"][d < 0][y["event"][d < 0]], [0.2, 0.4, 0.6, 0.8])

    def mean_risk(est):
        return 1 - est.predict_survival(Xt, times).mean(axis=0)

    src = mean_risk(CoxSurvival(rows="source").fit(X, yf, sample_domain=d))
    full_m = RecalibratedCox(prior_events=0.0).fit(X, yf, sample_domain=d)
    shrunk_m = RecalibratedCox().fit(X, yf, sample_domain=d)
    full, shrunk = mean_risk(full_m), mean_risk(shrunk_m)
    assert 0 < shrunk_m.weight_ < 1 and abs(full_m.slope_fitted_ - 1) > 0.05  # a real blend of two models
    lo, hi = np.minimum(src, full) - 1e-9, np.maximum(src, full) + 1e-9
    assert np.all((lo <= shrunk) & (shrunk <= hi)), (src, shrunk, full)
