"""Reference statistics of the training rows: aggregates only, never rows.

For every input feature the bundle keeps what the service needs to monitor drift (PSI bins
and their training shares), to flag unusual inputs (1st/99th percentiles, clipped further
in for small samples, and the missing
share) and to explain predictions (median or most frequent category). Numeric features are
binned at the training deciles; categorical and binary features by category. Missing values
are a bin of their own, so a rise in missingness is drift too.

No published number is one patient's value: the observed minimum and maximum are never
stored, and every quantile (range ends, bin edges, median) is published only where at least
:data:`K_BEYOND` training values lie strictly beyond it on each side; otherwise it is left
out (``None``, or one bin fewer).

Example
-------
>>> import numpy as np, pandas as pd
>>> ref = numeric_reference(pd.Series(np.arange(100.0)))
>>> len(ref["edges"]), ref["clip_low"], ref["clip_high"], ref["clip_q"], "min" in ref
(9, 10.395, 88.605, 0.105, False)
>>> r = numeric_reference(pd.Series(np.arange(2000.0)))
>>> round(r["clip_low"], 2), round(r["clip_high"], 2), r["clip_q"]
(19.99, 1979.01, 0.01)
>>> bin_index(ref, np.array([-5.0, 50.0, np.nan])).tolist()
[0, 5, 10]
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = ["build_reference", "numeric_reference", "categorical_reference", "bin_index",
           "psi", "category_key"]

N_QUANTILE_BINS = 10
K_BEYOND = 10  # values that must lie beyond a published quantile on each side
CLIP_Q = 0.01  # published range: 1st to 99th percentile (further in for small samples)


def clip_quantile(n: int, k: int = K_BEYOND) -> float:
    """The quantile at which the published range is clipped: the 1st/99th percentile, or
    further in for small samples, so that ``k`` values lie beyond each end."""
    return round(max(CLIP_Q, (k + 0.5) / max(n, 1)), 6)


def safe_quantile(ok: np.ndarray, q: float, k: int = K_BEYOND) -> float | None:
    """The ``q`` quantile of ``ok`` if at least ``k`` values lie strictly below and strictly
    above it; else None (it would be close to one patient's value)."""
    if ok.size == 0:
        return None
    v = float(np.quantile(ok, q))
    return v if int(np.sum(ok < v)) >= k and int(np.sum(ok > v)) >= k else None


def category_key(v) -> str:
    """The text form of a category value (``4.0`` and ``4`` are the same category)."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "missing"
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    if isinstance(v, (bool, np.bool_)):
        return str(int(v))
    return str(v)


def numeric_reference(values: pd.Series) -> dict:
    x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    ok = x[~np.isnan(x)]
    n = int(x.size)
    if ok.size == 0:
        return {"type": "numeric", "n": n, "missing_share": 1.0, "edges": [], "shares": [0.0, 1.0],
                "labels": ["all", "missing"], "clip_low": None, "clip_high": None,
                "clip_q": None, "median": None,
                "mean": None, "std": None}
    q = clip_quantile(ok.size)
    qs = [safe_quantile(ok, q) for q in np.linspace(0, 1, N_QUANTILE_BINS + 1)[1:-1]]
    edges = sorted({float(q) for q in qs if q is not None})
    idx = np.searchsorted(np.asarray(edges), ok, side="left")
    counts = np.bincount(idx, minlength=len(edges) + 1).astype(float)
    counts = np.append(counts, float(n - ok.size))
    labels = ([f"<= {edges[0]:.4g}"] if edges else ["all"])
    labels += [f"({a:.4g}, {b:.4g}]" for a, b in zip(edges[:-1], edges[1:])]
    if edges:
        labels.append(f"> {edges[-1]:.4g}")
    labels.append("missing")
    return {
        "type": "numeric",
        "n": n,
        "missing_share": float((n - ok.size) / n) if n else 0.0,
        "edges": edges,
        "labels": labels,
        "shares": (counts / max(n, 1)).tolist(),
        "clip_low": safe_quantile(ok, q),
        "clip_high": safe_quantile(ok, 1 - q),
        "clip_q": q,
        "median": safe_quantile(ok, 0.5),
        "mean": float(ok.mean()),
        "std": float(ok.std(ddof=1)) if ok.size > 1 else 0.0,
    }


def categorical_reference(values: pd.Series, categories: list | None) -> dict:
    keys = [category_key(v) for v in values.tolist()]
    n = len(keys)
    cats = [category_key(c) for c in categories] if categories else sorted(
        {k for k in keys if k != "missing"})
    labels = [*cats, "other", "missing"]
    pos = {c: i for i, c in enumerate(labels)}
    counts = np.zeros(len(labels))
    for k in keys:
        counts[pos.get(k, pos["other"])] += 1
    observed = [c for c in cats if counts[pos[c]] > 0]
    present = {c: counts[pos[c]] for c in cats}
    mode = max(present, key=present.get) if present and max(present.values()) > 0 else None
    return {
        "type": "categorical",
        "n": n,
        "missing_share": float(counts[-1] / n) if n else 0.0,
        "categories": cats,
        "observed_categories": observed,
        "labels": labels,
        "shares": (counts / max(n, 1)).tolist(),
        "mode": mode,
    }


def build_reference(frame: pd.DataFrame, features: list[dict]) -> dict:
    """Aggregates of ``frame`` for each feature spec (dicts with name/kind/categories)."""
    out: dict = {"n_rows": int(len(frame)), "features": {}}
    for spec in features:
        col = frame[spec["name"]] if spec["name"] in frame else pd.Series([np.nan] * len(frame))
        if spec["kind"] == "numeric":
            out["features"][spec["name"]] = numeric_reference(col)
        else:
            out["features"][spec["name"]] = categorical_reference(col, spec.get("categories"))
    return out


def bin_index(ref: dict, values) -> np.ndarray:
    """Bin number of each value under a feature's reference (the last bin is 'missing')."""
    if ref["type"] == "numeric":
        try:  # plain numbers / None (the service's validated records): no pandas round trip
            x = np.array([math.nan if v is None else v for v in values], dtype=float)
        except (TypeError, ValueError):
            x = pd.to_numeric(pd.Series(list(values), dtype=object),
                              errors="coerce").to_numpy(float)
        edges = np.asarray(ref["edges"], dtype=float)
        idx = np.searchsorted(edges, np.where(np.isnan(x), 0.0, x), side="left")
        idx[np.isnan(x)] = len(ref["labels"]) - 1
        return idx.astype(int)
    labels = ref["labels"]
    pos = {c: i for i, c in enumerate(labels)}
    other = pos["other"]
    memo: dict = {}  # a batch repeats a handful of categories: one category_key per value
    out = []
    for v in values:
        k = (type(v), v)
        try:
            b = memo[k]
        except KeyError:
            b = memo[k] = pos.get(category_key(v), other)
        except TypeError:  # unhashable: no memo
            b = pos.get(category_key(v), other)
        out.append(b)
    return np.array(out, dtype=int)


def psi(expected_shares, actual_counts, eps: float = 1e-4) -> float:
    """Population stability index sum((a - e) * ln(a / e)) with shares floored at ``eps``."""
    e = np.clip(np.asarray(expected_shares, float), eps, None)
    a = np.asarray(actual_counts, float)
    a = a / a.sum() if a.sum() > 0 else a
    a = np.clip(a, eps, None)
    e, a = e / e.sum(), a / a.sum()
    return float(np.sum((a - e) * np.log(a / e)))
