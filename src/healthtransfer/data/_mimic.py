"""MIMIC-III Clinical Database Demo 1.4: one row per ICU stay (136 stays, 100 patients).

Label ``death`` = ``ADMISSIONS.HOSPITAL_EXPIRE_FLAG`` of the stay's admission. Domain:
``domain_by="careunit"`` (``ICUSTAYS.FIRST_CAREUNIT``: MICU 77, SICU 23, CCU 19, TSICU 11,
CSRU 6) or ``"dbsource"`` (EHR system: metavision 77, carevue 59). Group ``SUBJECT_ID``.

Features: age at ICU admission, sex, and mean/min/max of 13 common labs charted in the first
24 hours of the stay (``LABEVENTS`` joined on ``HADM_ID``, ``INTIME <= CHARTTIME <= INTIME +
24 h``). MIMIC shifts the date of birth of patients older than 89 so that their computed age is
about 300; those ages are capped to 91 (the count is in ``extra["age_capped"]``).

Caveat (README §3): all 100 demo patients died eventually, so mortality is not representative.
Use this source for plumbing and examples, not as a benchmark.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import UserInputError
from .dataset import Dataset

__all__ = ["LOADERS", "load_mimic3_demo", "LABS", "DOMAIN_CHOICES"]

DOMAIN_CHOICES = {"careunit": "FIRST_CAREUNIT", "dbsource": "DBSOURCE"}
# feature stem -> (ITEMID, D_LABITEMS.LABEL it must carry)
LABS = {
    "creatinine": (50912, "Creatinine"),
    "potassium": (50971, "Potassium"),
    "sodium": (50983, "Sodium"),
    "glucose": (50931, "Glucose"),
    "hemoglobin": (51222, "Hemoglobin"),
    "hematocrit": (51221, "Hematocrit"),
    "wbc": (51301, "White Blood Cells"),
    "platelets": (51265, "Platelet Count"),
    "bun": (51006, "Urea Nitrogen"),
    "bicarbonate": (50882, "Bicarbonate"),
    "chloride": (50902, "Chloride"),
    "lactate": (50813, "Lactate"),
    "magnesium": (50960, "Magnesium"),
}
STATS = ("mean", "min", "max")
AGE_SHIFTED_ABOVE = 89
AGE_CAP = 91.0
WINDOW = pd.Timedelta(hours=24)
_TABLES = ("ICUSTAYS", "PATIENTS", "ADMISSIONS", "LABEVENTS", "D_LABITEMS")


def _folder(data_dir: str | Path) -> Path:
    from .sources import _demo_tables_folder

    return _demo_tables_folder(data_dir, "mimic3_demo", _TABLES, "MIMIC-III")


@lru_cache(maxsize=4)
def _raw(folder_key: str, lab_ranges: tuple) -> tuple[pd.DataFrame, dict]:
    """Read, join and aggregate (cached per folder; callers copy before changing)."""
    folder = Path(folder_key)
    icu = pd.read_csv(folder / "ICUSTAYS.csv.gz",
                      usecols=["SUBJECT_ID", "HADM_ID", "ICUSTAY_ID", "DBSOURCE", "FIRST_CAREUNIT", "INTIME"])
    pat = pd.read_csv(folder / "PATIENTS.csv.gz", usecols=["SUBJECT_ID", "GENDER", "DOB"])
    adm = pd.read_csv(folder / "ADMISSIONS.csv.gz", usecols=["HADM_ID", "HOSPITAL_EXPIRE_FLAG"])
    items = pd.read_csv(folder / "D_LABITEMS.csv.gz", usecols=["ITEMID", "LABEL"])
    labels = dict(zip(items["ITEMID"], items["LABEL"].astype(str)))
    wrong = [stem for stem, (iid, lab) in LABS.items() if labels.get(iid) != lab]
    if wrong:
        raise UserInputError(
            f"D_LABITEMS does not describe the expected lab items for {wrong}",
            where=str(folder / "D_LABITEMS.csv.gz"),
            fix="use the MIMIC-III demo 1.4 files as staged in ../shared/data",
        )
    ids = {iid: stem for stem, (iid, _) in LABS.items()}
    lab = pd.read_csv(folder / "LABEVENTS.csv.gz", usecols=["HADM_ID", "ITEMID", "CHARTTIME", "VALUENUM"])
    lab = lab[lab["ITEMID"].isin(list(ids)) & lab["HADM_ID"].notna() & lab["VALUENUM"].notna()]
    lab = lab.assign(HADM_ID=lab["HADM_ID"].astype("int64"), CHARTTIME=pd.to_datetime(lab["CHARTTIME"]),
                     lab=lab["ITEMID"].map(ids))

    icu["INTIME"] = pd.to_datetime(icu["INTIME"])
    df = icu.merge(pat, on="SUBJECT_ID", how="left", validate="many_to_one")
    df = df.merge(adm, on="HADM_ID", how="left", validate="many_to_one")
    dob = pd.to_datetime(df["DOB"])
    # whole days avoid overflowing nanosecond timedeltas for the ~300-year shifted ages
    days = (df["INTIME"].dt.normalize() - dob.dt.normalize()).dt.days.astype(float)
    age = days / 365.2425
    shifted = age > AGE_SHIFTED_ABOVE
    age = age.where(~shifted, AGE_CAP)

    ev = lab.merge(icu[["HADM_ID", "ICUSTAY_ID", "INTIME"]], on="HADM_ID", how="inner")
    ev = ev[(ev["CHARTTIME"] >= ev["INTIME"]) & (ev["CHARTTIME"] <= ev["INTIME"] + WINDOW)]
    ranges = dict(lab_ranges)
    n_oor = {}
    keep = pd.Series(True, index=ev.index)
    for stem, (lo, hi) in ranges.items():
        hit = (ev["lab"] == stem) & ((ev["VALUENUM"] < lo) | (ev["VALUENUM"] > hi))
        n_oor[stem] = int(hit.sum())
        keep &= ~hit
    ev = ev[keep]
    agg = ev.pivot_table(index="ICUSTAY_ID", columns="lab", values="VALUENUM", aggfunc=list(STATS))
    agg.columns = [f"{stem}_{stat}" for stat, stem in agg.columns]

    raw = pd.DataFrame({
        "ICUSTAY_ID": df["ICUSTAY_ID"].to_numpy(),
        "SUBJECT_ID": df["SUBJECT_ID"].astype(str).to_numpy(),
        "careunit": df["FIRST_CAREUNIT"].astype(str).to_numpy(),
        "dbsource": df["DBSOURCE"].astype(str).to_numpy(),
        "death": df["HOSPITAL_EXPIRE_FLAG"].to_numpy(),
        "age": age.to_numpy(),
        "gender": df["GENDER"].to_numpy(),
    })
    raw = raw.join(agg, on="ICUSTAY_ID")
    for stem in LABS:
        for stat in STATS:
            col = f"{stem}_{stat}"
            if col not in raw.columns:
                raw[col] = np.nan
    info = {"age_capped": int(shifted.sum()), "lab_results_out_of_range": n_oor,
            "lab_results_in_window": int(len(ev)),
            "stays_with_labs": int(raw[[f"{s}_mean" for s in LABS]].notna().any(axis=1).sum())}
    return raw, info


def load_mimic3_demo(data_dir: str | Path, domain_by: str = "careunit") -> Dataset:
    """MIMIC-III demo ICU stays; ``domain_by`` is ``"careunit"`` (default) or ``"dbsource"``."""
    from .sources import _finish, builtin_schema

    if domain_by not in DOMAIN_CHOICES:
        raise UserInputError(f"unknown domain_by '{domain_by}' for mimic3_demo", where="dataset 'mimic3_demo'",
                             fix=f"use one of {list(DOMAIN_CHOICES)}")
    folder = _folder(data_dir)
    schema = builtin_schema("mimic3_demo")
    lab_ranges = tuple(sorted(
        (stem, tuple(schema.feature(f"{stem}_min").range))
        for stem in LABS if schema.feature(f"{stem}_min") is not None and schema.feature(f"{stem}_min").range
    ))
    base, info = _raw(str(folder.resolve()), lab_ranges)
    raw = base.copy()
    if raw["death"].isna().any():
        raise UserInputError(f"{int(raw['death'].isna().sum())} ICU stays have no admission row",
                             where=str(folder / "ADMISSIONS.csv.gz"), fix="use the complete demo files")
    raw["death"] = raw["death"].astype(int)
    raw["domain"] = raw[domain_by]
    ds = _finish(raw, schema, source="mimic3_demo", class_names=[0, 1],
                 extra={"domain_by": domain_by, **info})
    ds.frame[ds.features] = ds.frame[ds.features].astype(float)
    return ds


LOADERS = {"mimic3_demo": load_mimic3_demo}
