"""The per-site harmonisation rules, written once: renames, sentinels, code maps, units, ranges.

:func:`~healthtransfer.data.harmonise.harmonise` (a pandas frame in memory) and the streamed path
(:mod:`healthtransfer.data.streaming`, Arrow record batches) both call these two functions, so a
streamed report cannot drift from the in-memory one:

- :func:`renamed_away` - which raw columns a site's renames drop (or the error when both the raw
  and the harmonised column hold values);
- :func:`harmonise_column` - one column of one site (or of several sites that share the same
  rules) through the rules, vectorised; it returns the harmonised values and one boolean mask per
  report count, so a caller may sum the masks (one site) or bincount them by site (a batch).

Example
-------
>>> import pandas as pd
>>> from healthtransfer.data.schema import FeatureSpec, SiteSpec
>>> feat = FeatureSpec(name="chol", range=(50, 700))
>>> rules = SiteSpec(missing_values={"chol": [0]})
>>> res = harmonise_column(pd.Series([0, 250, 900]), feat, rules, where="toy")
>>> res.values.tolist(), res.counts()["n_sentinel"], res.counts()["n_out_of_range"]
([nan, 250.0, nan], 1, 1)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import UserInputError
from .schema import FeatureSpec, SiteSpec

__all__ = ["COUNTS", "ColumnResult", "harmonise_column", "is_numeric", "renamed_away", "rule_key"]

COUNTS = ["n_converted", "n_sentinel", "n_out_of_range", "n_unmapped"]


def is_numeric(feat: FeatureSpec) -> bool:
    """Whether the feature's values are numbers after harmonisation (binary without categories counts)."""
    return feat.kind == "numeric" or (feat.kind == "binary" and feat.categories is None)


def rule_key(rules: SiteSpec, column: str) -> str:
    """A key equal for two sites exactly when they treat ``column`` alike (to harmonise them together)."""
    return repr((rules.missing_values.get(column), rules.units.get(column), rules.code_maps.get(column)))


def renamed_away(columns: Iterable[str], rename: dict[str, str], has_values: Callable[[str], bool], *,
                 where: str) -> list[str]:
    """The columns to drop before applying ``rename`` at one site.

    A raw column renamed onto a name the table already has: in a stacked multi-site table the
    other sites' column is empty here, so the empty one is dropped; if both hold values, refuse.
    """
    cols = list(columns)
    drop = []
    for raw_name, new_name in rename.items():
        if raw_name in cols and new_name in cols:
            keep_raw = has_values(raw_name)
            if keep_raw and has_values(new_name):
                raise UserInputError(
                    f"both '{raw_name}' and '{new_name}' hold values, and the schema renames the first to the second",
                    where=where,
                    fix=f"drop one of the two columns, or remove the rename of '{raw_name}' for this site",
                )
            gone = new_name if keep_raw else raw_name
            cols.remove(gone)
            drop.append(gone)
    return drop


@dataclass
class ColumnResult:
    """One harmonised column and, per row, what the rules did to it (boolean masks)."""

    values: pd.Series
    missing_raw: np.ndarray
    n_converted: np.ndarray | None = None
    n_sentinel: np.ndarray | None = None
    n_out_of_range: np.ndarray | None = None
    n_unmapped: np.ndarray | None = None

    @property
    def missing(self) -> np.ndarray:
        return pd.isna(self.values).to_numpy(dtype=bool)

    def masks(self) -> dict[str, np.ndarray | None]:
        """The report's counts as row masks (``None``: the rule did not apply, count 0)."""
        return {k: getattr(self, k) for k in COUNTS}

    def counts(self) -> dict[str, int]:
        return {k: 0 if m is None else int(m.sum()) for k, m in self.masks().items()}


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


def _is_sentinel(values: pd.Series, sentinels: list) -> np.ndarray:
    if not sentinels:
        return np.zeros(len(values), bool)
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
        return hit
    text = _as_text(values)
    as_num = pd.to_numeric(values, errors="coerce")
    hit = pd.Series(False, index=values.index)
    for s in sentinels:
        hit |= text == str(s)
        try:
            hit |= as_num == float(s)
        except (TypeError, ValueError):
            pass
    return hit.fillna(False).to_numpy(dtype=bool)


def harmonise_column(values: pd.Series, feat: FeatureSpec, rules: SiteSpec, *, where: str) -> ColumnResult:
    """Apply one site's rules for ``feat`` to its raw ``values`` (already renamed).

    Order: sentinels set missing, codes mapped, text checked and numbers parsed (numeric
    features), units converted, values outside the range set missing; a categorical feature
    with categories and no code map loses values outside them. Raises :class:`UserInputError`
    (naming ``where``, never a value) for text in a numeric column or infinite values.
    """
    col = feat.name
    res = ColumnResult(values=values, missing_raw=values.isna().to_numpy(dtype=bool))
    sent = _is_sentinel(values, rules.missing_values.get(col, []))
    res.n_sentinel = sent
    if sent.any():
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
        res.n_unmapped = unmapped.to_numpy(dtype=bool)
        values = mapped
    if is_numeric(feat):
        num = pd.to_numeric(values, errors="coerce")
        if not (isinstance(values.dtype, np.dtype) and values.dtype.kind in "iuf"):  # text can hide here
            bad = values.notna() & num.isna()
            if bad.any():
                raise UserInputError(
                    f"{int(bad.sum())} of {len(values)} values are not numbers",
                    where=where,
                    fix=f"list '{col}' under `categorical` if it is a category, add the text "
                    "to the site's `missing_values` if it means 'not measured', or clean the export",
                )
        # numpy from here (a float column keeps its width until the end, as pandas would)
        if isinstance(num.dtype, np.dtype) and num.dtype.kind == "f":
            x = num.to_numpy(copy=True)
        else:
            x = num.to_numpy(dtype=float, na_value=np.nan)
        if np.isinf(x).any():
            raise UserInputError(
                f"{int(np.isinf(x).sum())} values are infinite",
                where=where,
                fix="replace them with an empty field (missing) or the real measurement",
            )
        if col in rules.units:
            conv = rules.units[col]
            res.n_converted = ~np.isnan(x)
            x = x * conv.factor + conv.offset
        if feat.range is not None:
            lo, hi = feat.range
            oor = ~np.isnan(x) & ((x < lo) | (x > hi))
            res.n_out_of_range = oor
            x[oor] = np.nan
        values = pd.Series(x.astype(float, copy=False), index=num.index, name=num.name)
    elif feat.categories is not None and col not in rules.code_maps:
        text = _as_text(values)
        unknown = values.notna() & ~text.isin([str(c) for c in feat.categories])
        res.n_unmapped = unknown.to_numpy(dtype=bool)
        values = values.mask(unknown)
    res.values = values
    return res
