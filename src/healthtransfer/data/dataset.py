"""The harmonised dataset every later stage works on.

Example
-------
>>> from healthtransfer.data import load_dataset
>>> ds = load_dataset("uci_heart")
>>> ds.domains
['cleveland', 'hungarian', 'switzerland', 'va']
>>> int(ds.frame[ds.label].sum())
509
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .harmonise import HarmonisationReport
from .schema import DatasetSchema

__all__ = ["Dataset", "fingerprint"]


def fingerprint(frame: pd.DataFrame) -> str:
    """sha256 of a table's content (column names, dtypes and values), order-sensitive."""
    h = hashlib.sha256()
    h.update("|".join(map(str, frame.columns)).encode())
    h.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return h.hexdigest()


@dataclass
class Dataset:
    """One harmonised table and what each column means.

    ``frame`` holds the features, the domain column, the label (for binary labels 0/1 with 1
    the positive class), and, when present, the group and reference-score columns.
    """

    name: str
    frame: pd.DataFrame
    label: str
    domain: str
    features: list[str]
    categorical: list[str]
    report: HarmonisationReport
    schema: DatasetSchema | None = None
    group: str | None = None
    reference_score: str | None = None
    class_names: list[Any] = field(default_factory=list)
    license: str = ""
    citation: str = ""
    extra: dict = field(default_factory=dict)
    subgroups: list[str] | None = None  # columns for subgroup metrics; None = sex/age if present

    def subgroup_columns(self) -> list[str]:
        """Columns whose levels (or bands, for numeric ones) define target subgroups."""
        if self.subgroups is not None:
            cols = list(self.subgroups)
        else:
            cols = [c for c in ("sex", "male", "gender", "age") if c in self.frame.columns]
        missing = [c for c in cols if c not in self.frame.columns]
        if missing:
            from ..errors import UserInputError

            raise UserInputError(f"subgroup columns {missing} are not in the data", where=f"dataset '{self.name}'",
                                 fix=f"choose `subgroups` among {list(self.frame.columns)[:20]}")
        return cols

    @property
    def domains(self) -> list[str]:
        return sorted(self.frame[self.domain].astype(str).unique().tolist())

    @property
    def n_classes(self) -> int:
        return int(self.frame[self.label].nunique())

    @property
    def numeric(self) -> list[str]:
        return [f for f in self.features if f not in self.categorical]

    def fingerprint(self) -> str:
        return fingerprint(self.frame)

    def site(self, name: str) -> pd.DataFrame:
        return self.frame[self.frame[self.domain].astype(str) == str(name)]

    def counts(self) -> pd.DataFrame:
        """Rows and label counts per domain (label classes as columns)."""
        tab = pd.crosstab(self.frame[self.domain], self.frame[self.label])
        tab.insert(0, "n", tab.sum(axis=1))
        return tab

    def with_features(self, features: list[str]) -> "Dataset":
        """The same data restricted to ``features`` (order kept as given)."""
        missing = [f for f in features if f not in self.frame.columns]
        if missing:
            from ..errors import UserInputError

            raise UserInputError(
                f"features {missing} are not in the dataset",
                where=f"dataset '{self.name}'",
                fix=f"choose among {self.features}",
            )
        out = Dataset(**{**self.__dict__})
        out.features = list(features)
        out.categorical = [c for c in self.categorical if c in features]
        return out

    def summary(self) -> dict:
        return {
            "name": self.name,
            "rows": int(len(self.frame)),
            "domains": {d: int(n) for d, n in self.frame[self.domain].value_counts().sort_index().items()},
            "features": self.features,
            "categorical": self.categorical,
            "label": self.label,
            "classes": [str(c) for c in self.class_names],
            "positive_rate": (
                {str(d): float(g[self.label].mean()) for d, g in self.frame.groupby(self.domain)}
                if self.n_classes == 2 and np.issubdtype(self.frame[self.label].dtype, np.number)
                else None
            ),
            "fingerprint": self.fingerprint(),
        }
