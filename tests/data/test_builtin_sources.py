"""Built-in sources against the counts documented in ../shared/data/README.md and the frozen
protocol ../shared/benchmarks/eicu-region-v1.md."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from healthtransfer.data import load_dataset
from healthtransfer.errors import UserInputError

DATA = Path(os.environ["HEALTHTRANSFER_DATA"])  # set in conftest.py
needs_data = pytest.mark.skipif(
    not (DATA / "eicu_demo").is_dir(),
    reason=f"staged datasets not found at {DATA} (../shared/data relative to the repo root)",
)


def _load(name, **options):
    return load_dataset(name, data_dir=DATA, **options)


# --------------------------------------------------------------------------- eICU
@pytest.fixture(scope="module")
def eicu():
    if not (DATA / "eicu_demo").is_dir():
        pytest.skip(f"staged eICU demo not found at {DATA / 'eicu_demo'}")
    ds = _load("eicu_demo")
    return ds


@needs_data
def test_eicu_cohort_counts(eicu):
    f = eicu.frame
    assert len(f) == 1881
    assert f["uniquepid"].nunique() == 1594
    assert eicu.extra["cohort_counts"] == {
        "patient": 2520, "with_apacheapsvar": 2205, "labelled_in_region": 1980,
        "first_stay_per_admission": 1881, "with_apache_iv": 1573,
    }
    expected = {"Midwest": (688, 51, 591), "South": (628, 52, 527), "West": (432, 37, 347), "Northeast": (133, 18, 108)}
    got = {d: (len(g), int(g["death"].sum()), int(g["apache_iv"].notna().sum())) for d, g in f.groupby("domain")}
    assert got == expected
    assert int(f["apache_iv"].notna().sum()) == 1573
    assert f["apache_iv"].dropna().between(0, 1).all()
    assert set(f["death"].unique()) == {0, 1}
    assert eicu.label == "death" and eicu.domain == "domain" and eicu.group == "uniquepid"
    assert eicu.reference_score == "apache_iv"
    assert eicu.class_names == [0, 1]


@needs_data
def test_eicu_features_protocol_and_no_leakage(eicu):
    protocol = eicu.extra["protocol_features"]
    assert len(protocol) == 47
    assert protocol == eicu.features[:47]
    leaky = ("apache", "discharge", "predicted", "actual", "diedinhospital", "var03", "saps", "los",
             "region", "teachtype", "bedcount", "hospital", "uniquepid", "death", "domain", "aids")
    bad = [c for c in eicu.features if any(k in c.lower() for k in leaky)]
    assert bad == []
    for special in ("apache_iv", "death", "domain", "uniquepid"):
        assert special not in eicu.features
    assert eicu.frame[eicu.features].dtypes.map(lambda d: np.issubdtype(d, np.floating)).all()
    f = eicu.frame
    # protocol ranges and codes
    assert f["admissionweight"].dropna().between(25, 300).all()
    assert f["admissionheight"].dropna().between(100, 230).all()
    assert f["age"].max() == 90 and f["age"].notna().sum() >= 1870
    assert set(f["male"].dropna().unique()) <= {0.0, 1.0}
    assert f["electivesurgery"].notna().all()
    units = [c for c in eicu.features if c.startswith("unit_")]
    assert len(units) == 8 and (f[units].sum(axis=1) == 1).all()
    # derived features agree with their inputs
    ok = f["gcs_total"].notna()
    assert np.allclose(f.loc[ok, "gcs_total"], f.loc[ok, ["eyes", "motor", "verbal"]].sum(axis=1))
    ok = f["bmi"].notna()
    assert np.allclose(f.loc[ok, "bmi"], f.loc[ok, "admissionweight"] / (f.loc[ok, "admissionheight"] / 100) ** 2)


@needs_data
def test_eicu_report_counts_sentinels(eicu):
    rows = eicu.report.rows.groupby("column")[["n_sentinel", "n_out_of_range"]].sum()
    f = eicu.frame
    # every -1 of apacheApsVar is counted: pao2 has no other source of missingness
    assert int(rows.loc["pao2", "n_sentinel"]) == int(f["pao2"].isna().sum()) == 1561
    assert int(rows.loc["fio2", "n_sentinel"]) == 1561
    assert int(rows.loc["admissionheight", "n_out_of_range"]) > 0
    assert set(eicu.report.rows["site"]) == {"Midwest", "South", "West", "Northeast"}


@needs_data
def test_eicu_vitals(eicu):
    f = eicu.frame
    for sig in ("noninvasivesystolic", "noninvasivediastolic", "noninvasivemean"):
        cols = [f"{sig}_{s}" for s in ("mean", "min", "max", "last", "slope", "count")]
        assert set(cols) <= set(eicu.features)
        has = f[f"{sig}_count"] > 0
        assert has.sum() > 0.9 * len(f)
        assert (f[f"{sig}_count"] >= 0).all()
        assert f.loc[~has, f"{sig}_mean"].isna().all()
        sub = f[has]
        assert (sub[f"{sig}_min"] <= sub[f"{sig}_mean"] + 1e-9).all()
        assert (sub[f"{sig}_mean"] <= sub[f"{sig}_max"] + 1e-9).all()
        assert sub[f"{sig}_last"].between(sub[f"{sig}_min"], sub[f"{sig}_max"]).all()
        assert sub[f"{sig}_slope"].dropna().abs().median() < 5  # mmHg per hour
    assert f["noninvasivesystolic_mean"].median() > f["noninvasivemean_mean"].median() > f["noninvasivediastolic_mean"].median()
    assert 100 < f["noninvasivesystolic_mean"].median() < 140


@needs_data
def test_eicu_vitals_off_gives_protocol_features():
    ds = _load("eicu_demo", vitals=False)
    assert ds.features == ds.extra["protocol_features"] and len(ds.features) == 47
    assert len(ds.frame) == 1881


@needs_data
@pytest.mark.parametrize("domain_by,n_domains,n_rows", [("hospital", None, 1881), ("unittype", 8, 1881), ("bedsize", 4, None)])
def test_eicu_other_domains(eicu, domain_by, n_domains, n_rows):
    ds = _load("eicu_demo", domain_by=domain_by)
    assert ds.domain == "domain" and ds.extra["domain_by"] == domain_by
    if n_domains:
        assert ds.frame["domain"].nunique() == n_domains
    if n_rows:
        assert len(ds.frame) == n_rows
    else:
        assert len(ds.frame) + ds.extra["dropped_no_domain"] == 1881
    if domain_by == "unittype":
        assert not [c for c in ds.features if c.startswith("unit_")]
        assert ds.frame["domain"].value_counts().sum() == 1881
    if domain_by == "hospital":
        assert ds.frame["domain"].nunique() > 150
        # the same rows and values as the region view, only the domain differs
        pd.testing.assert_frame_equal(ds.frame.drop(columns="domain"), eicu.frame.drop(columns="domain"))


@needs_data
def test_eicu_repeat_load_is_cached(eicu):
    from healthtransfer.data import _eicu

    before = _eicu._cohort.cache_info().hits
    again = _load("eicu_demo")
    assert again.frame.equals(eicu.frame)
    assert _eicu._cohort.cache_info().hits > before


def test_eicu_without_data_dir_asks_for_it(monkeypatch):
    monkeypatch.delenv("HEALTHTRANSFER_DATA", raising=False)
    with pytest.raises(UserInputError, match="--data-dir"):
        load_dataset("eicu_demo")


# --------------------------------------------------------------------------- MIMIC-III
@needs_data
def test_mimic_counts():
    ds = _load("mimic3_demo")
    f = ds.frame
    assert len(f) == 136 and f["SUBJECT_ID"].nunique() == 100
    got = {d: (len(g), int(g["death"].sum())) for d, g in f.groupby("domain")}
    assert got == {"MICU": (77, 25), "SICU": (23, 7), "CCU": (19, 6), "TSICU": (11, 7), "CSRU": (6, 1)}
    assert ds.group == "SUBJECT_ID" and ds.label == "death"
    assert f["age"].max() <= 91 and f["age"].min() >= 15
    assert ds.extra["age_capped"] > 0
    labs = [c for c in ds.features if c.endswith("_mean")]
    assert len(labs) >= 10
    assert f[labs].notna().any(axis=1).sum() >= 130
    for stem in ("creatinine", "potassium", "sodium", "glucose", "hemoglobin", "wbc", "platelets", "bun"):
        ok = f[f"{stem}_mean"].notna()
        assert ok.sum() >= 120
        assert (f.loc[ok, f"{stem}_min"] <= f.loc[ok, f"{stem}_max"]).all()
    assert 130 < f["sodium_mean"].median() < 150
    by_db = _load("mimic3_demo", domain_by="dbsource")
    assert by_db.frame["domain"].value_counts().to_dict() == {"metavision": 77, "carevue": 59}


# --------------------------------------------------------------------------- wearable
@needs_data
def test_wearable_counts():
    ds = _load("wearable")
    f = ds.frame
    assert len(f) == 6264
    assert f["device"].value_counts().to_dict() == {"apple_watch": 3656, "fitbit": 2608}
    assert ds.class_names == ["Lying", "Sitting", "Self Pace walk", "Running 3 METs", "Running 5 METs", "Running 7 METs"]
    tab = pd.crosstab(f["device"], f["activity"])
    assert tab.loc["apple_watch"].tolist() == [787, 552, 529, 572, 603, 613]
    assert tab.loc["fitbit"].tolist() == [592, 378, 360, 378, 399, 501]
    assert f["subject"].nunique() == 49
    assert ds.group == "subject"
    assert "heart_rate" in ds.features and "entropy_steps" in ds.features
    assert not {"X", "X1", "hear_rate", "entropy_setps", "device", "activity"} & set(ds.features)
    assert len(ds.features) == 16
    assert f[ds.features].notna().all().all()


# --------------------------------------------------------------------------- UCI heart
@pytest.mark.parametrize("data_dir", [None, "staged"])
def test_uci_heart_counts(data_dir):
    if data_dir == "staged":
        if not (DATA / "uci_heart").is_dir():
            pytest.skip(f"staged uci_heart not found at {DATA / 'uci_heart'}")
        ds = load_dataset("uci_heart", data_dir=DATA)
    else:
        ds = load_dataset("uci_heart")
    f = ds.frame
    assert len(f) == 920
    got = {d: (len(g), int(g[ds.label].sum())) for d, g in f.groupby(ds.domain)}
    assert got == {"cleveland": (303, 139), "hungarian": (294, 106), "switzerland": (123, 115), "va": (200, 149)}
    assert f.loc[f[ds.domain] == "switzerland", "chol"].isna().all()
    rows = ds.report.rows.set_index(["site", "column"])
    assert int(rows.loc[("switzerland", "chol"), "n_sentinel"]) == 123
    assert int(rows.loc[("va", "chol"), "n_sentinel"]) == 49
    assert "chol" in ds.report.absent()["switzerland"]
