"""Per-feature shift between one source site and the target.

For each feature: an effect size (standardised mean difference for numeric features, Cramér's
V for categorical ones), a two-sample test, the missingness rate at each site and whether the
feature is never measured at a site. p-values are Benjamini–Hochberg adjusted across the
features of one (source, target) pair.

Example
-------
>>> import numpy as np, pandas as pd
>>> rng = np.random.default_rng(0)
>>> s = pd.DataFrame({"a": rng.normal(size=200), "b": rng.integers(0, 3, 200)})
>>> t = pd.DataFrame({"a": rng.normal(1.0, size=200), "b": rng.integers(0, 3, 200)})
>>> tab = feature_shift(s, t, ["a"], ["b"], source="s", target="t")
>>> tab.iloc[0]["feature"], bool(tab.iloc[0]["q_value"] < 0.01)
('a', True)
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["feature_shift", "bh_adjust", "FEW_VALUES"]

#: numeric features with at most this many distinct observed values (binary flags, small
#: ordinal scores) are tested with the chi-square test instead of KS, which is conservative
#: on heavily tied data. Their effect size stays the standardised mean difference.
FEW_VALUES = 5


def bh_adjust(p) -> np.ndarray:
    """Benjamini–Hochberg q-values; NaN p-values stay NaN and are not counted."""
    p = np.asarray(p, dtype=float)
    q = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        q[ok] = stats.false_discovery_control(np.clip(p[ok], 0.0, 1.0), method="bh")
    return q


def _chi2(a: pd.Series, b: pd.Series) -> tuple[float, float, float]:
    """(statistic, p, Cramér's V) for two samples of categories (observed values only)."""
    cats = pd.Index(pd.concat([a, b]).unique())
    if len(cats) < 2:
        return 0.0, 1.0, 0.0
    table = np.vstack([a.value_counts().reindex(cats, fill_value=0).to_numpy(),
                       b.value_counts().reindex(cats, fill_value=0).to_numpy()])
    chi2, p, _, _ = stats.chi2_contingency(table, correction=False)
    n = table.sum()
    v = float(np.sqrt(chi2 / (n * (min(table.shape) - 1)))) if n else np.nan
    return float(chi2), float(p), v


def _smd(a: np.ndarray, b: np.ndarray) -> float:
    """(mean_b - mean_a) / sqrt((var_a + var_b) / 2); 0 when both sites are constant and equal."""
    diff = float(b.mean() - a.mean())
    pooled = np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2) if len(a) > 1 and len(b) > 1 else np.nan
    if not np.isfinite(pooled):
        return np.nan
    if pooled == 0:
        return 0.0 if diff == 0 else float(np.sign(diff) * np.inf)
    return diff / pooled


def feature_shift(src: pd.DataFrame, tgt: pd.DataFrame, numeric: list[str], categorical: list[str], *,
                  source: str, target: str) -> pd.DataFrame:
    """One row per feature, sorted by effect size (largest first).

    Columns: source, target, feature, kind (numeric/categorical), test (ks/chi2), smd,
    cramers_v, effect (|smd| or V), statistic, p_value, q_value, n_source_obs, n_target_obs,
    missing_source, missing_target, missing_diff (target minus source), never_measured
    ("source", "target", "both" or "").
    """
    rows = []
    for f in [*numeric, *categorical]:
        kind = "categorical" if f in categorical else "numeric"
        a, b = src[f], tgt[f]
        ma = float(a.isna().mean()) if len(a) else np.nan
        mb = float(b.isna().mean()) if len(b) else np.nan
        a, b = a.dropna(), b.dropna()
        never = "both" if (a.empty and b.empty) else "source" if a.empty else "target" if b.empty else ""
        rec = dict(source=source, target=target, feature=f, kind=kind, test="", smd=np.nan, cramers_v=np.nan,
                   effect=np.nan, statistic=np.nan, p_value=np.nan, n_source_obs=int(len(a)),
                   n_target_obs=int(len(b)), missing_source=ma, missing_target=mb, missing_diff=mb - ma,
                   never_measured=never)
        if len(a) >= 2 and len(b) >= 2:
            if kind == "numeric":
                x, y = a.to_numpy(float), b.to_numpy(float)
                rec["smd"] = _smd(x, y)
                rec["effect"] = abs(rec["smd"])
                if len(np.union1d(np.unique(x), np.unique(y))) <= FEW_VALUES:
                    rec["test"] = "chi2"
                    rec["statistic"], rec["p_value"], _ = _chi2(a, b)
                else:
                    rec["test"] = "ks"
                    res = stats.ks_2samp(x, y)
                    rec["statistic"], rec["p_value"] = float(res.statistic), float(res.pvalue)
            else:
                rec["test"] = "chi2"
                rec["statistic"], rec["p_value"], rec["cramers_v"] = _chi2(a.astype(str), b.astype(str))
                rec["effect"] = rec["cramers_v"]
        rows.append(rec)
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out.insert(out.columns.get_loc("p_value") + 1, "q_value", bh_adjust(out["p_value"]))
    order = out["effect"].fillna(-1).to_numpy()
    out = out.iloc[np.argsort(-order, kind="stable")].reset_index(drop=True)
    return out
