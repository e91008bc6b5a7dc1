"""Shift of a target site against source sites, streamed over a Parquet dataset's batches.

SMD and missingness per feature, a domain classifier trained by SGD ``partial_fit`` with a
held-out AUROC, and the Gaussian-kernel MMD test on reservoir samples. Re-exported by
:mod:`healthtransfer.data.streaming`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._batches import _harmonise_batch
from ._reading import _arrow_batches, _restrict, _schema_columns
from ._stream_stats import FeatureStats, _numeric_features
from .schema import DatasetSchema

__all__ = ["streaming_shift_summary"]


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
    from sklearn.metrics import roc_auc_score

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
    dc = dict(auroc=float(roc_auc_score(keep_d, scores)) if len(np.unique(keep_d)) == 2 else np.nan, n_train=n_train,
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
