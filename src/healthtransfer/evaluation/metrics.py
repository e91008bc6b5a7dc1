"""Target-test metrics with percentile-bootstrap confidence intervals.

Binary: AUROC, AUPRC, Brier, ECE (10 equal-width bins, weighted by count). Multi-class:
macro one-vs-rest AUROC, accuracy, macro-F1, log loss, multi-class Brier, top-label ECE.

Example
-------
>>> import numpy as np
>>> y = np.array([0, 0, 1, 1]); p = np.array([0.1, 0.4, 0.35, 0.8])
>>> round(score(y, p)["auroc"], 2)
0.75
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    log_loss,
    roc_auc_score,
)

__all__ = ["score", "target_sample_ci", "fast_bootstrap_ci", "expected_calibration_error", "ece_noise_floor", "BINARY_METRICS", "MULTICLASS_METRICS", "LOWER_IS_BETTER"]

BINARY_METRICS = ("auroc", "auprc", "brier", "ece")
MULTICLASS_METRICS = ("auroc", "accuracy", "macro_f1", "log_loss", "brier", "ece")
LOWER_IS_BETTER = {"brier", "ece", "log_loss"}


def expected_calibration_error(y, proba, n_bins: int = 10) -> float:
    """ECE: binary on P(y=1); multi-class on the top-label confidence."""
    y = np.asarray(y)
    proba = np.asarray(proba, float)
    if proba.ndim == 1:
        conf, hit = proba, (y == 1).astype(float)
    else:
        conf, hit = proba.max(axis=1), (proba.argmax(axis=1) == y).astype(float)
    bins = np.clip((conf * n_bins).astype(int), 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            total += m.mean() * abs(conf[m].mean() - hit[m].mean())
    return float(total)


def ece_noise_floor(proba, n_draws: int = 200, n_bins: int = 10, random_state=0) -> float:
    """The ECE a *perfectly calibrated* model would show on these rows: the mean ECE when the
    labels are drawn from the predicted probabilities themselves (binary P(y=1)).

    Binned ECE is biased upward on small test sets; on ~150 rows a calibrated model scores
    0.05-0.09, so an ECE near this floor is as good as the test set can show.

    >>> round(ece_noise_floor(np.full(10_000, 0.3)), 3) < 0.02
    True
    """
    p = np.asarray(proba, float)
    rng = np.random.default_rng(random_state)
    # one draw at a time: a (draws x rows) matrix would be ~300 MB at 10^5 test rows
    return float(np.mean([expected_calibration_error((rng.random(len(p)) < p).astype(int), p, n_bins)
                          for _ in range(n_draws)]))


def score(y, proba, n_classes: int | None = None) -> dict[str, float]:
    """All metrics for labels ``y`` (0..K-1) and probabilities (1-D P(y=1) or (n, K))."""
    y = np.asarray(y).astype(int)
    proba = np.asarray(proba, float)
    if proba.ndim == 2 and proba.shape[1] == 2 and (n_classes in (None, 2)):
        proba = proba[:, 1]
    if proba.ndim == 1:
        one_class = len(np.unique(y)) < 2
        return {
            "auroc": float("nan") if one_class else float(roc_auc_score(y, proba)),
            "auprc": float("nan") if one_class else float(average_precision_score(y, proba)),
            "brier": float(np.mean((proba - y) ** 2)),
            "ece": expected_calibration_error(y, proba),
        }
    k = proba.shape[1]
    labels = np.arange(k)
    onehot = np.eye(k)[y]
    present = np.unique(y)
    try:
        if len(present) < 2:
            auroc = float("nan")
        else:
            # macro one-vs-rest over the classes present in y
            auroc = float(np.mean([roc_auc_score(y == c, proba[:, c]) for c in present]))
    except ValueError:
        auroc = float("nan")
    pred = proba.argmax(axis=1)
    return {
        "auroc": auroc,
        "accuracy": float(accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, average="macro", labels=present, zero_division=0)),
        "log_loss": float(log_loss(y, np.clip(proba, 1e-12, 1), labels=labels)),
        "brier": float(np.mean(np.sum((proba - onehot) ** 2, axis=1))),
        "ece": expected_calibration_error(y, proba),
    }


def target_sample_ci(y, proba, *, n_resamples: int = 2000, level: float = 0.95,
                     random_state: int = 0) -> dict[str, dict]:
    """How well a *fixed* model does at a site: AUROC and Brier with a BCa bootstrap interval
    over the site's evaluation patients (scipy.stats.bootstrap, paired resampling of rows).

    This answers "how good is the shipped model here", given a finite target sample: adding
    seeds does not narrow it, only more target patients do. Binned ECE gets no interval (it is
    biased upward on small samples); its noise floor (:func:`ece_noise_floor`) is the yardstick.
    A simulation on synthetic shift with a known population AUROC/Brier checks that these
    intervals cover 93-97% of the time (tests/evaluation/test_intervals.py).

    >>> import numpy as np
    >>> rng = np.random.default_rng(0); p = rng.random(200); y = (rng.random(200) < p).astype(int)
    >>> ci = target_sample_ci(y, p, n_resamples=500)
    >>> ci["auroc"]["ci"][0] < ci["auroc"]["value"] < ci["auroc"]["ci"][1]
    True
    """
    from scipy import stats

    y = np.asarray(y).astype(int)
    p = np.asarray(proba, float)
    if p.ndim == 2:
        p = p[:, 1]

    def auroc(yy, pp, axis=-1):
        yy, pp = np.moveaxis(yy, axis, -1), np.moveaxis(pp, axis, -1)
        shape = yy.shape[:-1]
        return _auroc_rows(yy.reshape(-1, yy.shape[-1]).astype(int), pp.reshape(-1, pp.shape[-1])).reshape(shape)

    def brier(yy, pp, axis=-1):
        return np.mean((pp - yy) ** 2, axis=axis)

    point = score(y, p)
    out: dict[str, dict] = {}
    for name, fn in (("auroc", auroc), ("brier", brier)):
        entry = {"value": point[name], "ci": [float("nan"), float("nan")], "level": level, "n": int(len(y)),
                 "interval": "target sample (BCa bootstrap over evaluation patients)"}
        if len(np.unique(y)) == 2 and len(y) >= 10:
            with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # scipy warns when BCa is undefined; handled below
                res = stats.bootstrap((y, p), fn, paired=True, vectorized=True, n_resamples=n_resamples,
                                      confidence_level=level, method="BCa", random_state=random_state)
            ci = [float(res.confidence_interval.low), float(res.confidence_interval.high)]
            if not np.all(np.isfinite(ci)):
                # a rare class: some resamples hold one class (AUROC undefined) and BCa's
                # acceleration is then undefined; the percentile interval of the defined ones
                dist = res.bootstrap_distribution[np.isfinite(res.bootstrap_distribution)]
                ci = np.quantile(dist, [(1 - level) / 2, (1 + level) / 2]).tolist() if len(dist) else ci
                entry["interval"] = "target sample (percentile bootstrap over evaluation patients; BCa undefined)"
            entry["ci"] = [float(c) for c in ci]
        out[name] = entry
    out["ece"] = {"value": point["ece"], "noise_floor": ece_noise_floor(p, random_state=random_state),
                  "n": int(len(y))}
    return out


def _auroc_rows(y: np.ndarray, P: np.ndarray) -> np.ndarray:
    """AUROC of each row of scores ``P`` (replicates x n) against labels ``y`` (same shape),
    by the Mann-Whitney statistic with average ranks for ties."""
    from scipy.stats import rankdata

    ranks = rankdata(P, axis=1)
    n1 = y.sum(axis=1)
    n0 = y.shape[1] - n1
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((ranks * y).sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * n0)


def fast_bootstrap_ci(y, proba, *, n_boot: int = 200, alpha: float = 0.05,
                      random_state: int = 0, max_cells: int = 20_000_000) -> dict[str, tuple[float, float]]:
    """Vectorised stratified percentile bootstrap of AUROC, Brier and (binary) ECE, or of
    accuracy for multi-class; cheap enough to run for every (method, seed, budget) record.

    Draws are made in chunks of at most ``max_cells`` (draw x row) cells, so memory stays
    bounded; above 50,000 rows the number of draws shrinks (to at least 50), as the interval
    is then narrow and each draw sorts every row.
    """
    y = np.asarray(y).astype(int)
    proba = np.asarray(proba, float)
    if proba.ndim == 2 and proba.shape[1] == 2:
        proba = proba[:, 1]
    n = len(y)
    if n > 50_000:
        n_boot = max(50, int(n_boot * 50_000 / n))
    rng = np.random.default_rng(random_state)
    by_class = [np.flatnonzero(y == c) for c in np.unique(y)]
    two = len(by_class) > 1
    stats: dict[str, list] = {}
    width = 1 if proba.ndim == 1 else proba.shape[1]  # multi-class draws hold (k, n, classes) arrays
    step = max(1, int(max_cells // max(n * width, 1)))
    for start in range(0, n_boot, step):
        k = min(step, n_boot - start)
        idx = np.concatenate([rng.choice(rows, size=(k, len(rows))) for rows in by_class], axis=1)
        yb = y[idx]
        if proba.ndim == 1:
            pb = proba[idx]
            if two:
                stats.setdefault("auroc", []).append(_auroc_rows(yb, pb))
            stats.setdefault("brier", []).append(((pb - yb) ** 2).mean(axis=1))
            bins = np.clip((pb * 10).astype(int), 0, 9)
            ece = np.zeros(k)
            for b in range(10):
                m = bins == b
                cnt = m.sum(axis=1)
                with np.errstate(invalid="ignore", divide="ignore"):
                    gap = np.abs((pb * m).sum(axis=1) - (yb * m).sum(axis=1)) / np.maximum(cnt, 1)
                ece += cnt / y.size * gap
            stats.setdefault("ece", []).append(ece)
        else:
            pb = proba[idx]  # (k, n, classes)
            stats.setdefault("accuracy", []).append((pb.argmax(axis=2) == yb).mean(axis=1))
            onehot = np.eye(proba.shape[1])[yb]
            stats.setdefault("brier", []).append(((pb - onehot) ** 2).sum(axis=2).mean(axis=1))
    q = [alpha / 2, 1 - alpha / 2]
    out = {key: tuple(np.quantile(np.concatenate(v), q).tolist()) for key, v in stats.items()}
    return {k: (float(a), float(b)) for k, (a, b) in out.items()}
