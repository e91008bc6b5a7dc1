"""Out-of-core statistics for Parquet datasets larger than memory.

Every function reads the dataset in record batches (``pyarrow.dataset`` scanner,
``batch_rows`` rows at a time), so memory is bounded by the batch size plus small per-site
accumulators, whatever the size of the data:

- :func:`iter_batches` - the batches as pandas frames;
- :func:`streaming_harmonisation_report` - the :class:`~healthtransfer.data.harmonise.HarmonisationReport`
  that :func:`~healthtransfer.data.harmonise.harmonise` would give on the whole table (each
  batch is harmonised and the per-site, per-column counts are summed);
- :func:`streaming_feature_stats` - per site and feature: rows, missing, mean, variance
  (Chan et al. merge), min/max and a reservoir sample (for quantiles);
- :func:`streaming_shift_summary` - shift diagnostics of a target site against source sites:
  SMD and missingness per feature, a domain classifier trained by SGD ``partial_fit`` on the
  batches with a held-out AUROC, and the Gaussian-kernel MMD test on reservoir samples.

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
    "FeatureStats",
]


def _dataset(path):
    import pyarrow.dataset as pads

    return pads.dataset(str(path), format="parquet")


def iter_batches(path, columns=None, batch_rows: int = 65_536, progress: bool = False):
    """Yield the Parquet dataset at ``path`` (a file or a directory of files) as pandas frames
    of at most ``batch_rows`` rows; ``columns`` restricts the columns read (missing names are
    ignored)."""
    ds = _dataset(path)
    if columns is not None:
        names = set(ds.schema.names)
        columns = [c for c in dict.fromkeys(columns) if c in names]
    scanner = ds.scanner(columns=columns, batch_size=int(batch_rows), use_threads=True)
    total = ds.count_rows() if progress else None
    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress(transient=True)
        bar.start()
        task = bar.add_task(f"reading {Path(str(path)).name}", total=total)
    try:
        for batch in scanner.to_batches():
            if batch.num_rows == 0:
                continue
            if bar is not None:
                bar.advance(task, batch.num_rows)
            yield batch.to_pandas()
    finally:
        if bar is not None:
            bar.stop()


def _schema_columns(schema: DatasetSchema, path) -> list[str]:
    names = set(_dataset(path).schema.names)
    cols = {schema.domain, schema.label, *schema.feature_names}
    for site in schema.sites.values():
        cols.update(site.rename)
    return [c for c in cols if c in names]


def streaming_harmonisation_report(path, schema: DatasetSchema, *, batch_rows: int = 200_000,
                                   progress: bool = False) -> HarmonisationReport:
    """The harmonisation report of the whole dataset, computed batch by batch.

    Equal to ``harmonise(pd.read_parquet(path), schema)[1]`` (same rows, same order of sites
    as first seen, same counts and shares) without holding more than one batch.
    """
    acc: dict[tuple[str, str], dict] = {}
    order: list[tuple[str, str]] = []
    for batch in iter_batches(path, _schema_columns(schema, path), batch_rows, progress):
        _, rep = harmonise(batch, schema, source=str(path))
        for r in rep.rows.to_dict(orient="records"):
            key = (r["site"], r["column"])
            n = int(r["n_rows"])
            a = acc.get(key)
            if a is None:
                a = acc[key] = dict(site=r["site"], column=r["column"], n_rows=0, absent=True,
                                    miss_raw=0, miss=0, **{k: 0 for k in _COUNTS})
                order.append(key)
            a["n_rows"] += n
            a["absent"] = a["absent"] and bool(r["absent"])
            a["miss_raw"] += int(round(r["missing_raw"] * n))
            a["miss"] += int(round(r["missing_share"] * n))
            for k in _COUNTS:
                a[k] += int(r[k])
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
    for batch in iter_batches(path, _schema_columns(schema, path), batch_rows, progress):
        table, _ = harmonise(batch, schema, source=str(path))
        for site, part in table.groupby(schema.domain, sort=False):
            for f in feats:
                st = acc.setdefault((str(site), f), FeatureStats())
                st.update(part[f].to_numpy(float), rng, reservoir)
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
    indicators; every row is held out with probability ``holdout_fraction`` and the held-out
    AUROC is computed on at most ``max_holdout`` of them (reservoir). The MMD permutation test
    (:func:`~healthtransfer.shift.mmd_test`) runs on the reservoir samples.

    Returns a dict: ``features`` (DataFrame: feature, mean/var/missing per side, smd,
    missing_diff), ``domain_classifier`` (auroc, n_train, n_holdout), ``mmd`` (the test's
    dict), ``n_source``, ``n_target``.
    """
    from sklearn.linear_model import SGDClassifier

    from ..shift import mmd_test

    rng = np.random.default_rng(random_state)
    feats = _numeric_features(schema)
    cols = _schema_columns(schema, path)
    sides = {"source": {f: FeatureStats() for f in feats},
             "target": {f: FeatureStats() for f in feats}}
    res_rows = {"source": [], "target": []}
    seen = {"source": 0, "target": 0}

    def side_frames(table):
        dom = table[schema.domain].astype(str)
        return {"source": table[dom.isin(sources)], "target": table[dom == target]}

    def reservoir_rows(side, X):
        nonlocal res_rows
        for row in X:  # small: only rows that enter the reservoir are kept
            seen[side] += 1
            if len(res_rows[side]) < reservoir:
                res_rows[side].append(row)
            else:
                j = rng.integers(seen[side])
                if j < reservoir:
                    res_rows[side][j] = row

    for batch in iter_batches(path, cols, batch_rows, progress):
        table, _ = harmonise(batch, schema, source=str(path))
        for side, part in side_frames(table).items():
            if part.empty:
                continue
            X = part[feats].to_numpy(float)
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
    hold_scores, hold_labels, hold_seen = [], [], 0
    n_train = 0
    for batch in iter_batches(path, cols, batch_rows, progress):
        table, _ = harmonise(batch, schema, source=str(path))
        parts = side_frames(table)
        X = np.vstack([parts["source"][feats].to_numpy(float), parts["target"][feats].to_numpy(float)])
        d = np.r_[np.zeros(len(parts["source"]), int), np.ones(len(parts["target"]), int)]
        if len(X) == 0:
            continue
        M = np.isnan(X)
        Z = np.hstack([(np.where(M, fill, X) - fill) / sd, M.astype(float)])
        hold = rng.random(len(Z)) < holdout_fraction
        if (~hold).any():
            clf.partial_fit(Z[~hold], d[~hold], classes=np.array([0, 1]))
            n_train += int((~hold).sum())
        if hold.any() and hasattr(clf, "coef_"):
            s = clf.decision_function(Z[hold])
            lab = d[hold]
            room = max_holdout - sum(len(a) for a in hold_scores)
            hold_scores.append(s[:room])
            hold_labels.append(lab[:room])
            hold_seen += len(s)
    scores = np.concatenate(hold_scores) if hold_scores else np.empty(0)
    labels = np.concatenate(hold_labels) if hold_labels else np.empty(0)
    dc = dict(auroc=_auroc(scores, labels), n_train=n_train, n_holdout=int(len(scores)))
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
