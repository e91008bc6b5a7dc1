"""Drift of recent requests against the training reference, per feature (PSI).

Each served record is reduced, on arrival, to one bin number per feature (the training
deciles for numeric features, the categories for the others, plus a 'missing' bin; see
:mod:`healthtransfer.bundle._reference`). A rolling window of the last ``window`` records
keeps only those bin numbers and running counts, never the values. The population stability
index of each feature compares the window's bin shares with the training shares; the alarm
is raised when any feature's PSI exceeds ``threshold`` (default 0.25, the usual "major
shift" level) once at least ``min_count`` records are in the window (PSI over ~12 bins is noisy below ~100 records:
its expected value under no shift is about (bins - 1) / n).

Example
-------
>>> import numpy as np, pandas as pd
>>> from healthtransfer.bundle._reference import build_reference
>>> ref = build_reference(pd.DataFrame({"x": np.arange(100.0)}), [{"name": "x", "kind": "numeric"}])
>>> mon = DriftMonitor(ref, ["x"], min_count=10)
>>> mon.update(pd.DataFrame({"x": np.full(50, 500.0)}))
>>> mon.status()["alarm"]
True
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import deque

import numpy as np
import pandas as pd

from ..bundle._reference import bin_index, category_key, psi

__all__ = ["DriftMonitor"]

_FEW = 8  # up to this many records: bins in plain Python (numpy's per-call cost dominates)


class DriftMonitor:
    def __init__(self, reference: dict, features: list[str], *, window: int = 1000,
                 threshold: float = 0.25, min_count: int = 100):
        self.ref = {f: reference["features"][f] for f in features if f in reference["features"]}
        self.features = list(self.ref)
        self.window, self.threshold, self.min_count = int(window), float(threshold), int(min_count)
        self._rows: deque[np.ndarray] = deque()
        self._counts = {f: np.zeros(len(self.ref[f]["shares"]), dtype=np.int64)
                        for f in self.features}
        self._lock = threading.Lock()
        self.total = 0
        self._numeric_edges: dict | None = None
        self._cat_pos = {f: {c: i for i, c in enumerate(r["labels"])} for f, r in self.ref.items()
                         if r["type"] != "numeric" and "other" in r["labels"]}

    def update(self, frame: pd.DataFrame | list[dict]) -> None:
        """Add records (a DataFrame, or the service's validated dicts) to the window."""
        if len(frame) == 0 or not self.features:
            return
        bins = None
        if not isinstance(frame, pd.DataFrame) and len(frame) <= _FEW:
            bins = self._few_bins(frame)
        if bins is None:
            col = ((lambda f: frame[f].tolist()) if isinstance(frame, pd.DataFrame)
                   else (lambda f: [r.get(f) for r in frame]))
            bins = np.column_stack([bin_index(self.ref[f], col(f)) for f in self.features])
        bins = bins.astype(np.int16)[-self.window:]  # older rows would leave at once
        with self._lock:
            self._rows.extend(bins)
            gone = [self._rows.popleft() for _ in range(max(0, len(self._rows) - self.window))]
            for j, f in enumerate(self.features):  # counts updated per column, not per row
                c = self._counts[f]
                np.add.at(c, bins[:, j], 1)
                if gone:
                    np.subtract.at(c, np.asarray(gone)[:, j], 1)
            self.total += len(frame)

    def _few_bins(self, records: list[dict]) -> np.ndarray | None:
        """:func:`bin_index` of a few plain records (numbers, None, categories) without numpy
        per feature: ``bisect_left`` on the edges is ``searchsorted(side="left")``. None if a
        numeric value is not a plain number (the vector path then converts it)."""
        if self._numeric_edges is None:
            self._numeric_edges = {f: [float(e) for e in r["edges"]] for f, r in self.ref.items()
                                   if r["type"] == "numeric"}
        rows = []
        for rec in records:
            row = []
            for f in self.features:
                v = rec.get(f)
                edges = self._numeric_edges.get(f)
                if edges is None:
                    row.append(int(bin_index(self.ref[f], [v])[0]) if f not in self._cat_pos
                               else self._cat_bin(f, v))
                elif v is None or (type(v) is float and v != v):
                    row.append(len(self.ref[f]["labels"]) - 1)
                elif type(v) is float or type(v) is int:
                    row.append(bisect_left(edges, float(v)))
                else:
                    return None
            rows.append(row)
        return np.asarray(rows, dtype=int)

    def _cat_bin(self, f: str, v) -> int:
        pos = self._cat_pos[f]
        return pos.get(category_key(v), pos["other"])

    def status(self) -> dict:
        with self._lock:
            n = len(self._rows)
            counts = {f: c.copy() for f, c in self._counts.items()}
        feats = []
        for f in self.features:
            value = psi(self.ref[f]["shares"], counts[f]) if n else None
            feats.append({"name": f, "psi": value,
                          "alarm": bool(value is not None and n >= self.min_count
                                        and value > self.threshold)})
        feats.sort(key=lambda d: -(d["psi"] or 0.0))
        enough = n >= self.min_count
        alarm = enough and any(d["alarm"] for d in feats)
        return {
            "method": "population stability index over reference bins (training deciles / "
                      "categories, plus missing)",
            "window": n, "window_size": self.window, "min_count": self.min_count,
            "threshold": self.threshold, "records_seen": self.total,
            "status": "alarm" if alarm else ("ok" if enough else "insufficient data"),
            "alarm": bool(alarm),
            "max_psi": max((d["psi"] for d in feats if d["psi"] is not None), default=None),
            "features": feats,
        }
