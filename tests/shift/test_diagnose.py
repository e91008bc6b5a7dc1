import json

import numpy as np
import pandas as pd
import pytest

from healthtransfer.data import load_dataset
from healthtransfer.data.dataset import Dataset
from healthtransfer.data.harmonise import HarmonisationReport
from healthtransfer.data.synthetic import make_shifted_domains
from healthtransfer.errors import UserInputError
from healthtransfer.shift import ShiftReport, diagnose, diagnose_study_cli, em_prior


def _dataset(X, y, site, *, categorical=None, class_names=(0, 1)) -> Dataset:
    cols = [f"x{i}" for i in range(X.shape[1])]
    frame = pd.DataFrame(X, columns=cols)
    feats = list(cols)
    for name, values in (categorical or {}).items():
        frame[name] = values
        feats.append(name)
    frame["site"] = site
    frame["y"] = y
    return Dataset(name="synthetic", frame=frame, label="y", domain="site", features=feats,
                   categorical=list(categorical or {}), report=HarmonisationReport(rows=pd.DataFrame()),
                   class_names=list(class_names))


def _covariate(shift: float, seed: int, n: int = 400) -> Dataset:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(2 * n, 5))
    X[n:, 2] += shift  # only x2 moves at the target
    cat = rng.choice(["a", "b", "c"], size=2 * n)
    y = (rng.random(2 * n) < 0.5).astype(int)
    site = np.r_[["src"] * n, ["tgt"] * n]
    return _dataset(X, y, site, categorical={"c": cat})


@pytest.fixture(scope="module")
def heart():
    return load_dataset("uci_heart")


@pytest.fixture(scope="module")
def heart_reports(heart):
    return {t: diagnose(heart, ["cleveland"], t) for t in ("va", "switzerland")}


# ----------------------------------------------------------------------------- covariate shift
def test_shift_in_one_feature_is_found_and_only_that_one():
    rep = diagnose(_covariate(0.7, seed=1), ["src"], "tgt", random_state=0)
    f = rep.features
    assert f.iloc[0]["feature"] == "x2"  # sorted by effect size
    assert f.iloc[0]["smd"] == pytest.approx(0.7, abs=0.2)
    assert f.iloc[0]["q_value"] < 0.001
    others = f[f["feature"] != "x2"]
    assert (others["q_value"] > 0.05).all()
    assert (others["effect"] < 0.2).all()
    dc = rep.domain_classifier
    assert dc["auroc"] > 0.6
    assert dc["p_value"] <= 0.02
    assert rep.mmd["p_value"] <= 0.02
    assert "x2" in rep.summary[0] and "covariate shift" in rep.summary[0]


def test_no_shift_gives_chance_auroc_and_large_p():
    reps = [diagnose(_covariate(0.0, seed=seed), ["src"], "tgt", random_state=0, n_bootstrap=20) for seed in (2, 3, 4)]
    p_clf = [r.domain_classifier["p_value"] for r in reps]
    p_mmd = [r.mmd["p_value"] for r in reps]
    for rep in reps:
        assert rep.domain_classifier["auroc"] == pytest.approx(0.5, abs=0.07)
        assert rep.importance["ess_fraction"] > 0.8
    assert min(p_clf) > 0.01 and np.mean(p_clf) > 0.2
    assert min(p_mmd) > 0.01 and np.mean(p_mmd) > 0.2
    rep = reps[1]
    assert (rep.features["q_value"] > 0.05).all()
    assert rep.summary[0].startswith("No detectable covariate shift")


def test_missingness_and_never_measured_are_reported():
    ds = _covariate(0.0, seed=3)
    tgt = ds.frame["site"] == "tgt"
    ds.frame.loc[tgt, "x4"] = np.nan
    ds.frame.loc[tgt & (np.arange(len(tgt)) % 2 == 0), "x3"] = np.nan
    rep = diagnose(ds, ["src"], "tgt", n_permutations=20)
    assert rep.never_measured["tgt"] == ["x4"]
    row = rep.features.set_index("feature").loc["x3"]
    assert row["missing_source"] == 0 and row["missing_target"] == pytest.approx(0.5)
    assert row["missing_diff"] == pytest.approx(0.5)
    assert rep.features.set_index("feature").loc["x4", "never_measured"] == "target"
    text = " ".join(rep.summary)
    assert "never measured at the target (x4)" in text and "x3" in text


# ----------------------------------------------------------------------------- label shift
def _label_shift(seed: int, n_classes: int = 2) -> tuple[Dataset, np.ndarray]:
    d = make_shifted_domains("label", n_source=800, n_target=800, n_classes=n_classes, random_state=seed)
    site = np.where(d.source, "src", "tgt")
    return _dataset(d.X, d.y, site, class_names=range(n_classes)), d.y[d.target]


@pytest.mark.parametrize("seed", [0, 1])
def test_label_shift_prior_is_recovered(seed):
    ds, y_t = _label_shift(seed)
    rep = diagnose(ds, ["src"], "tgt", random_state=seed)
    ls = rep.label_shift
    truth = y_t.mean()
    assert ls["source_prior"][1] == pytest.approx(0.3, abs=0.05)
    assert ls["target_prior"][1] == pytest.approx(truth, abs=0.1)
    assert ls["ci_low"][1] <= truth <= ls["ci_high"][1]
    assert ls["ci_high"][1] - ls["ci_low"][1] < 0.2
    assert "label shift" in " ".join(rep.summary)


def test_label_shift_multiclass():
    ds, y_t = _label_shift(4, n_classes=3)
    ls = diagnose(ds, ["src"], "tgt", n_permutations=20).label_shift
    truth = np.bincount(y_t, minlength=3) / len(y_t)
    assert np.allclose(ls["target_prior"], truth, atol=0.1)
    assert np.isclose(np.sum(ls["target_prior"]), 1.0)


def test_target_labels_are_never_read():
    ds, _ = _label_shift(0)
    rep = diagnose(ds, ["src"], "tgt", n_permutations=20)
    tgt = ds.frame["site"] == "tgt"
    rng = np.random.default_rng(5)
    for fake in (rng.permutation(ds.frame.loc[tgt, "y"].to_numpy()), np.zeros(int(tgt.sum()), int),
                 np.full(int(tgt.sum()), -99)):
        other = Dataset(**{**ds.__dict__, "frame": ds.frame.copy()})
        other.frame.loc[tgt, "y"] = fake
        again = diagnose(other, ["src"], "tgt", n_permutations=20)
        assert json.dumps(again.to_dict()["label_shift"]) == json.dumps(rep.to_dict()["label_shift"])
        assert again.summary == rep.summary


def test_em_prior_matches_closed_form_and_batches():
    rng = np.random.default_rng(0)
    P = rng.dirichlet([1, 1], size=300)
    one, _ = em_prior(P, np.array([0.5, 0.5]))
    many, _ = em_prior(np.stack([P, P]), np.array([0.5, 0.5]))
    assert np.allclose(many, one[None])
    P3 = rng.dirichlet([1, 1, 1], size=300)
    pi, ok = em_prior(P3, np.full(3, 1 / 3))
    assert ok and np.isclose(pi.sum(), 1)


# ----------------------------------------------------------------------------- rows_target
def test_rows_target_restricts_target_rows(heart):
    va = np.flatnonzero(heart.frame["site"] == "va")
    pool = heart.frame.index[va[:120]]
    rep = diagnose(heart, ["cleveland"], "va", rows_target=pool, n_permutations=20, n_bootstrap=20)
    assert rep.n_target == 120
    mask = np.zeros(len(heart.frame), bool)
    mask[va[:120]] = True
    rep2 = diagnose(heart, ["cleveland"], "va", rows_target=mask, n_permutations=20, n_bootstrap=20)
    assert rep2.n_target == 120
    assert np.allclose(rep.label_shift["target_prior"], rep2.label_shift["target_prior"])
    with pytest.raises(UserInputError):
        diagnose(heart, ["cleveland"], "va", rows_target=heart.frame.index[:10])  # cleveland rows
    with pytest.raises(UserInputError):
        diagnose(heart, ["cleveland"], "nowhere")
    with pytest.raises(UserInputError):
        diagnose(heart, ["va"], "va")


# ----------------------------------------------------------------------------- uci_heart
def test_uci_heart_cleveland_to_switzerland(heart, heart_reports):
    rep = heart_reports["switzerland"]
    assert isinstance(rep, ShiftReport)
    assert rep.never_measured["switzerland"] == ["chol"]
    assert rep.features.set_index("feature").loc["chol", "never_measured"] == "target"
    assert rep.label_shift["source_prior"][1] == pytest.approx(0.459, abs=0.01)
    true_rate = heart.site("switzerland")["disease"].mean()
    assert true_rate == pytest.approx(0.935, abs=0.01)
    est = rep.label_shift["target_prior"][1]
    assert est > 0.46 + 0.25 and abs(est - true_rate) < 0.1
    assert rep.domain_classifier["auroc"] > 0.9 and rep.domain_classifier["p_value"] < 0.05
    text = " ".join(rep.summary)
    assert "never measured at the target (chol)" in text
    assert "driven by" in text and "thalach" in text
    assert rep.runtime_s < 10  # ~1 s on an idle machine


def test_uci_heart_cleveland_to_va(heart, heart_reports):
    rep = heart_reports["va"]
    assert rep.label_shift["target_prior"][1] > 0.46 + 0.15
    assert rep.domain_classifier["auroc"] > 0.9
    top = rep.features[rep.features["q_value"] < 0.05]["feature"].tolist()
    assert "thalach" in top[:3]
    assert rep.importance["ess"] < 0.2 * 303


def test_sections_json_and_cli(heart_reports, heart):
    rep = heart_reports["switzerland"]
    secs = rep.sections()
    assert len(secs) == 1 and secs[0].title == "Shift diagnostics"
    body = secs[0].body
    assert "<img" in body and "<table" in body and "chol" in body
    payload = json.loads(json.dumps(rep.to_dict(), allow_nan=False))
    assert payload["target"] == "switzerland" and payload["features"]
    text = rep.to_text()
    assert "cleveland -> switzerland" in text and "chol" in text
    out = diagnose_study_cli(heart, ["cleveland"], ["switzerland"], as_json=True, n_permutations=20, n_bootstrap=20)
    assert json.loads(out)[0]["target"] == "switzerland"
    out = diagnose_study_cli(heart, ["cleveland"], "switzerland", as_json=False, n_permutations=20, n_bootstrap=20)
    assert out.startswith("Shift diagnostics")


def test_multiple_sources(heart):
    rep = diagnose(heart, ["cleveland", "hungarian"], "va", n_permutations=20, n_bootstrap=20)
    assert set(rep.features["source"]) == {"cleveland", "hungarian"}
    assert set(rep.domain_classifier["auroc_by_source"]) == {"cleveland", "hungarian"}
    assert rep.n_source == {"cleveland": 303, "hungarian": 294}
    assert "<img" in rep.sections()[0].body
