"""Apply a :class:`~healthtransfer.data.schema.DatasetSchema` to raw multi-site rows.

The result is one harmonised table (the schema's feature names, numeric dtypes for numeric
features, NaN for missing) plus a :class:`HarmonisationReport` that counts, per site and
column, what was cleaned and why. Counts only: the report never holds patient values.

Example
-------
>>> import pandas as pd
>>> from healthtransfer.data.schema import DatasetSchema
>>> schema = DatasetSchema.model_validate({
...     "name": "toy", "label": "y", "domain": "site",
...     "features": [{"name": "chol", "range": [50, 700]}],
...     "sites": {"*": {"missing_values": {"chol": [0]}}}})
>>> raw = pd.DataFrame({"site": ["a", "a", "b"], "chol": [0, 250, 900], "y": [0, 1, 1]})
>>> table, report = harmonise(raw, schema)
>>> table["chol"].isna().tolist()
[True, False, True]
>>> int(report.rows.set_index(["site", "column"]).loc[("b", "chol"), "n_out_of_range"])
1
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import UserInputError
from ._rules import COUNTS as _COUNTS
from ._rules import harmonise_column, renamed_away
from .schema import DatasetSchema

__all__ = ["HarmonisationReport", "harmonise"]

@dataclass
class HarmonisationReport:
    """Per (site, column): rows, missing before/after, and what harmonisation changed.

    ``rows`` columns: site, column, n_rows, absent, missing_raw, n_converted, n_sentinel,
    n_out_of_range, n_unmapped, missing_share.
    """

    rows: pd.DataFrame
    dataset: str = ""

    def to_dict(self) -> dict:
        return {"dataset": self.dataset, "rows": self.rows.to_dict(orient="records")}

    def absent(self) -> dict[str, list[str]]:
        """Columns missing entirely at each site (absent from the export or all empty)."""
        out: dict[str, list[str]] = {}
        full = self.rows[self.rows["absent"] | (self.rows["missing_share"] >= 1.0)]
        for site, grp in full.groupby("site", sort=False):
            out[str(site)] = grp["column"].tolist()
        return out

    def cleaned(self) -> pd.DataFrame:
        """Only the (site, column) pairs where something was converted or set missing."""
        mask = self.rows[_COUNTS].sum(axis=1) > 0
        return self.rows[mask]

    def summary_lines(self) -> list[str]:
        """Plain sentences for the report and the CLI."""
        lines = []
        for site, grp in self.rows.groupby("site", sort=False):
            n = int(grp["n_rows"].iloc[0])
            parts = []
            for col, label in [
                ("n_sentinel", "sentinel values set missing"),
                ("n_out_of_range", "out-of-range values set missing"),
                ("n_unmapped", "unmapped codes set missing"),
                ("n_converted", "values converted to the harmonised unit"),
            ]:
                k = int(grp[col].sum())
                if k:
                    parts.append(f"{k} {label}")
            absent = grp.loc[grp["absent"], "column"].tolist()
            if absent:
                parts.append(f"absent columns: {', '.join(absent)}")
            empty = grp.loc[~grp["absent"] & (grp["missing_share"] >= 1.0), "column"].tolist()
            if empty:
                parts.append(f"never measured: {', '.join(empty)}")
            lines.append(f"{site} ({n} rows): " + ("; ".join(parts) if parts else "nothing to clean"))
        return lines


def harmonise(raw: pd.DataFrame, schema: DatasetSchema, *, source: str = "data") -> tuple[pd.DataFrame, HarmonisationReport]:
    """Harmonise ``raw`` (one row per unit, the schema's domain column naming the site).

    Columns that are not features (label, group, reference score, ids) pass through
    unchanged. Raises :class:`UserInputError` for text in a numeric column or infinite
    values, naming the site, the column and the count, never the values.
    """
    if schema.domain not in raw.columns:
        raise UserInputError(
            f"the domain column '{schema.domain}' is missing",
            where=source,
            fix=f"add a column '{schema.domain}' naming each row's site, or set `domain` in the study",
        )
    pieces, records = [], []
    for site, part in raw.groupby(schema.domain, sort=False, dropna=False):
        if pd.isna(site):
            raise UserInputError(
                f"{len(part)} rows have no value in the domain column '{schema.domain}'",
                where=source,
                fix="fill in the site of every row or drop those rows",
            )
        site = str(site)
        rules = schema.site(site)
        drop = renamed_away(part.columns, rules.rename, lambda c: bool(part[c].notna().any()),
                            where=f"{source}, site '{site}'")
        part = part.drop(columns=drop).rename(columns=rules.rename)
        out = part.copy()
        for feat in schema.features:
            col = feat.name
            rec = dict(site=site, column=col, n_rows=len(part), absent=False, missing_raw=0.0,
                       **{k: 0 for k in _COUNTS})
            if col not in part.columns:
                out[col] = np.nan
                rec.update(absent=True, missing_raw=1.0, missing_share=1.0)
                records.append(rec)
                continue
            res = harmonise_column(part[col], feat, rules, where=f"{source}, column '{col}' at site '{site}'")
            out[col] = res.values
            rec.update(res.counts())
            rec["missing_raw"] = float(res.missing_raw.mean()) if len(part) else 0.0
            rec["missing_share"] = float(res.missing.mean()) if len(part) else 0.0
            records.append(rec)
        pieces.append(out)
    table = pd.concat(pieces, axis=0)
    table = table.loc[raw.index] if table.index.is_unique and raw.index.is_unique else table
    report = pd.DataFrame.from_records(records)
    report = report[["site", "column", "n_rows", "absent", "missing_raw", *_COUNTS, "missing_share"]]
    return table, HarmonisationReport(rows=report, dataset=schema.name)
