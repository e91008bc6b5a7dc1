"""Per-site feature statistics of a Parquet dataset in one pass: moments, extremes, a reservoir.

The public names are re-exported by :mod:`healthtransfer.data.streaming`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ._batches import _harmonise_batch
from ._reading import _arrow_batches, _restrict, _schema_columns
from ._rules import is_numeric
from .schema import DatasetSchema

__all__ = ["FeatureStats", "streaming_feature_stats"]


@dataclass
class FeatureStats:
    """Accumulators for one (site, numeric feature)."""

    n_rows: int = 0
    n_missing: int = 0
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    min: float = np.inf
    max: float = -np.inf
    reservoir: np.ndarray = field(default_factory=lambda: np.empty(0))
    _seen: int = 0

    def update(self, x: np.ndarray, rng: np.random.Generator, size: int) -> None:
        self.n_rows += len(x)
        ok = x[np.isfinite(x)]
        self.n_missing += len(x) - len(ok)
        if len(ok) == 0:
            return
        k = len(ok)
        mu = float(ok.mean())
        m2 = float(((ok - mu) ** 2).sum())
        n = self.n + k
        delta = mu - self.mean
        self.mean += delta * k / n
        self.m2 += m2 + delta**2 * self.n * k / n
        self.n = n
        self.min = min(self.min, float(ok.min()))
        self.max = max(self.max, float(ok.max()))
        # reservoir sampling (algorithm R, vectorised per batch)
        free = size - len(self.reservoir)
        if free > 0:
            self.reservoir = np.r_[self.reservoir, ok[:free]]
            ok = ok[free:]
            self._seen += min(free, k)
        if len(ok):
            idx = self._seen + np.arange(1, len(ok) + 1)
            j = (rng.random(len(ok)) * idx).astype(np.int64)
            hit = j < size
            self.reservoir[j[hit]] = ok[hit]
            self._seen += len(ok)

    @property
    def var(self) -> float:
        return self.m2 / (self.n - 1) if self.n > 1 else np.nan

    def to_dict(self) -> dict:
        q = np.quantile(self.reservoir, [0.05, 0.25, 0.5, 0.75, 0.95]) if len(self.reservoir) \
            else [np.nan] * 5
        return dict(n_rows=self.n_rows, n_missing=self.n_missing,
                    missing_share=self.n_missing / self.n_rows if self.n_rows else np.nan,
                    mean=self.mean if self.n else np.nan, var=self.var,
                    min=self.min if self.n else np.nan, max=self.max if self.n else np.nan,
                    q05=q[0], q25=q[1], median=q[2], q75=q[3], q95=q[4])


def _numeric_features(schema: DatasetSchema) -> list[str]:
    return [f.name for f in schema.features if is_numeric(f)]


def streaming_feature_stats(path, schema: DatasetSchema, *, batch_rows: int = 200_000,
                            reservoir: int = 10_000, random_state: int = 0,
                            progress: bool = False) -> pd.DataFrame:
    """Per (site, numeric feature) after harmonisation: rows, missing, mean, variance,
    min/max and quantiles from a ``reservoir``-row uniform sample. One pass, bounded memory."""
    rng = np.random.default_rng(random_state)
    feats = _numeric_features(schema)
    acc: dict[tuple[str, str], FeatureStats] = {}
    # only the numeric features are needed; each is harmonised on its own, so restricting
    # the schema to them leaves their values unchanged
    num_schema = _restrict(schema, feats)
    for batch in _arrow_batches(path, _schema_columns(num_schema, path), batch_rows, progress,
                                "feature statistics"):
        h = _harmonise_batch(batch, num_schema, feats, source=str(path))
        for k, site in enumerate(h.sites):
            part = h.X[h.codes == k]
            for j, f in enumerate(feats):
                st = acc.setdefault((site, f), FeatureStats())
                st.update(part[:, j], rng, reservoir)
    return pd.DataFrame([dict(site=s, feature=f, **st.to_dict()) for (s, f), st in acc.items()])
