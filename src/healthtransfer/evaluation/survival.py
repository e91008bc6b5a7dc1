"""Held-out evaluation of time-to-event predictions (scikit-survival's metrics, wired once).

Censoring weights (Uno's C, time-dependent AUC, the integrated Brier score) come from the
Kaplan-Meier estimate of the censoring distribution of the *evaluation* rows themselves:
the target's censoring (discharge patterns) need not match the source's, and the test rows
are the population the numbers describe.

Example
-------
>>> import numpy as np
>>> from healthtransfer.data.outcomes import SURV_DTYPE
>>> rng = np.random.default_rng(0)
>>> risk = rng.normal(size=200)
>>> y = np.empty(200, SURV_DTYPE)
>>> y["time"] = rng.exponential(10 * np.exp(-risk)); y["event"] = rng.random(200) < 0.7
>>> grid = np.linspace(0.5, 30, 60)
>>> surv = np.exp(-np.outer(np.exp(risk), grid) / 10)
>>> s = survival_scores(y, risk, surv, grid, horizons=[5.0])
>>> s["c_harrell"] > 0.6
True
"""

from __future__ import annotations

import numpy as np

__all__ = ["SURVIVAL_METRICS", "survival_scores", "kaplan_meier", "calibration_at_horizon", "surv_at"]

# metric -> higher is better?
SURVIVAL_METRICS = {"c_harrell": True, "c_uno": True, "ibs": False}


def kaplan_meier(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(times, survival) of the Kaplan-Meier estimate of ``y`` (scikit-survival's estimator)."""
    from sksurv.nonparametric import kaplan_meier_estimator

    t, s = kaplan_meier_estimator(y["event"], y["time"])
    return np.asarray(t, float), np.asarray(s, float)


def _step(times, values, at, before=1.0):
    idx = np.searchsorted(times, at, side="right") - 1
    return np.where(idx >= 0, values[np.clip(idx, 0, None)], before)


def surv_at(surv: np.ndarray, grid: np.ndarray, t: float) -> np.ndarray:
    """Each row's survival at time ``t`` from curves ``surv`` (n x len(grid)) on ``grid``."""
    j = int(np.searchsorted(grid, t, side="right") - 1)
    return np.ones(len(surv)) if j < 0 else surv[:, j]


def calibration_at_horizon(y: np.ndarray, risk_h: np.ndarray, horizon: float, groups: int = 5) -> dict:
    """Predicted risk at ``horizon`` against the Kaplan-Meier observed risk, overall and by
    risk group (quantiles of the prediction). ``oe`` is observed / expected."""
    obs = 1.0 - float(_step(*kaplan_meier(y), horizon))
    exp = float(np.mean(risk_h))
    rows = []
    edges = np.unique(np.quantile(risk_h, np.linspace(0, 1, groups + 1)))
    which = np.clip(np.searchsorted(edges, risk_h, side="right") - 1, 0, max(len(edges) - 2, 0))
    for g in np.unique(which):
        m = which == g
        if m.sum() < 5 or not y["event"][m].any():
            obs_g = float("nan") if m.sum() < 5 else 0.0
        else:
            obs_g = 1.0 - float(_step(*kaplan_meier(y[m]), horizon))
        rows.append({"n": int(m.sum()), "predicted": float(risk_h[m].mean()), "observed": obs_g})
    return {"observed": obs, "expected": exp, "oe": obs / exp if exp > 0 else float("nan"), "groups": rows}


def survival_scores(y: np.ndarray, risk: np.ndarray, surv: np.ndarray, grid: np.ndarray, horizons,
                    *, n_boot: int = 0, random_state: int = 0) -> dict:
    """Harrell's and Uno's C, time-dependent AUC and observed/expected at each horizon, and the
    IPCW integrated Brier score over (first event time, last horizon].

    ``risk`` ranks rows (higher = earlier event); ``surv`` holds each row's survival curve on
    ``grid``. ``n_boot`` > 0 adds a percentile bootstrap interval of Harrell's C.
    """
    from sksurv.metrics import (concordance_index_censored, concordance_index_ipcw, cumulative_dynamic_auc,
                                integrated_brier_score)

    risk = np.asarray(risk, float)
    horizons = [float(h) for h in horizons]
    tau = max(horizons)
    out: dict = {"n_test": int(len(y)), "n_events": int(y["event"].sum())}
    out["c_harrell"] = float(concordance_index_censored(y["event"], y["time"], risk)[0])
    out["c_uno"] = float(concordance_index_ipcw(y, y, risk, tau=tau)[0])
    for h in horizons:
        risk_h = 1.0 - surv_at(surv, grid, h)
        key = f"{h:g}"
        try:
            out[f"auc_{key}"] = float(cumulative_dynamic_auc(y, y, risk_h, times=[h])[0][0])
        except ValueError:  # no event before h, or nobody at risk after it
            out[f"auc_{key}"] = float("nan")
        cal = calibration_at_horizon(y, risk_h, h)
        out[f"oe_{key}"] = cal["oe"]
        out[f"calibration_{key}"] = cal
    lo = float(np.min(y["time"][y["event"]])) if y["event"].any() else float(grid[0])
    ev_grid = np.linspace(lo, min(tau, float(y["time"].max()) * 0.999), 25)
    ev_grid = ev_grid[(ev_grid >= lo) & (ev_grid < y["time"].max())]
    if len(ev_grid) >= 2:
        S = np.column_stack([surv_at(surv, grid, t) for t in ev_grid])
        out["ibs"] = float(integrated_brier_score(y, y, S, ev_grid))
    else:
        out["ibs"] = float("nan")
    if n_boot:
        rng = np.random.default_rng(random_state)
        vals = []
        for _ in range(n_boot):
            i = rng.integers(0, len(y), len(y))
            if y["event"][i].any():
                vals.append(concordance_index_censored(y["event"][i], y["time"][i], risk[i])[0])
        if vals:
            out["c_harrell_ci"] = [float(np.quantile(vals, 0.025)), float(np.quantile(vals, 0.975))]
    return out
