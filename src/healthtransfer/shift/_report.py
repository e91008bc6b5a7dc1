"""The :class:`ShiftReport` returned by :func:`~healthtransfer.shift.diagnose`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["ShiftReport", "jsonable"]


def jsonable(x: Any):
    """Plain JSON types only: numpy scalars/arrays converted, NaN/inf as None."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, pd.DataFrame):
        return jsonable(x.to_dict(orient="records"))
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if np.isfinite(x) else None
    if isinstance(x, Path):
        return str(x)
    if x is None or isinstance(x, (str, int)):
        return x
    return str(x)


@dataclass
class ShiftReport:
    """Everything :func:`diagnose` measured for one target and its sources.

    - ``features``: one row per (source, feature) — effect size (``smd`` or ``cramers_v``,
      ``effect`` = |SMD| or V), test, ``p_value``, ``q_value`` (BH within the pair),
      missingness at each site and ``never_measured``;
    - ``never_measured``: site -> features with no observed value in the rows used;
    - ``domain_classifier``: sources pooled vs target — CV AUROC, permutation p-value, and
      ``auroc_shared_features`` (only features measured at both sides) when that differs;
    - ``mmd``: Gaussian-kernel MMD^2 and its permutation p-value;
    - ``label_shift``: source prior, EM estimate of the target prior with a bootstrap CI,
      and BBSE beside it (never reads target labels);
    - ``importance``: effective sample size of clipped domain-classifier importance weights;
    - ``summary``: plain-language sentences; ``thresholds`` the cut-offs they use.
    """

    dataset: str
    sources: list[str]
    target: str
    n_source: dict[str, int]
    n_target: int
    features: pd.DataFrame
    never_measured: dict[str, list[str]]
    domain_classifier: dict
    mmd: dict
    label_shift: dict
    importance: dict
    class_names: list = field(default_factory=list)
    summary: list[str] = field(default_factory=list)
    thresholds: dict = field(default_factory=dict)
    runtime_s: float = float("nan")
    settings: dict = field(default_factory=dict)

    @property
    def summary_text(self) -> str:
        return " ".join(self.summary)

    def top_features(self, n: int = 15) -> pd.DataFrame:
        """The ``n`` rows with the largest effect (features never measured at a site first)."""
        f = self.features
        if f.empty:
            return f
        key = np.where(f["never_measured"] != "", np.inf, f["effect"].fillna(-1).to_numpy())
        return f.iloc[np.argsort(-key, kind="stable")].head(n).reset_index(drop=True)

    def to_dict(self) -> dict:
        return jsonable({
            "dataset": self.dataset,
            "sources": list(self.sources),
            "target": self.target,
            "n_source": self.n_source,
            "n_target": self.n_target,
            "summary": self.summary,
            "domain_classifier": self.domain_classifier,
            "mmd": self.mmd,
            "label_shift": self.label_shift,
            "importance": self.importance,
            "never_measured": self.never_measured,
            "features": self.features,
            "class_names": [str(c) for c in self.class_names],
            "thresholds": self.thresholds,
            "settings": self.settings,
            "runtime_s": self.runtime_s,
        })

    def sections(self):
        """The report section(s): a list with one ``Section`` titled "Shift diagnostics"."""
        from ._summary import sections

        return sections(self)

    def to_text(self) -> str:
        """A terminal rendering (what ``healthtransfer diagnose`` prints)."""
        from ._summary import to_text

        return to_text(self)
