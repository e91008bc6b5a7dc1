"""Preprocessing statistics computed federatedly.

Each site computes, on its own training rows only, per numeric feature the count of observed
values, their sum and their sum of squares, and per categorical feature the set of levels it
has seen. When the run is private (any DP mode, or SecAgg+), these statistics are private
too (:func:`private_stats`): values are clipped to the schema's declared range, Gaussian
noise calibrated to ``privacy.stats_epsilon`` is added to the row count, counts, sums and
sums of squares, and the categorical levels are the schema's declared ones, so nothing a site
sends depends on one patient beyond what the noise hides; the epsilon is in the privacy
report. Each site takes its noise level from its own plan, never from the server's request.
The server adds these up (:func:`merge_stats`) and every site then applies the same
:class:`FederatedPreprocessor`: mean imputation plus a missingness indicator and
standardisation for numeric features, one-hot for categorical ones with "missing" as its own
level. The output layout follows :func:`healthtransfer.data.preprocess.make_preprocessor`
(numeric block, indicator block, one-hot block); the one difference is mean imputation instead
of the median, because a median cannot be formed from sums.

Example
-------
>>> import pandas as pd, numpy as np
>>> a = pd.DataFrame({"age": [50.0, np.nan], "cp": [1.0, 4.0]})
>>> b = pd.DataFrame({"age": [70.0, 60.0], "cp": [2.0, np.nan]})
>>> st = merge_stats([local_stats(a, ["age"], ["cp"]), local_stats(b, ["age"], ["cp"])])
>>> st["numeric"]["age"]["count"], st["categorical"]["cp"]
(3.0, ['1', '2', '4', 'missing'])
>>> FederatedPreprocessor(st).transform(a).shape
(2, 6)
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

__all__ = ["FederatedPreprocessor", "local_stats", "merge_stats", "local_moments", "coral_map",
           "private_stats", "stats_privacy", "stats_bounds"]


def _level(v) -> str:
    if pd.isna(v):
        return "missing"
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def local_stats(frame: pd.DataFrame, numeric: list[str], categorical: list[str]) -> dict:
    """Aggregates of one site's rows: counts, sums, sums of squares, category sets. No rows."""
    out: dict = {"n": float(len(frame)), "numeric": {}, "categorical": {}}
    for c in numeric:
        x = pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=float)
        obs = x[~np.isnan(x)]
        out["numeric"][c] = {"count": float(obs.size), "sum": float(obs.sum()), "sumsq": float((obs ** 2).sum())}
    for c in categorical:
        out["categorical"][c] = sorted({_level(v) for v in frame[c]})
    return out


def stats_bounds(schema, numeric: list[str], categorical: list[str]) -> dict:
    """Declared ranges and levels from a site schema: ``{"bounds": {c: [lo, hi]}, "levels":
    {c: [...]}}`` (public knowledge, so they cost no privacy)."""
    out: dict = {"bounds": {}, "levels": {}}
    for c in numeric:
        f = schema.feature(c) if schema is not None else None
        if f is not None and f.range is not None:
            out["bounds"][c] = [float(f.range[0]), float(f.range[1])]
        elif f is not None and f.categories:  # binary/coded features: the codes bound them
            try:
                codes = [float(v) for v in f.categories]
            except (TypeError, ValueError):
                continue
            out["bounds"][c] = [min(codes), max(codes)]
    for c in categorical:
        f = schema.feature(c) if schema is not None else None
        if f is not None and f.categories:
            out["levels"][c] = sorted({_level(v) for v in f.categories} | {"missing"})
    return out


def stats_privacy(cfg: dict) -> dict | None:
    """The Gaussian mechanism the statistics go through, or None when the run is not private
    (no DP mode and no SecAgg+: then nothing else it sends is protected either)."""
    priv = cfg.get("privacy", {})
    if priv.get("mode", "none") == "none" and not cfg.get("secagg"):
        return None
    from . import _dp

    eps, delta = float(priv.get("stats_epsilon", 1.0)), float(priv.get("delta", 1e-5))
    z = _dp.noise_for_epsilon(eps, delta, 1.0, 1)
    return {"mechanism": "gaussian", "noise_multiplier": z, "delta": delta,
            "epsilon": _dp.spent_epsilon(z, 1.0, 1, delta)}


def private_stats(frame: pd.DataFrame, numeric: list[str], categorical: list[str], *,
                  bounds: dict, levels: dict, noise_multiplier: float,
                  rng: np.random.Generator | None = None) -> dict:
    """:func:`local_stats` through the Gaussian mechanism (record-level, add/remove one row).

    Each value is clipped to its declared range [lo, hi] and mapped to u in [-1, 1]; one row
    then moves the row count, each count, each sum of u and each sum of u^2 by at most 1, so
    the L2 sensitivity is sqrt(1 + 3 * n_numeric) and noise of that times ``noise_multiplier``
    is added to each. The noisy sums are mapped back to the original units (post-processing).

    >>> df = pd.DataFrame({"age": np.linspace(30, 80, 200), "cp": [1.0, 4.0] * 100})
    >>> st = private_stats(df, ["age"], ["cp"], bounds={"age": [18, 100]},
    ...                    levels={"cp": ["1", "2", "3", "4", "missing"]}, noise_multiplier=1.0,
    ...                    rng=np.random.default_rng(0))
    >>> abs(st["numeric"]["age"]["sum"] / st["numeric"]["age"]["count"] - 55) < 5
    True
    """
    from ..errors import UserInputError

    lacking = [c for c in numeric if c not in bounds] + [c for c in categorical if c not in levels]
    if lacking:
        raise UserInputError(
            f"features {lacking} have no declared range (numeric) or categories (categorical)",
            where="federated preprocessing statistics",
            fix="declare `range` / `categories` for them in the site schema; private "
                "statistics need public bounds")
    rng = rng if rng is not None else np.random.default_rng()
    sens = math.sqrt(1 + 3 * len(numeric))
    sd = float(noise_multiplier) * sens

    def noisy(v: float) -> float:
        return float(v + rng.normal(0.0, sd))
    out: dict = {"n": noisy(len(frame)), "numeric": {}, "categorical": {}, "bounds": {}}
    for c in numeric:
        lo, hi = map(float, bounds[c])
        mid, half = (lo + hi) / 2, max((hi - lo) / 2, 1e-12)
        x = pd.to_numeric(frame[c], errors="coerce").to_numpy(dtype=float)
        u = (np.clip(x[~np.isnan(x)], lo, hi) - mid) / half
        cnt, su, suu = noisy(u.size), noisy(u.sum()), noisy((u ** 2).sum())
        out["numeric"][c] = {"count": cnt, "sum": mid * cnt + half * su,
                             "sumsq": mid * mid * cnt + 2 * mid * half * su + half * half * suu}
        out["bounds"][c] = [lo, hi]
    for c in categorical:
        out["categorical"][c] = list(levels[c])
    return out


def merge_stats(parts: list[dict]) -> dict:
    """Sum site aggregates into global ones (pure; what the server runs)."""
    if not parts:
        raise ValueError("no site statistics to merge")
    merged: dict = {"n": 0.0, "numeric": {}, "categorical": {}}
    for p in parts:
        merged["n"] += float(p["n"])
        for c, s in p["numeric"].items():
            m = merged["numeric"].setdefault(c, {"count": 0.0, "sum": 0.0, "sumsq": 0.0})
            for k in m:
                m[k] += float(s[k])
        for c, levels in p["categorical"].items():
            merged["categorical"][c] = sorted(set(merged["categorical"].get(c, [])) | set(levels))
        for c, b in p.get("bounds", {}).items():
            merged.setdefault("bounds", {})[c] = list(b)
    return merged


class FederatedPreprocessor:
    """The transform every site applies, built from merged statistics only."""

    def __init__(self, stats: dict):
        self.stats = stats
        self.numeric = list(stats["numeric"])
        self.categorical = list(stats["categorical"])
        self.mean, self.scale = {}, {}
        bounds = stats.get("bounds", {})
        for c, s in stats["numeric"].items():
            n = max(s["count"], 1.0)
            mu = s["sum"] / n
            if c in bounds:  # noisy statistics: keep the mean inside the declared range
                mu = min(max(mu, bounds[c][0]), bounds[c][1])
            var = max(s["sumsq"] / n - mu * mu, 0.0)
            self.mean[c] = mu
            self.scale[c] = math.sqrt(var) if var > 1e-12 else 1.0
        self.levels = {c: list(v) for c, v in stats["categorical"].items()}

    @property
    def feature_names(self) -> list[str]:
        return ([*self.numeric, *(f"{c}__missing" for c in self.numeric)]
                + [f"{c}={v}" for c in self.categorical for v in self.levels[c]])

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        blocks = []
        if self.numeric:
            raw = frame[self.numeric].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
            miss = np.isnan(raw)
            mu = np.array([self.mean[c] for c in self.numeric])
            sd = np.array([self.scale[c] for c in self.numeric])
            filled = np.where(miss, mu, raw)
            blocks += [(filled - mu) / sd, miss.astype(float)]
        for c in self.categorical:
            lv = frame[c].map(_level).to_numpy()
            blocks.append(np.stack([(lv == v).astype(float) for v in self.levels[c]], axis=1)
                          if self.levels[c] else np.zeros((len(frame), 0)))
        return np.concatenate(blocks, axis=1) if blocks else np.zeros((len(frame), 0))

    def to_json(self) -> str:
        return json.dumps(self.stats)

    @classmethod
    def from_json(cls, text: str) -> "FederatedPreprocessor":
        return cls(json.loads(text))


def local_moments(X: np.ndarray) -> dict:
    """Mean and covariance of one site's preprocessed features (aggregates only)."""
    return {"n": int(X.shape[0]), "mean": X.mean(axis=0).tolist(), "cov": np.cov(X, rowvar=False).tolist()}


def _sqrtm(C: np.ndarray, inv: bool = False) -> np.ndarray:
    w, V = np.linalg.eigh(C)
    w = np.clip(w, 1e-6, None)
    return (V * (w ** (-0.5 if inv else 0.5))) @ V.T


def coral_map(X: np.ndarray, source: dict, target: dict, eps: float = 1.0) -> np.ndarray:
    """Re-colour source rows with the target's aggregate moments (CORAL, Sun et al. 2016)."""
    d = X.shape[1]
    Cs = np.asarray(source["cov"]) + eps * np.eye(d)
    Ct = np.asarray(target["cov"]) + eps * np.eye(d)
    A = _sqrtm(Cs, inv=True) @ _sqrtm(Ct)
    return (X - np.asarray(source["mean"])) @ A + np.asarray(target["mean"])
