"""Preprocessing statistics computed federatedly.

Each site computes, on its own training rows only, per numeric feature the count of observed
values, their sum and their sum of squares, and per categorical feature the set of levels it
has seen. The server adds these up (:func:`merge_stats`) and every site then applies the same
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

__all__ = ["FederatedPreprocessor", "local_stats", "merge_stats", "local_moments", "coral_map"]


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
    return merged


class FederatedPreprocessor:
    """The transform every site applies, built from merged statistics only."""

    def __init__(self, stats: dict):
        self.stats = stats
        self.numeric = list(stats["numeric"])
        self.categorical = list(stats["categorical"])
        self.mean, self.scale = {}, {}
        for c, s in stats["numeric"].items():
            n = max(s["count"], 1.0)
            mu = s["sum"] / n
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
