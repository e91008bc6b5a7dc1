"""Apple Watch vs Fitbit activity recognition (Fuller 2020): 6,264 minute rows, 2 devices.

Domain ``device`` (``"apple_watch"`` 3,656 rows, ``"fitbit"`` 2,608). Label ``activity``
encoded 0..5 in the fixed order of :data:`ACTIVITIES` (``Dataset.class_names`` holds the
names). There is no participant column: ``subject`` is a proxy id from the distinct
(age, gender, height, weight) combinations, which gives exactly the paper's 49 participants.
The ids are ``"s00"``..``"s48"`` numbered in order of first appearance in the file, so they
carry no measurement. The file has CRLF line endings (pandas reads them as is).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pandas as pd

from ..errors import UserInputError
from .dataset import Dataset

__all__ = ["LOADERS", "load_wearable", "ACTIVITIES", "DEVICES"]

ACTIVITIES = ("Lying", "Sitting", "Self Pace walk", "Running 3 METs", "Running 5 METs", "Running 7 METs")
DEVICES = {"apple watch": "apple_watch", "fitbit": "fitbit"}
PROXY = ["age", "gender", "height", "weight"]
FILE = "aw_fb_data.csv.gz"


def _path(data_dir: str | Path) -> Path:
    folder = Path(data_dir).expanduser()
    for cand in (folder / "wearable_aw_fb" / FILE, folder / FILE):
        if cand.is_file():
            return cand
    raise UserInputError(
        f"the wearable file '{FILE}' is missing",
        where=str(folder),
        fix="pass --data-dir pointing at the folder that holds 'wearable_aw_fb/' (as ../shared/data does)",
    )


@lru_cache(maxsize=4)
def _read(path_key: str) -> pd.DataFrame:
    return pd.read_csv(path_key)


def load_wearable(data_dir: str | Path) -> Dataset:
    """The Apple Watch / Fitbit table, harmonised; multi-class label ``activity`` (0..5)."""
    from .sources import _finish, builtin_schema

    path = _path(data_dir)
    raw = _read(str(path.resolve())).copy()
    missing = [c for c in ("device", "activity", *PROXY) if c not in raw.columns]
    if missing:
        raise UserInputError(f"columns {missing} are missing", where=str(path),
                             fix="use the staged aw_fb_data.csv.gz (README section 4)")
    raw = raw.drop(columns=[c for c in ("X", "X1") if c in raw.columns])
    unknown_dev = ~raw["device"].isin(list(DEVICES))
    unknown_act = ~raw["activity"].isin(list(ACTIVITIES))
    if unknown_dev.any() or unknown_act.any():
        raise UserInputError(
            f"{int(unknown_dev.sum())} rows have an unknown device and {int(unknown_act.sum())} an unknown activity",
            where=str(path), fix=f"devices must be {list(DEVICES)} and activities {list(ACTIVITIES)}",
        )
    raw["device"] = raw["device"].map(DEVICES)
    raw["activity"] = raw["activity"].map({a: i for i, a in enumerate(ACTIVITIES)}).astype(int)
    codes = raw.groupby(PROXY, sort=False, dropna=False).ngroup()
    raw["subject"] = codes.map(lambda i: f"s{i:02d}")
    ds = _finish(raw, builtin_schema("wearable"), source="wearable", class_names=list(ACTIVITIES),
                 extra={"n_subjects": int(codes.nunique()), "subject_proxy": PROXY})
    ds.frame[ds.features] = ds.frame[ds.features].astype(float)
    return ds


LOADERS = {"wearable": load_wearable}
