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
from .schema import DatasetSchema

__all__ = ["HarmonisationReport", "harmonise"]

_COUNTS = ["n_converted", "n_sentinel", "n_out_of_range", "n_unmapped"]


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


def _as_text(values: pd.Series) -> pd.Series:
    """Render values as the text a code map is keyed by (1.0 -> '1')."""
    if isinstance(values.dtype, pd.StringDtype) and values.dtype.na_value is np.nan:
        # pandas' default text dtype: every value already is its text (fast path for large tables)
        return values.copy()

    def one(v):
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        return str(v)

    return values.map(one, na_action="ignore")


def _is_sentinel(values: pd.Series, sentinels: list) -> pd.Series:
    if not sentinels:
        return pd.Series(False, index=values.index)
    if isinstance(values.dtype, np.dtype) and values.dtype.kind in "iuf":
        # numbers: a value's text equals str(s) only if it also equals float(s), so the
        # numeric comparison alone gives the same mask without rendering every value as text
        hit = np.zeros(len(values), bool)
        for s in sentinels:
            try:
                f = float(s)
            except (TypeError, ValueError):
                continue
            hit |= (values == f).to_numpy(dtype=bool, na_value=False)
        return pd.Series(hit, index=values.index)
    text = _as_text(values)
    as_num = pd.to_numeric(values, errors="coerce")
    hit = pd.Series(False, index=values.index)
    for s in sentinels:
        hit |= text == str(s)
        try:
            hit |= as_num == float(s)
        except (TypeError, ValueError):
            pass
    return hit.fillna(False).astype(bool)


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
        # A raw column renamed onto a name the table already has: in a stacked multi-site
        # table the other sites' column is empty here, so drop it; otherwise refuse.
        for raw_name, new_name in rules.rename.items():
            if raw_name in part.columns and new_name in part.columns:
                if part[new_name].notna().any() and part[raw_name].notna().any():
                    raise UserInputError(
                        f"both '{raw_name}' and '{new_name}' hold values, and the schema renames the first to the second",
                        where=f"{source}, site '{site}'",
                        fix=f"drop one of the two columns, or remove the rename of '{raw_name}' for this site",
                    )
                part = part.drop(columns=[new_name] if part[raw_name].notna().any() else [raw_name])
        part = part.rename(columns=rules.rename)
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
            values = part[col]
            rec["missing_raw"] = float(values.isna().mean()) if len(values) else 0.0
            sent = _is_sentinel(values, rules.missing_values.get(col, []))
            rec["n_sentinel"] = int(sent.sum())
            values = values.mask(sent)
            if col in rules.code_maps:
                cmap = {str(k): v for k, v in rules.code_maps[col].items()}
                text = _as_text(values)
                mapped = text.map(cmap)
                unmapped = values.notna() & mapped.isna() & ~text.isin(cmap)
                # codes outside the map are kept only if they already are harmonised values
                if feat.categories is not None:
                    keep = unmapped & text.isin([str(c) for c in feat.categories])
                    mapped = mapped.where(~keep, values)
                    unmapped &= ~keep
                else:
                    mapped = mapped.where(~unmapped, values)
                    unmapped[:] = False
                rec["n_unmapped"] = int(unmapped.sum())
                values = mapped
            if feat.kind == "numeric" or (feat.kind == "binary" and feat.categories is None):
                num = pd.to_numeric(values, errors="coerce")
                bad = values.notna() & num.isna()
                if bad.any():
                    raise UserInputError(
                        f"{int(bad.sum())} of {len(values)} values are not numbers",
                        where=f"{source}, column '{col}' at site '{site}'",
                        fix=f"list '{col}' under `categorical` if it is a category, add the text "
                        "to the site's `missing_values` if it means 'not measured', or clean the export",
                    )
                if np.isinf(num).any():
                    raise UserInputError(
                        f"{int(np.isinf(num).sum())} values are infinite",
                        where=f"{source}, column '{col}' at site '{site}'",
                        fix="replace them with an empty field (missing) or the real measurement",
                    )
                if col in rules.units:
                    conv = rules.units[col]
                    rec["n_converted"] = int(num.notna().sum())
                    num = num * conv.factor + conv.offset
                if feat.range is not None:
                    lo, hi = feat.range
                    oor = num.notna() & ((num < lo) | (num > hi))
                    rec["n_out_of_range"] = int(oor.sum())
                    num = num.mask(oor)
                values = num.astype(float)
            elif feat.categories is not None and col not in rules.code_maps:
                text = _as_text(values)
                unknown = values.notna() & ~text.isin([str(c) for c in feat.categories])
                rec["n_unmapped"] = int(unknown.sum())
                values = values.mask(unknown)
            out[col] = values
            rec["missing_share"] = float(pd.isna(values).mean()) if len(values) else 0.0
            records.append(rec)
        pieces.append(out)
    table = pd.concat(pieces, axis=0)
    table = table.loc[raw.index] if table.index.is_unique and raw.index.is_unique else table
    report = pd.DataFrame.from_records(records)
    report = report[["site", "column", "n_rows", "absent", "missing_raw", *_COUNTS, "missing_share"]]
    return table, HarmonisationReport(rows=report, dataset=schema.name)
