"""Harmonisation of Arrow record batches: the streamed twin of :func:`~healthtransfer.data.harmonise.harmonise`.

Both call the same rules (:mod:`healthtransfer.data._rules`); a batch is split by site with
Arrow's dictionary encoding, and the sites that treat a column alike are harmonised together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import UserInputError
from ._reading import _arrow_batches, _schema_columns
from ._rules import COUNTS as _COUNTS
from ._rules import harmonise_column, renamed_away, rule_key
from .harmonise import HarmonisationReport, harmonise
from .schema import DatasetSchema

__all__ = ["streaming_harmonisation_report"]


@dataclass
class _Harmonised:
    """One batch after harmonisation: its sites (first-seen order), each row's index into
    ``sites``, per (site, column) integer counts in :func:`harmonise`'s record order, and the
    harmonised values of the ``want``-ed features (float64, rows in the batch's order)."""

    sites: list[str]
    codes: np.ndarray
    records: list[dict]
    X: np.ndarray | None = None


def _records(rep: HarmonisationReport) -> list[dict]:
    """Report rows as integer counts (shares times rows, rounded back to the counts)."""
    out = []
    for r in rep.rows.to_dict(orient="records"):
        n = int(r["n_rows"])
        out.append(dict(site=r["site"], column=r["column"], n_rows=n, absent=bool(r["absent"]),
                        miss_raw=int(round(r["missing_raw"] * n)), miss=int(round(r["missing_share"] * n)),
                        **{k: int(r[k]) for k in _COUNTS}))
    return out


def _harmonise_pandas(frame: pd.DataFrame, schema: DatasetSchema, want, source: str):
    """The reference path: :func:`harmonise` on the batch as a pandas frame."""
    table, rep = harmonise(frame, schema, source=source)
    dom = table[schema.domain].astype(str).to_numpy()
    sites = list(dict.fromkeys(rep.rows["site"])) if len(rep.rows) else list(dict.fromkeys(dom))
    codes = pd.Index(sites).get_indexer(dom)
    X = table[list(want)].to_numpy(float) if want else None
    return _Harmonised(sites, codes, _records(rep), X), table


def _harmonise_batch(batch, schema: DatasetSchema, want: list[str] | None = None,
                     source: str = "data") -> _Harmonised:
    """Harmonise one pyarrow record batch: the same counts and values as :func:`harmonise` on
    ``batch.to_pandas()``, from the same rules applied column by column to the sites that treat
    the column alike (:func:`harmonise` itself when the domain column is missing, empty or not text)."""
    fast = _harmonise_arrow(batch, schema, want, source)
    if fast is not None:
        return fast
    return _harmonise_pandas(batch.to_pandas(), schema, want, source)[0]


def _harmonise_arrow(batch, schema: DatasetSchema, want, source):
    """The rules of :mod:`._rules` on a record batch, by group of sites that treat a column
    alike; ``None`` when only :func:`harmonise` on the pandas frame gives the same result (a
    domain column missing, empty or not text; two columns renamed onto one name)."""
    import pyarrow as pa

    names = batch.schema.names
    if schema.domain not in names:
        return None
    dom = batch.column(schema.domain)
    if dom.null_count or not (pa.types.is_string(dom.type) or pa.types.is_large_string(dom.type)):
        return None
    enc = dom.dictionary_encode()  # dictionary in first-seen order, as groupby(sort=False)
    sites = [str(v) for v in enc.dictionary.to_pylist()]
    codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.intp)
    K, n = len(sites), batch.num_rows
    n_site = np.bincount(codes, minlength=K)
    rules = [schema.site(s) for s in sites]
    series: dict[str, pd.Series] = {}

    def column(c) -> pd.Series:
        if c not in series:  # the same conversion as batch.to_pandas() makes of the column
            arr = batch.column(c)
            if pa.types.is_floating(arr.type):  # the direct way for floats (nulls become NaN)
                series[c] = pd.Series(arr.to_numpy(zero_copy_only=False), name=c)
            else:
                series[c] = batch.select([c]).to_pandas()[c]
        return series[c]

    # per site, the raw column each harmonised name comes from (the renames of harmonise)
    src: list[dict[str, str]] = []
    for k in range(K):
        rename = rules[k].rename
        drop = renamed_away(names, rename, lambda c: bool(column(c)[codes == k].notna().any()),
                            where=f"{source}, site '{sites[k]}'")
        cols = [c for c in names if c not in drop]
        final = [rename.get(c, c) for c in cols]
        if len(set(final)) < len(final):
            return None
        src.append(dict(zip(final, cols)))
    want = list(want or [])
    pos = {f: j for j, f in enumerate(want)}
    X = np.full((n, len(want)), np.nan) if want else None
    recs: dict[tuple[int, str], dict] = {}
    for feat in schema.features:
        f = feat.name
        groups: dict[tuple, list[int]] = {}
        for k in range(K):
            c = src[k].get(f)
            if c is None:
                recs[(k, f)] = dict(site=sites[k], column=f, n_rows=int(n_site[k]), absent=True,
                                    miss_raw=int(n_site[k]), miss=int(n_site[k]), **{c_: 0 for c_ in _COUNTS})
                continue
            groups.setdefault((c, rule_key(rules[k], f)), []).append(k)
        for (c, _), ks in groups.items():
            rows = None
            if len(ks) < K:
                pick = np.zeros(K, bool)
                pick[ks] = True
                rows = np.flatnonzero(pick[codes])
            values = column(c) if rows is None else column(c).iloc[rows].reset_index(drop=True)
            cg = codes if rows is None else codes[rows]
            try:
                res = harmonise_column(values, feat, rules[ks[0]], where=f"{source}, column '{f}' at site '{sites[ks[0]]}'")
            except UserInputError:
                for k in ks:  # name the first site whose rows are at fault, as harmonise does
                    harmonise_column(values[cg == k].reset_index(drop=True), feat, rules[k],
                                     where=f"{source}, column '{f}' at site '{sites[k]}'")
                raise
            bins = {name: np.zeros(K, np.int64) if m is None else np.bincount(cg[m], minlength=K)
                    for name, m in res.masks().items()}
            miss_raw = np.bincount(cg[res.missing_raw], minlength=K)
            miss = np.bincount(cg[res.missing], minlength=K)
            if f in pos:
                v = res.values
                out = v.to_numpy() if v.dtype == np.float64 else v.to_numpy(float, na_value=np.nan)
                if rows is None:
                    X[:, pos[f]] = out
                else:
                    X[rows, pos[f]] = out
            for k in ks:
                recs[(k, f)] = dict(site=sites[k], column=f, n_rows=int(n_site[k]), absent=False,
                                    miss_raw=int(miss_raw[k]), miss=int(miss[k]),
                                    **{c_: int(bins[c_][k]) for c_ in _COUNTS})
    records = [recs[(k, feat.name)] for k in range(K) for feat in schema.features]
    return _Harmonised(sites, codes, records, X)


def streaming_harmonisation_report(path, schema: DatasetSchema, *, batch_rows: int = 200_000,
                                   progress: bool = False) -> HarmonisationReport:
    """The harmonisation report of the whole dataset, computed batch by batch.

    Equal to ``harmonise(pd.read_parquet(path), schema)[1]`` (same rows, same order of sites
    as first seen, same counts and shares) without holding more than one batch.
    """
    acc: dict[tuple[str, str], dict] = {}
    order: list[tuple[str, str]] = []
    for batch in _arrow_batches(path, _schema_columns(schema, path), batch_rows, progress,
                                "harmonisation report"):
        for r in _harmonise_batch(batch, schema, source=str(path)).records:
            key = (r["site"], r["column"])
            a = acc.get(key)
            if a is None:
                a = acc[key] = dict(site=r["site"], column=r["column"], n_rows=0, absent=True,
                                    miss_raw=0, miss=0, **{k: 0 for k in _COUNTS})
                order.append(key)
            a["n_rows"] += r["n_rows"]
            a["absent"] = a["absent"] and r["absent"]
            for k in ("miss_raw", "miss", *_COUNTS):
                a[k] += r[k]
    # keep the sites in first-seen order and the columns in schema order within a site
    sites = list(dict.fromkeys(k[0] for k in order))
    cols = schema.feature_names
    records = []
    for s in sites:
        for c in cols:
            a = acc.get((s, c))
            if a is None:
                continue
            n = a["n_rows"]
            records.append(dict(site=s, column=c, n_rows=n, absent=a["absent"],
                                missing_raw=a["miss_raw"] / n if n else 0.0,
                                **{k: a[k] for k in _COUNTS},
                                missing_share=a["miss"] / n if n else 0.0))
    rows = pd.DataFrame.from_records(records)
    if not rows.empty:
        rows = rows[["site", "column", "n_rows", "absent", "missing_raw", *_COUNTS, "missing_share"]]
    return HarmonisationReport(rows=rows, dataset=schema.name)
