"""eICU-CRD Demo 2.0.1: one row per hospital admission, cohort of protocol "eicu-region v1".

The cohort and the 47 protocol features follow ``../shared/benchmarks/eicu-region-v1.md``
exactly (steps 1-5: 2,520 stays -> 2,205 with APACHE physiology -> 1,980 labelled in one of
the four regions -> 1,881 first stays per hospital admission; 1,573 with an APACHE IV
prediction). ``vitals=True`` (the default) adds 18 first-24-hour summaries of the non-invasive
blood pressure series in ``vitalAperiodic``; ``vitals=False`` gives the protocol's 47 features.

All value cleaning (``-1`` = not measured, ``"> 89"`` ages, Male/Female coding, physiological
ranges) is declared in ``schemas/eicu_demo.toml`` so the harmonisation report counts it.

Example (needs the staged data)
-------------------------------
>>> ds = load_eicu_demo("../shared/data")            # doctest: +SKIP
>>> ds.counts().loc["Northeast", "n"]                  # doctest: +SKIP
np.int64(133)
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import UserInputError
from .dataset import Dataset
from .harmonise import harmonise

__all__ = ["LOADERS", "load_eicu_demo", "DOMAIN_CHOICES", "UNIT_TYPES", "VITAL_SIGNALS"]

DOMAIN_CHOICES = ("region", "hospital", "unittype", "bedsize")
REGIONS = ("Midwest", "South", "West", "Northeast")
UNIT_TYPES = ("Med-Surg ICU", "MICU", "Cardiac ICU", "SICU", "CCU-CTICU", "CSICU", "Neuro ICU", "CTICU")
APS_VALUES = (
    "temperature", "heartrate", "meanbp", "respiratoryrate", "sodium", "wbc", "hematocrit",
    "creatinine", "bun", "glucose", "albumin", "bilirubin", "pao2", "fio2", "pco2", "ph", "urine",
    "eyes", "motor", "verbal",
)
APS_FLAGS = ("intubated", "vent", "dialysis", "meds")
PRED_FLAGS = (
    "hepaticfailure", "lymphoma", "metastaticcancer", "leukemia", "immunosuppression",
    "cirrhosis", "diabetes", "electivesurgery",
)
# Candidate signals of vitalAperiodic. A signal is summarised only if at least
# VITAL_MIN_COVERAGE of the stays with any reading in the first 24 h have one of it; in the
# staged demo that keeps the three non-invasive blood pressures (the invasive haemodynamics,
# paop/cardiacoutput/svr/..., are recorded for < 3% of stays).
VITAL_CANDIDATES = (
    "noninvasivesystolic", "noninvasivediastolic", "noninvasivemean",
    "paop", "cardiacoutput", "cardiacinput", "svr", "svri", "pvr", "pvri",
)
VITAL_SIGNALS = ("noninvasivesystolic", "noninvasivediastolic", "noninvasivemean")
VITAL_STATS = ("mean", "min", "max", "last", "slope", "count")
VITAL_MIN_COVERAGE = 0.10
WINDOW_MINUTES = (0, 1440)
# A slope from readings a few minutes apart is noise (hundreds of mmHg/h): it is computed only
# when the valid readings of a stay span at least this many hours, else it is missing.
SLOPE_MIN_SPAN_HOURS = 1.0
BEDSIZE = {"<100": "<100", "100 - 249": "100-249", "250 - 499": "250-499", ">= 500": ">=500"}

# outcome and reference columns kept next to the label (not features); see load_eicu_demo
OUTCOME_COLUMNS = {"hospital_days": "hospital_days", "icu_days": "icu_days",
                   "apache_iv_hospital_los": "predictedhospitallos", "apache_iv_icu_los": "predictediculos"}

_FILES = ("patient", "hospital", "apacheApsVar", "apachePredVar", "apachePatientResult", "vitalAperiodic")


def _unit_column(unittype: str) -> str:
    return "unit_" + re.sub(r"[^a-z0-9]+", "_", unittype.lower()).strip("_")


def _read(folder: Path, table: str, usecols=None) -> pd.DataFrame:
    path = folder / f"{table}.csv.gz"
    if not path.is_file():
        raise UserInputError(
            f"the eICU demo table '{table}.csv.gz' is missing",
            where=str(folder),
            fix="pass --data-dir pointing at the folder that holds 'eicu_demo/' (as ../shared/data does)",
        )
    return pd.read_csv(path, usecols=usecols, low_memory=False)


def _vitals_aggregate(vit: pd.DataFrame, signals: list[str], ranges: dict) -> tuple[pd.DataFrame, dict]:
    """Per-stay mean/min/max/last/slope(per hour)/count of each signal, vectorised."""
    lo, hi = WINDOW_MINUTES
    vit = vit[(vit["observationoffset"] >= lo) & (vit["observationoffset"] <= hi)]
    vit = vit.sort_values(["patientunitstayid", "observationoffset", "vitalaperiodicid"], kind="stable")
    stay = vit["patientunitstayid"].to_numpy()
    hours = vit["observationoffset"].to_numpy(dtype=float) / 60.0
    out, n_oor = {}, {}
    for sig in signals:
        v = vit[sig].to_numpy(dtype=float)
        ok = ~np.isnan(v)
        r = ranges.get(sig)
        if r is not None:
            bad = ok & ((v < r[0]) | (v > r[1]))
            n_oor[sig] = int(bad.sum())
            ok &= ~bad
        s, t, x = stay[ok], hours[ok], v[ok]
        df = pd.DataFrame({"stay": s, "t": t, "x": x, "tt": t * t, "tx": t * x})
        g = df.groupby("stay", sort=True)
        agg = g["x"].agg(["mean", "min", "max", "last", "count"])
        sums = g[["t", "x", "tt", "tx"]].sum()
        n = agg["count"].to_numpy(dtype=float)
        sxx = sums["tt"].to_numpy() - sums["t"].to_numpy() ** 2 / n
        sxy = sums["tx"].to_numpy() - sums["t"].to_numpy() * sums["x"].to_numpy() / n
        span = (g["t"].max() - g["t"].min()).to_numpy()
        fit = (n >= 2) & (span >= SLOPE_MIN_SPAN_HOURS) & (sxx > 1e-9)
        slope = np.full(len(n), np.nan)
        slope[fit] = sxy[fit] / sxx[fit]
        agg["slope"] = slope
        for stat in VITAL_STATS:
            out[f"{sig}_{stat}"] = agg[stat].astype(float)
    table = pd.DataFrame(out)
    table.index.name = "patientunitstayid"
    return table, n_oor


@lru_cache(maxsize=4)
def _cohort(folder_key: str, vit_ranges: tuple) -> tuple[pd.DataFrame, pd.DataFrame | None, dict]:
    """The heavy part: read the tables, apply cohort steps 1-5 and aggregate the vitals.

    Cached per (resolved folder, vitals ranges); callers must copy before changing anything.
    """
    folder = Path(folder_key)
    patient = _read(folder, "patient")
    hospital = _read(folder, "hospital")
    aps = _read(folder, "apacheApsVar", usecols=["patientunitstayid", *APS_FLAGS, *APS_VALUES])
    pred = _read(folder, "apachePredVar", usecols=["patientunitstayid", *PRED_FLAGS])
    result = _read(folder, "apachePatientResult",
                   usecols=["patientunitstayid", "apacheversion", "predictedhospitalmortality",
                            "predictedhospitallos", "predictediculos"])
    counts = {"patient": len(patient)}

    # 1-2. patient rows with APACHE day-1 physiology
    df = patient.merge(hospital, on="hospitalid", how="left", validate="many_to_one")
    df = df.merge(aps, on="patientunitstayid", how="inner", validate="one_to_one")
    counts["with_apacheapsvar"] = len(df)
    # 3. labelled and in one of the four regions
    status = df["hospitaldischargestatus"]
    df = df[status.isin(["Alive", "Expired"]) & df["region"].isin(REGIONS)]
    counts["labelled_in_region"] = len(df)
    # 4. one stay per hospital admission: lowest unitvisitnumber, then lowest stay id
    df = df.sort_values(["patienthealthsystemstayid", "unitvisitnumber", "patientunitstayid"], kind="stable")
    df = df.drop_duplicates("patienthealthsystemstayid", keep="first")
    counts["first_stay_per_admission"] = len(df)
    # 5. APACHE IV reference (-1 = not computed)
    iv = result[result["apacheversion"].astype(str) == "IV"].drop_duplicates("patientunitstayid")
    ref = pd.to_numeric(iv["predictedhospitalmortality"], errors="coerce")
    ref = ref.where(ref != -1)
    ref = ref.where((ref >= 0) & (ref <= 1))
    ref.index = iv["patientunitstayid"].to_numpy()
    df = df.merge(pred, on="patientunitstayid", how="left", validate="one_to_one")
    df["apache_iv"] = df["patientunitstayid"].map(ref).astype(float)
    counts["with_apache_iv"] = int(df["apache_iv"].notna().sum())
    # Outcomes beyond the label (issue 17): follow-up from hospital admission to hospital
    # discharge or death (discharged alive = censored) and the two lengths of stay, in days,
    # with APACHE IV's predicted lengths of stay as reference scores (-1 = not computed).
    for col in ("predictedhospitallos", "predictediculos"):
        los = pd.to_numeric(iv[col], errors="coerce")
        los = los.where(los > 0)
        los.index = iv["patientunitstayid"].to_numpy()
        df[col] = df["patientunitstayid"].map(los).astype(float)
    df["hospital_days"] = (df["hospitaldischargeoffset"] - df["hospitaladmitoffset"]) / 1440.0
    df["icu_days"] = df["unitdischargeoffset"] / 1440.0

    raw = pd.DataFrame({
        "patientunitstayid": df["patientunitstayid"].to_numpy(),
        "uniquepid": df["uniquepid"].astype(str).to_numpy(),
        "region": df["region"].astype(str).to_numpy(),
        "hospital": df["hospitalid"].astype(int).astype(str).to_numpy(),
        "unittype": df["unittype"].astype(str).to_numpy(),
        "bedsize": df["numbedscategory"].map(BEDSIZE).to_numpy(),
        "death": (df["hospitaldischargestatus"] == "Expired").astype(int).to_numpy(),
        "apache_iv": df["apache_iv"].to_numpy(),
        **{k: df[v].to_numpy(dtype=float) for k, v in OUTCOME_COLUMNS.items()},
        "age": df["age"].to_numpy(),
        "gender": df["gender"].to_numpy(),
        "admissionweight": df["admissionweight"].to_numpy(dtype=float),
        "admissionheight": df["admissionheight"].to_numpy(dtype=float),
    })
    for col in (*APS_VALUES, *APS_FLAGS, *PRED_FLAGS):
        raw[col] = df[col].to_numpy(dtype=float)
    for u in UNIT_TYPES:
        raw[_unit_column(u)] = (raw["unittype"] == u).astype(int)

    vit_table, vit_info = None, {}
    if vit_ranges is not None:
        ranges = dict(vit_ranges)
        present = [c for c in VITAL_CANDIDATES if c in pd.read_csv(folder / "vitalAperiodic.csv.gz", nrows=0).columns]
        vit = _read(folder, "vitalAperiodic",
                    usecols=["vitalaperiodicid", "patientunitstayid", "observationoffset", *present])
        lo, hi = WINDOW_MINUTES
        win = vit[(vit["observationoffset"] >= lo) & (vit["observationoffset"] <= hi)]
        any_stays = win["patientunitstayid"].nunique()
        coverage = {c: float(win.loc[win[c].notna(), "patientunitstayid"].nunique() / max(any_stays, 1))
                    for c in present}
        signals = [c for c in present if coverage[c] >= VITAL_MIN_COVERAGE and c in ranges]
        vit_table, n_oor = _vitals_aggregate(vit, signals, ranges)
        vit_info = {"signals": signals, "coverage": coverage, "readings_out_of_range": n_oor,
                    "window_minutes": list(WINDOW_MINUTES)}
    return raw, vit_table, {"cohort_counts": counts, "vitals": vit_info}


def load_eicu_demo(data_dir: str | Path, domain_by: str = "region", vitals: bool = True) -> Dataset:
    """The eICU demo as in protocol eicu-region v1; ``domain`` column chosen by ``domain_by``.

    ``domain_by``: ``"region"`` (default, the protocol's domain), ``"hospital"`` (hospitalid),
    ``"unittype"`` or ``"bedsize"`` (stays of hospitals without a bed-size category are
    dropped, and counted in ``extra["dropped_no_domain"]``). The cohort is always the
    protocol's 1,881 stays. Label ``death``; group ``uniquepid``; reference score
    ``apache_iv`` (APACHE IV predicted hospital mortality, never a feature). Outcome columns
    for survival and regression studies (never features): ``hospital_days`` (hospital
    admission to discharge or death, days; with ``death`` as the event), ``icu_days``, and
    APACHE IV's predicted lengths of stay ``apache_iv_hospital_los`` / ``apache_iv_icu_los``.
    """
    from .sources import _finish, builtin_schema, _demo_tables_folder

    if domain_by not in DOMAIN_CHOICES:
        raise UserInputError(f"unknown domain_by '{domain_by}' for eicu_demo", where="dataset 'eicu_demo'",
                             fix=f"use one of {list(DOMAIN_CHOICES)}")
    folder = _demo_tables_folder(data_dir, "eicu_demo", _FILES, "eICU")
    schema = builtin_schema("eicu_demo")
    vit_cols = {f"{s}_{k}" for s in VITAL_CANDIDATES for k in VITAL_STATS}
    vit_ranges = None
    if vitals:
        vit_ranges = tuple(sorted(
            (s, tuple(schema.feature(f"{s}_min").range))
            for s in VITAL_CANDIDATES if schema.feature(f"{s}_min") is not None and schema.feature(f"{s}_min").range
        ))
    base, vit_table, info = _cohort(str(folder.resolve()), vit_ranges)
    raw = base.copy()
    if vit_table is not None:
        raw = raw.join(vit_table, on="patientunitstayid")
        for sig in info["vitals"]["signals"]:
            raw[f"{sig}_count"] = raw[f"{sig}_count"].fillna(0)
    kept = [f for f in schema.features if f.name not in vit_cols or f.name in raw.columns]
    schema = schema.model_copy(update={"features": kept})

    raw["domain"] = raw[domain_by]
    dropped = int(raw["domain"].isna().sum())
    raw = raw[raw["domain"].notna()].reset_index(drop=True)

    # Derived features from the schema-cleaned inputs (sentinels and ranges applied first).
    inputs = ["admissionweight", "admissionheight", "pao2", "fio2", "eyes", "motor", "verbal"]
    # (the rules are all "*" rules, so one pseudo-site gives the same values, fast)
    sub = schema.model_copy(update={"features": [schema.feature(c) for c in inputs], "domain": "_all"})
    clean, _ = harmonise(raw[inputs].assign(_all="all"), sub, source="eicu_demo")
    with np.errstate(invalid="ignore", divide="ignore"):
        raw["bmi"] = clean["admissionweight"] / (clean["admissionheight"] / 100.0) ** 2
        raw["pf_ratio"] = clean["pao2"] / (clean["fio2"] / 100.0)
    raw["gcs_total"] = clean["eyes"] + clean["motor"] + clean["verbal"]

    report_by = domain_by
    if domain_by == "unittype":
        # the unit-type one-hot columns would be the domain's identity: not features then
        unit_cols = {_unit_column(u) for u in UNIT_TYPES}
        schema = schema.model_copy(update={"features": [f for f in schema.features if f.name not in unit_cols]})
    if domain_by == "hospital":
        # harmonise() costs ~5 ms per (site, column); 168 hospitals x 65 columns would take about
        # a minute. Every rule of this schema is a "*" rule, so harmonising per region gives
        # identical values; only the report is then per region (extra["report_by"]).
        report_by = "region"
        schema = schema.model_copy(update={"domain": "_report_site"})
        raw["_report_site"] = raw["region"]
    ds = _finish(
        raw, schema, source="eicu_demo", class_names=[0, 1],
        extra={
            "domain_by": domain_by,
            "report_by": report_by,
            "protocol": "eicu-region v1",
            "protocol_features": [f.name for f in schema.features if f.name not in vit_cols],
            "vitals": bool(vitals),
            "dropped_no_domain": dropped,
            **{k: (dict(v) if isinstance(v, dict) else v) for k, v in info.items()},
        },
    )
    frame = ds.frame
    if domain_by == "hospital":
        frame = ds.frame = frame.rename(columns={"_report_site": "domain"})
        frame["domain"] = raw["domain"].astype(str).to_numpy()
        ds.domain = "domain"
        ds.schema = ds.schema.model_copy(update={"domain": "domain"})
    for col in OUTCOME_COLUMNS:  # same rows, same order as raw (harmonise keeps both)
        frame[col] = raw[col].to_numpy()
    # Protocol: a missing electivesurgery flag means "not an elective-surgery admission".
    frame["electivesurgery"] = frame["electivesurgery"].fillna(0)
    frame[ds.features] = frame[ds.features].astype(float)
    frame["death"] = frame["death"].astype(int)
    return ds


LOADERS = {"eicu_demo": load_eicu_demo}
