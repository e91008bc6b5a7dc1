"""Outcomes beyond classes: time-to-event (survival with censoring) and continuous values.

A survival target is scikit-survival's structured array (``event`` bool, ``time`` float), so
it travels through ``fit(X, y)`` like any label. Unlabelled target rows carry ``time = NaN``
(the survival counterpart of ``y = -1``). Every check that reads user columns lives here, once,
and raises :class:`~healthtransfer.errors.UserInputError` naming the column, the site and the
fix, never a patient value.

Example
-------
>>> import pandas as pd
>>> f = pd.DataFrame({"days": [3.0, 10.0, 2.5], "died": [1, 0, 0], "site": ["a", "a", "b"]})
>>> y = survival_target(f, time="days", event="died", domain="site")
>>> y["event"].tolist(), y["time"].tolist()
([True, False, False], [3.0, 10.0, 2.5])
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import UserInputError

__all__ = [
    "SURV_DTYPE", "survival_target", "masked_survival", "is_unlabelled_survival",
    "regression_target", "infer_task", "check_horizons", "LOG_TRANSFORMS",
]

SURV_DTYPE = np.dtype([("event", "?"), ("time", "<f8")])
LOG_TRANSFORMS = ("none", "log", "log1p")
# A numeric label with at least this many distinct values is read as continuous when the
# study does not say `task`.
REGRESSION_MIN_DISTINCT = 15


def _where(domain: str | None, frame: pd.DataFrame, rows: np.ndarray) -> str:
    if domain is None or domain not in frame or not rows.any():
        return ""
    sites = sorted(map(str, pd.unique(frame.loc[rows, domain])))
    return f" at site(s) {sites[:5]}" + (f" and {len(sites) - 5} more" if len(sites) > 5 else "")


def _numeric(frame: pd.DataFrame, col: str, role: str, domain: str | None) -> np.ndarray:
    if col not in frame.columns:
        raise UserInputError(f"the {role} column '{col}' is not in the data", where=f"[data] {role}",
                             fix=f"choose one of {list(frame.columns)[:20]}")
    raw = frame[col]
    if raw.dtype.kind in "iuf":
        return raw.to_numpy(dtype=float)
    # True/False is no time or amount: count it with the text
    flags = raw.map(lambda v: isinstance(v, (bool, np.bool_))).to_numpy(bool)
    values = pd.to_numeric(raw.where(~flags), errors="coerce")
    text = (values.isna() & raw.notna() & (raw.astype(str).str.strip() != "")) | flags
    if text.any():
        raise UserInputError(
            f"the {role} column '{col}' holds {int(text.sum())} non-numeric value(s)"
            + _where(domain, frame, text.to_numpy()),
            where=f"[data] {role}",
            fix=f"export '{col}' as numbers (e.g. days as 12.5); leave missing values empty",
        )
    return values.to_numpy(dtype=float)


def survival_target(frame: pd.DataFrame, *, time: str, event: str, domain: str | None = None) -> np.ndarray:
    """The structured (event, time) array of ``frame``, checked.

    Refuses: a missing column, text in the time column, missing or negative times, an event
    column that is not 0/1 (or True/False), and data in which every row is censored.
    """
    t = _numeric(frame, time, "time", domain)
    bad = np.isnan(t)
    if bad.any():
        raise UserInputError(f"the time column '{time}' is empty in {int(bad.sum())} row(s)" + _where(domain, frame, bad),
                             where="[data] time", fix="give every row a follow-up time, or drop those rows")
    neg = t < 0
    if neg.any():
        raise UserInputError(f"the time column '{time}' holds {int(neg.sum())} negative value(s)"
                             + _where(domain, frame, neg), where="[data] time",
                             fix="times count from the start of follow-up and must be >= 0; check the offsets "
                             "used to compute them")
    if event not in frame.columns:
        raise UserInputError(f"the event column '{event}' is not in the data", where="[data] event",
                             fix=f"choose one of {list(frame.columns)[:20]}")
    raw = frame[event]
    if raw.dtype == bool:
        e = raw.to_numpy(dtype=float)
    else:
        e = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    not01 = ~np.isin(e, (0.0, 1.0))
    if not01.any():
        raise UserInputError(
            f"the event column '{event}' must be 0 (censored) or 1 (event); {int(not01.sum())} row(s) are not"
            + _where(domain, frame, not01),
            where="[data] event",
            fix="code the event as 1 and censoring (alive at last follow-up) as 0; leave no cell empty",
        )
    if e.sum() == 0:
        raise UserInputError(f"every row is censored: the event column '{event}' has no 1", where="[data] event",
                             fix="check the event coding (1 = the event happened) or choose data with events")
    y = np.empty(len(frame), dtype=SURV_DTYPE)
    y["event"], y["time"] = e.astype(bool), t
    return y


def masked_survival(y: np.ndarray, labelled: np.ndarray) -> np.ndarray:
    """A copy of ``y`` with the rows outside ``labelled`` unlabelled (time NaN, no event)."""
    out = y.copy()
    hide = ~np.asarray(labelled, bool)
    out["time"][hide] = np.nan
    out["event"][hide] = False
    return out


def is_unlabelled_survival(y: np.ndarray) -> np.ndarray:
    return np.isnan(y["time"])


def regression_target(frame: pd.DataFrame, *, label: str, domain: str | None = None,
                      transform: str = "none") -> np.ndarray:
    """The continuous label of ``frame`` as floats, checked (no text, no gaps, log-able)."""
    if transform not in LOG_TRANSFORMS:
        raise UserInputError(f"unknown transform '{transform}'", where="[data] transform",
                             fix=f"use one of {list(LOG_TRANSFORMS)}")
    y = _numeric(frame, label, "label", domain)
    bad = np.isnan(y)
    if bad.any():
        raise UserInputError(f"the label column '{label}' is empty in {int(bad.sum())} row(s)" + _where(domain, frame, bad),
                             where="[data] label", fix="drop those rows or fill the outcome")
    if transform == "log" and (y <= 0).any():
        raise UserInputError(f"transform 'log' needs a positive label; '{label}' has {int((y <= 0).sum())} value(s) <= 0",
                             where="[data] transform", fix="use transform = \"log1p\" or \"none\"")
    if transform == "log1p" and (y <= -1).any():
        raise UserInputError(f"transform 'log1p' needs a label > -1 in '{label}'", where="[data] transform",
                             fix="use transform = \"none\"")
    return y


def infer_task(values: pd.Series) -> str:
    """``"regression"`` for a numeric label with many distinct values, else ``"classification"``.

    >>> infer_task(pd.Series([0.5 * i for i in range(40)])), infer_task(pd.Series([0, 1, 1, 0]))
    ('regression', 'classification')
    """
    if values.dtype.kind == "f" or values.dtype.kind in "iu":
        if values.nunique(dropna=True) >= REGRESSION_MIN_DISTINCT:
            return "regression"
    return "classification"


def check_horizons(y_target: np.ndarray, horizons: list[float], site: str, min_at_risk: int = 5) -> None:
    """Refuse a horizon the target's follow-up cannot support (fewer than ``min_at_risk`` rows
    still followed at the horizon): its risk could not be evaluated there."""
    t = y_target["time"][~np.isnan(y_target["time"])]
    if not (y_target["event"]).any():
        raise UserInputError(f"every row of target site '{site}' is censored", where="[transfer] target",
                             fix="choose a target with observed events; its risks cannot be evaluated otherwise")
    for h in horizons:
        at_risk = int((t >= h).sum())
        if at_risk < min_at_risk:
            raise UserInputError(
                f"horizon {h:g} is beyond the follow-up at target site '{site}': {at_risk} row(s) are still "
                f"followed at {h:g} (need >= {min_at_risk})",
                where="[data] horizons",
                fix=f"use horizons below the target's follow-up (its median follow-up is {float(np.median(t)):.3g})",
            )
