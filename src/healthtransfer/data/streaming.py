"""Out-of-core statistics for Parquet datasets larger than memory.

Every function reads the dataset in record batches (pyarrow,
``batch_rows`` rows at a time), so memory is bounded by the batch size plus small per-site
accumulators, whatever the size of the data:

- :func:`iter_batches` - the batches as pandas frames;
- :func:`streaming_site_counts` - rows per site, reading the domain column only;
- :func:`streaming_harmonisation_report` - the :class:`~healthtransfer.data.harmonise.HarmonisationReport`
  that :func:`~healthtransfer.data.harmonise.harmonise` would give on the whole table (each
  batch is harmonised and the per-site, per-column counts are summed);
- :func:`streaming_feature_stats` - per site and feature: rows, missing, mean, variance
  (Chan et al. merge), min/max and a reservoir sample (for quantiles);
- :func:`streaming_shift_summary` - shift diagnostics of a target site against source sites:
  SMD and missingness per feature, a domain classifier trained by SGD ``partial_fit`` on the
  batches with a held-out AUROC, and the Gaussian-kernel MMD test on reservoir samples.

Batches are read file by file and row group by row group, one background thread at most two
batches ahead (pyarrow's dataset scanner reads far ahead of a slow consumer: gigabytes on a
large dataset). Numeric features stored as floats are harmonised with numpy on whole columns
(the same counts and values as :func:`~healthtransfer.data.harmonise.harmonise`, which handles
the other features and every batch that needs an error message).

Example
-------
>>> import pandas as pd, tempfile, os
>>> from healthtransfer.data.schema import DatasetSchema
>>> schema = DatasetSchema.model_validate({"name": "toy", "label": "y", "domain": "site",
...     "features": [{"name": "chol", "range": [50, 700]}]})
>>> path = os.path.join(tempfile.mkdtemp(), "t.parquet")
>>> pd.DataFrame({"site": ["a", "a", "b"], "chol": [0, 250, 900], "y": [0, 1, 1]}).to_parquet(path)
>>> rep = streaming_harmonisation_report(path, schema, batch_rows=2)
>>> rep.rows[["site", "n_rows", "n_out_of_range"]].values.tolist()
[['a', 2, 1], ['b', 1, 1]]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .harmonise import _COUNTS, HarmonisationReport, harmonise
from .schema import DatasetSchema

__all__ = [
    "iter_batches",
    "streaming_harmonisation_report",
    "streaming_feature_stats",
    "streaming_shift_summary",
    "streaming_site_counts",
    "FeatureStats",
]


def _dataset(path):
    import pyarrow.dataset as pads

    return pads.dataset(str(path), format="parquet")


def _file_batches(ds, columns: list[str] | None, batch_rows: int):
    """The dataset's batches, file by file and row group by row group (each row group cut into
    ``batch_rows``-row batches), conformed to the dataset's schema: a column a file lacks is
    all-null. Only what one batch needs is decoded at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = ds.schema if columns is None else pa.schema([ds.schema.field(c) for c in columns])
    for f in ds.files:
        with ds.filesystem.open_input_file(f) as fh:
            pf = pq.ParquetFile(fh, pre_buffer=False)
            have = set(pf.schema_arrow.names)
            cols = [c for c in target.names if c in have]
            for rg in range(pf.num_row_groups):
                for batch in pf.iter_batches(batch_size=int(batch_rows), row_groups=[rg], columns=cols,
                                             use_threads=True):
                    if batch.num_rows == 0:
                        continue
                    if batch.schema != target:
                        batch = pa.RecordBatch.from_arrays(
                            [_cast(batch, fl, f) if fl.name in have
                             else pa.nulls(batch.num_rows, fl.type) for fl in target], schema=target)
                    yield batch


def _cast(batch, field, path):
    """One column cast to the dataset's type; pyarrow's own message can quote a value, so the
    error names only the file, the column and the two types."""
    import pyarrow as pa

    col = batch.column(field.name)
    try:
        return col.cast(field.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        from ..errors import UserInputError

        raise UserInputError(f"column '{field.name}' holds {col.type} in {Path(str(path)).name} but {field.type} "
                             "in the other files", where=str(path),
                             fix="write the column with one type in every Parquet file") from None


def _prefetch(batches, depth: int = 2):
    """Iterate ``batches`` in a background thread, at most ``depth`` batches ahead: reading and
    decoding (which release the GIL) overlap with the caller's work, and memory stays bounded
    (pyarrow's own scanner reads ahead much further when the consumer is slower)."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in batches:
                if not put(item):
                    return
            put(done)
        except BaseException as exc:  # handed to the consumer
            put(_Failure(exc))

    t = threading.Thread(target=work, name="healthtransfer-parquet-reader", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
        t.join(timeout=10)


@dataclass
class _Failure:
    exc: BaseException


def _arrow_batches(path, columns=None, batch_rows: int = 65_536, progress: bool = False,
                   label: str | None = None):
    """The non-empty record batches of the dataset (pyarrow), optionally with a progress bar."""
    ds = _dataset(path)
    if columns is not None:
        names = set(ds.schema.names)
        columns = [c for c in dict.fromkeys(columns) if c in names]
    bar = None
    if progress:
        from rich.console import Console
        from rich.progress import Progress

        # on stderr, so that a command's output (e.g. JSON on stdout) stays clean
        bar = Progress(console=Console(stderr=True), transient=True)
        bar.start()
        task = bar.add_task(label or f"reading {Path(str(path)).name}", total=ds.count_rows())
    try:
        for batch in _prefetch(_file_batches(ds, columns, batch_rows)):
            if bar is not None:
                bar.advance(task, batch.num_rows)
            yield batch
    finally:
        if bar is not None:
            bar.stop()


def iter_batches(path, columns=None, batch_rows: int = 65_536, progress: bool = False):
    """Yield the Parquet dataset at ``path`` (a file or a directory of files) as pandas frames
    of at most ``batch_rows`` rows; ``columns`` restricts the columns read (missing names are
    ignored)."""
    for batch in _arrow_batches(path, columns, batch_rows, progress):
        yield batch.to_pandas()


def streaming_site_counts(path, domain: str, *, batch_rows: int = 1_000_000,
                          progress: bool = False) -> dict[str, int]:
    """Rows per value of the ``domain`` column (as text, in first-seen order; missing values
    under ``None``), reading only that column."""
    import pyarrow.compute as pc

    counts: dict = {}
    for batch in _arrow_batches(path, [domain], batch_rows, progress, "counting rows per site"):
        if domain not in batch.schema.names:
            return {}
        for item in pc.value_counts(batch.column(domain)).to_pylist():
            v = item["values"]
            key = None if v is None else str(v)
            counts[key] = counts.get(key, 0) + int(item["counts"])
    return counts


def _schema_columns(schema: DatasetSchema, path) -> list[str]:
    names = set(_dataset(path).schema.names)
    cols = [schema.domain, schema.label, *schema.feature_names]
    for site in schema.sites.values():
        cols.extend(site.rename)
    return [c for c in dict.fromkeys(cols) if c in names]


def _restrict(schema: DatasetSchema, features: list[str]) -> DatasetSchema:
    """``schema`` with only ``features`` (the site rules are kept as they are)."""
    keep = set(features)
    return schema.model_copy(update={"features": [f for f in schema.features if f.name in keep]})


# -- one batch, harmonised --------------------------------------------------------------------
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


def _sentinel_floats(values) -> list[float]:
    out = []
    for v in values:
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            pass  # text that is no number never equals a number's text either
    return out


def _harmonise_batch(batch, schema: DatasetSchema, want: list[str] | None = None,
                     source: str = "data") -> _Harmonised:
    """Harmonise one pyarrow record batch: the same counts and values as :func:`harmonise` on
    ``batch.to_pandas()``, computed with numpy on whole columns where that is exact (numeric
    features stored as floats) and with :func:`harmonise` for the rest (or for everything when
    the batch needs an error message: a missing or empty site, clashing renames, infinities)."""
    fast = _harmonise_arrow(batch, schema, want, source)
    if fast is not None:
        return fast
    return _harmonise_pandas(batch.to_pandas(), schema, want, source)[0]


def _harmonise_arrow(batch, schema: DatasetSchema, want, source):
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
    arrays: dict[str, np.ndarray] = {}
    notna: dict[str, np.ndarray] = {}

    def values(c):
        if c not in arrays:
            arrays[c] = batch.column(c).to_numpy(zero_copy_only=False)
        return arrays[c]

    def has_values(c, k):
        if c not in notna:
            notna[c] = batch.column(c).to_pandas().notna().to_numpy()
        return bool(notna[c][codes == k].any())

    # per site, the raw column each harmonised name comes from (harmonise's rename step)
    src: list[dict[str, str]] = []
    for k in range(K):
        cols = list(names)
        rename = rules[k].rename
        for raw_name, new_name in rename.items():
            if raw_name in cols and new_name in cols:
                keep_raw = has_values(raw_name, k)
                if keep_raw and has_values(new_name, k):
                    return None  # harmonise raises the error
                cols.remove(new_name if keep_raw else raw_name)
        final = [rename.get(c, c) for c in cols]
        if len(set(final)) < len(final):
            return None
        src.append(dict(zip(final, cols)))
    fast, slow = [], []
    for feat in schema.features:
        f = feat.name
        ok = (feat.kind == "numeric" or (feat.kind == "binary" and feat.categories is None)) \
            and not any(f in r.code_maps for r in rules)
        for k in range(K):
            c = src[k].get(f)
            if c is not None:
                t = batch.schema.field(c).type
                ok = ok and (pa.types.is_float32(t) or pa.types.is_float64(t))
        (fast if ok else slow).append(feat)
    for c in {src[k][feat.name] for feat in fast for k in range(K) if feat.name in src[k]}:
        if np.isinf(values(c)).any():
            return None  # harmonise raises the error
    want = list(want or [])
    pos = {f: j for j, f in enumerate(want)}
    X = np.full((n, len(want)), np.nan) if want else None
    recs: dict[tuple[int, str], dict] = {}
    for feat in fast:
        f = feat.name
        groups: dict[tuple, list[int]] = {}
        for k in range(K):
            c = src[k].get(f)
            if c is None:
                recs[(k, f)] = dict(site=sites[k], column=f, n_rows=int(n_site[k]), absent=True,
                                    miss_raw=int(n_site[k]), miss=int(n_site[k]), **{c_: 0 for c_ in _COUNTS})
                continue
            conv = rules[k].units.get(f)
            key = (c, tuple(_sentinel_floats(rules[k].missing_values.get(f, []))),
                   (conv.factor, conv.offset) if conv is not None else None)
            groups.setdefault(key, []).append(k)
        for (c, sentinels, conv), ks in groups.items():
            if len(ks) == K:
                rows, v, cg = None, values(c).copy(), codes
            else:
                pick = np.zeros(K, bool)
                pick[ks] = True
                rows = np.flatnonzero(pick[codes])
                v, cg = values(c)[rows], codes[rows]
            cnt = {c_: np.zeros(K, np.int64) for c_ in _COUNTS}
            miss_raw = np.bincount(cg[np.isnan(v)], minlength=K)
            if sentinels:
                hit = np.zeros(len(v), bool)
                for s_ in sentinels:
                    hit |= v == s_
                cnt["n_sentinel"] = np.bincount(cg[hit], minlength=K)
                v[hit] = np.nan
            if conv is not None:
                cnt["n_converted"] = np.bincount(cg[~np.isnan(v)], minlength=K)
                v = v * conv[0] + conv[1]
            if feat.range is not None:
                lo, hi = feat.range
                oor = ~np.isnan(v) & ((v < lo) | (v > hi))
                cnt["n_out_of_range"] = np.bincount(cg[oor], minlength=K)
                v[oor] = np.nan
            out = v.astype(np.float64)
            miss = np.bincount(cg[np.isnan(out)], minlength=K)
            if f in pos:
                if rows is None:
                    X[:, pos[f]] = out
                else:
                    X[rows, pos[f]] = out
            for k in ks:
                recs[(k, f)] = dict(site=sites[k], column=f, n_rows=int(n_site[k]), absent=False,
                                    miss_raw=int(miss_raw[k]), miss=int(miss[k]),
                                    **{c_: int(cnt[c_][k]) for c_ in _COUNTS})
    if slow:
        # the other features through harmonise, on the columns they (and the renames) need
        need = {schema.domain}
        for r in rules:
            for raw_name, new_name in r.rename.items():
                need.update({raw_name, new_name})
        for feat in slow:
            need.update(src[k][feat.name] for k in range(K) if feat.name in src[k])
        sub = batch.select([c for c in names if c in need]).to_pandas()
        h, table = _harmonise_pandas(sub, _restrict(schema, [f.name for f in slow]), None, source)
        index = {s_: k for k, s_ in enumerate(sites)}
        for r in h.records:
            recs[(index[r["site"]], r["column"])] = r
        for feat in slow:
            if feat.name in pos:
                X[:, pos[feat.name]] = table[feat.name].to_numpy(float)
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


# -- per-site feature statistics --------------------------------------------------------------
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
    return [f.name for f in schema.features if f.kind == "numeric"
            or (f.kind == "binary" and f.categories is None)]


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


# -- shift summary ----------------------------------------------------------------------------
def _auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(labels)) < 2:
        return np.nan
    return float(roc_auc_score(labels, scores))


def streaming_shift_summary(path, schema: DatasetSchema, sources: list[str], target: str, *,
                            batch_rows: int = 200_000, reservoir: int = 1000,
                            holdout_fraction: float = 0.2, max_holdout: int = 200_000,
                            n_permutations: int = 100, random_state: int = 0,
                            progress: bool = False) -> dict:
    """Shift of ``target`` against the pooled ``sources`` in two passes over the batches.

    Pass 1: per-feature moments and missingness per side (-> SMD, missingness difference) and
    a ``reservoir``-row sample of each side. Pass 2: a logistic domain classifier
    (``SGDClassifier.partial_fit``) on standardised, mean-imputed features plus missingness
    indicators; every row is held out with probability ``holdout_fraction``, a uniform sample of
    at most ``max_holdout`` held-out rows is kept, and the final classifier's AUROC on them is
    reported. The MMD permutation test
    (:func:`~healthtransfer.shift.mmd_test`) runs on the reservoir samples.

    Returns a dict: ``features`` (DataFrame: feature, mean/var/missing per side, smd,
    missing_diff), ``domain_classifier`` (auroc, n_train, n_holdout), ``mmd`` (the test's
    dict), ``n_source``, ``n_target``.
    """
    from sklearn.linear_model import SGDClassifier

    from ..shift import mmd_test

    rng = np.random.default_rng(random_state)
    feats = _numeric_features(schema)
    # Only the numeric features are used: harmonise (and read) just those. Each feature is
    # harmonised on its own, so their values are the same as with the whole schema.
    num_schema = _restrict(schema, feats)
    cols = _schema_columns(num_schema, path)
    sides = {"source": {f: FeatureStats() for f in feats},
             "target": {f: FeatureStats() for f in feats}}
    res_rows = {"source": [], "target": []}
    seen = {"source": 0, "target": 0}

    src_set = set(sources)

    def side_rows(batch):
        """The harmonised numeric features of the batch and its source and target rows."""
        h = _harmonise_batch(batch, num_schema, feats, source=str(path))
        is_src = np.array([s in src_set for s in h.sites] + [False])[h.codes]
        is_tgt = np.array([s == target for s in h.sites] + [False])[h.codes]
        return h.X, is_src, is_tgt

    def side_arrays(batch):
        """(source rows, target rows) of the harmonised numeric features, in table order."""
        X, is_src, is_tgt = side_rows(batch)
        return {"source": X[is_src], "target": X[is_tgt]}

    def reservoir_rows(side, X):
        for row in X:  # small: only rows that enter the reservoir are kept
            seen[side] += 1
            if len(res_rows[side]) < reservoir:
                res_rows[side].append(row.copy())  # a copy: a view would keep its batch alive
            else:
                j = rng.integers(seen[side])
                if j < reservoir:
                    res_rows[side][j] = row.copy()

    for batch in _arrow_batches(path, cols, batch_rows, progress, "shift summary: moments"):
        for side, X in side_arrays(batch).items():
            if len(X) == 0:
                continue
            for j, f in enumerate(feats):
                sides[side][f].update(X[:, j], rng, 0)
            # sample candidate rows first so the per-row loop stays small
            take = rng.random(len(X)) < min(1.0, 4.0 * reservoir / max(seen[side] + len(X), 1))
            seen[side] += int((~take).sum())
            reservoir_rows(side, X[take])
    mean = {s: np.array([sides[s][f].mean if sides[s][f].n else np.nan for f in feats]) for s in sides}
    var = {s: np.array([sides[s][f].var for f in feats]) for s in sides}
    miss = {s: np.array([sides[s][f].n_missing / max(sides[s][f].n_rows, 1) for f in feats]) for s in sides}
    pooled_sd = np.sqrt((var["source"] + var["target"]) / 2)
    smd = (mean["target"] - mean["source"]) / np.where(pooled_sd > 0, pooled_sd, np.nan)
    features = pd.DataFrame(dict(feature=feats, mean_source=mean["source"], mean_target=mean["target"],
                                 var_source=var["source"], var_target=var["target"],
                                 missing_source=miss["source"], missing_target=miss["target"],
                                 smd=smd, missing_diff=miss["target"] - miss["source"]))
    features = features.iloc[np.argsort(-np.nan_to_num(np.abs(smd), nan=-1), kind="stable")].reset_index(drop=True)

    # pass 2: domain classifier on batches
    n_s = sides["source"][feats[0]].n_rows if feats else 0
    n_t = sides["target"][feats[0]].n_rows if feats else 0
    fill = np.nan_to_num((n_s * np.nan_to_num(mean["source"]) + n_t * np.nan_to_num(mean["target"]))
                         / max(n_s + n_t, 1))
    sd = np.nan_to_num(np.sqrt((var["source"] * n_s + var["target"] * n_t) / max(n_s + n_t, 1)), nan=1.0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    clf = SGDClassifier(loss="log_loss", alpha=1e-5, average=True, random_state=random_state)
    # held-out rows: a uniform sample of at most max_holdout (the smallest random keys), kept
    # as rows and scored by the *final* classifier after the pass
    keep_Z, keep_d, keep_key = np.empty((0, 2 * len(feats))), np.empty(0, int), np.empty(0)
    hold_seen = 0
    n_train = 0
    p = len(feats)
    for batch in _arrow_batches(path, cols, batch_rows, progress, "shift summary: domain classifier"):
        # source rows, then target rows (each in table order), standardised after mean
        # imputation, then the missingness indicators; built in place to hold fewer copies
        Xb, is_src, is_tgt = side_rows(batch)
        idx_s, idx_t = np.flatnonzero(is_src), np.flatnonzero(is_tgt)
        d = np.r_[np.zeros(len(idx_s), int), np.ones(len(idx_t), int)]
        if len(d) == 0:
            continue
        Z = np.empty((len(d), 2 * p))
        Zx = Z[:, :p]
        np.take(Xb, np.r_[idx_s, idx_t], axis=0, out=Zx)
        del Xb
        M = np.isnan(Zx)
        np.copyto(Zx, np.broadcast_to(fill, Zx.shape), where=M)
        Zx -= fill
        Zx /= sd
        Z[:, p:] = M
        hold = rng.random(len(Z)) < holdout_fraction
        if (~hold).any():
            clf.partial_fit(Z[~hold], d[~hold], classes=np.array([0, 1]))
            n_train += int((~hold).sum())
        if hold.any():
            keys = np.r_[keep_key, rng.random(int(hold.sum()))]
            Zall, dall = np.vstack([keep_Z, Z[hold]]), np.r_[keep_d, d[hold]]
            if len(keys) > max_holdout:
                top = np.argpartition(keys, max_holdout - 1)[:max_holdout]
                Zall, dall, keys = Zall[top], dall[top], keys[top]
            keep_Z, keep_d, keep_key = Zall, dall, keys
            hold_seen += int(hold.sum())
    scores = clf.decision_function(keep_Z) if len(keep_d) and hasattr(clf, "coef_") else np.empty(0)
    dc = dict(auroc=_auroc(scores, keep_d) if len(scores) else np.nan, n_train=n_train,
              n_holdout=int(len(scores)), n_holdout_seen=int(hold_seen))
    Rs = np.asarray(res_rows["source"], float)
    Rt = np.asarray(res_rows["target"], float)
    mmd = {}
    if len(Rs) > 1 and len(Rt) > 1:
        fill_r = np.nanmean(np.vstack([Rs, Rt]), axis=0)
        fill_r = np.where(np.isfinite(fill_r), fill_r, 0.0)
        Zs = (np.where(np.isnan(Rs), fill_r, Rs) - fill) / sd
        Zt = (np.where(np.isnan(Rt), fill_r, Rt) - fill) / sd
        mmd = mmd_test(Zs, Zt, n_permutations=n_permutations, max_rows=reservoir,
                       random_state=random_state)
    return dict(features=features, domain_classifier=dc, mmd=mmd, n_source=int(n_s), n_target=int(n_t))
