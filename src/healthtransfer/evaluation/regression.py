"""Held-out evaluation of continuous predictions: MAE, RMSE, R², calibration by decile.

Example
-------
>>> import numpy as np
>>> y = np.arange(1.0, 21.0)
>>> s = regression_scores(y, y + 1.0)
>>> round(s["mae"], 3), round(s["rmse"], 3)
(1.0, 1.0)
"""

from __future__ import annotations

import numpy as np

__all__ = ["REGRESSION_METRICS", "regression_scores", "calibration_by_decile"]

# metric -> higher is better?
REGRESSION_METRICS = {"mae": False, "rmse": False, "r2": True}


def calibration_by_decile(y, pred, bins: int = 10) -> list[dict]:
    """Mean prediction and mean outcome in each decile of the prediction."""
    y, pred = np.asarray(y, float), np.asarray(pred, float)
    edges = np.unique(np.quantile(pred, np.linspace(0, 1, bins + 1)))
    which = np.clip(np.searchsorted(edges, pred, side="right") - 1, 0, max(len(edges) - 2, 0))
    return [{"n": int((which == g).sum()), "predicted": float(pred[which == g].mean()),
             "observed": float(y[which == g].mean())} for g in np.unique(which)]


def regression_scores(y, pred, *, lower=None, upper=None) -> dict:
    """MAE, RMSE, R², calibration slope/intercept (outcome on prediction), deciles, and the
    coverage of a prediction interval when ``lower``/``upper`` are given."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    y, pred = np.asarray(y, float), np.asarray(pred, float)
    out = {"n_test": int(len(y)), "mae": float(mean_absolute_error(y, pred)),
           "rmse": float(np.sqrt(mean_squared_error(y, pred))), "r2": float(r2_score(y, pred))}
    if np.ptp(pred) > 0:
        slope, intercept = np.polyfit(pred, y, 1)
        out.update(calibration_slope=float(slope), calibration_intercept=float(intercept))
    out["deciles"] = calibration_by_decile(y, pred)
    if lower is not None and upper is not None:
        out["interval_coverage"] = float(np.mean((y >= lower) & (y <= upper)))
    return out
