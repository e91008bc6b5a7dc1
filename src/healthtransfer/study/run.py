"""Run a transfer study: for each target, seed and label budget, fit every method on the rows
the protocol allows and score it on the held-out target test rows.

The unit of work is one (target, seed): it splits the target into pool and test, fits the
preprocessing on source + pool rows, and runs every method at every budget. Units are
independent, so they run through joblib (``n_jobs``, or another joblib backend).

Example
-------
>>> from healthtransfer.study import Study
>>> from healthtransfer.study.run import run_study
>>> study = Study.model_validate({"study": {"name": "demo"}, "data": {"dataset": "uci_heart"},
...     "transfer": {"sources": ["cleveland"], "target": "va", "seeds": 2,
...                  "labeled_target": [0, 10], "methods": ["source_lr", "target_lr"]}})
>>> result = run_study(study, progress=False)
>>> sorted({r["method"] for r in result.records})
['selected', 'source_lr', 'target_lr']
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..data import Dataset, load_dataset, load_table
from ..data.preprocess import fit_preprocessor
from ..data.splits import label_budget, target_split
from ..errors import UserInputError
from ..evaluation.calibration import logit
from ..evaluation.metrics import fast_bootstrap_ci, score
from ..methods import get_method
from ..methods._registry import resolve_method
from ._progress import StepProgress
from .config import DEFAULT_METHODS, REFERENCE_METHODS, Study

__all__ = ["StudyResult", "load_study_data", "run_study", "summarise", "check_study_data"]

log = logging.getLogger(__name__)


@dataclass
class StudyResult:
    """Everything a run produced: per-record metrics, skips, and the data it ran on; after
    :func:`~healthtransfer.study.final.finalise`, the final model per target as well."""

    study: Study
    dataset: Dataset
    records: list[dict[str, Any]]
    skipped: list[dict[str, Any]] = field(default_factory=list)
    predictions: list[dict[str, Any]] = field(default_factory=list)
    selections: list[dict[str, Any]] = field(default_factory=list)
    shift: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    # each unit's selected model at the largest budget, as evaluated (see run_unit)
    shipped: list[dict[str, Any]] = field(default_factory=list, repr=False)
    # filled once by healthtransfer.study.final.finalise; the writers only read them
    selection_summary: list[dict[str, Any]] = field(default_factory=list)
    subgroups: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    finals: dict[str, Any] = field(default_factory=dict)
    deployment: dict[str, Any] = field(default_factory=dict)
    outcome: Any = None  # study.outcome.Outcome for survival / regression studies, else None

    @property
    def metric_names(self) -> list[str]:
        keys = ("auroc", "auprc", "brier", "ece", "accuracy", "macro_f1", "log_loss",
                "c_harrell", "c_uno", "ibs", "mae", "rmse", "r2")
        return [k for k in keys if self.records and k in self.records[0]]

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame.from_records(self.records)

    def summary(self) -> list[dict[str, Any]]:
        return summarise(self.records, self.metric_names)


def load_study_data(study: Study, data_dir=None) -> Dataset:
    """The harmonised dataset a study names, restricted to its features."""
    d = study.data
    if d.path is not None and d.task != "classification":
        from .outcome import file_outcome, load_outcome_table  # survival / regression file

        outcome = file_outcome(study)
        if outcome is not None:
            return load_outcome_table(study, outcome)
    if d.dataset is not None:
        ds = load_dataset(d.dataset, data_dir=data_dir or study.resolve(d.data_dir), **d.options)
        if d.features:
            ds = ds.with_features(d.features)
        if d.categorical is not None:
            ds.categorical = [c for c in d.categorical if c in ds.features]
        if d.subgroups:
            ds.subgroups = list(d.subgroups)
        return ds
    ds = load_table(
        study.resolve(d.path), domain=d.domain, label=d.label, positive=d.positive,
        features=d.features, categorical=d.categorical, group=d.group,
        reference_score=d.reference_score, schema=study.resolve(d.schema_file),
        delimiter=d.delimiter, encoding=d.encoding, name=study.study.name,
    )
    if d.subgroups:
        ds.subgroups = list(d.subgroups)
    return ds


def targets_of(study: Study) -> list[str]:
    t = study.transfer.target
    return [t] if isinstance(t, str) else list(t)


def check_study_data(study: Study, ds: Dataset) -> list[str]:
    """Refuse data that cannot support the study; return warnings for what merely weakens it."""
    domains = ds.domains
    where = f"study '{study.study.name}'"
    named = [*study.transfer.sources, *targets_of(study)]
    missing = [s for s in named if s not in domains]
    if missing:
        raise UserInputError(
            f"sites {missing} are named in [transfer] but the data has no rows for them",
            where=where, fix=f"use sites from the domain column '{ds.domain}': {domains[:20]}"
            + (f" and {len(domains) - 20} more" if len(domains) > 20 else ""),
        )
    for s in named:
        n = int((ds.frame[ds.domain] == s).sum())
        if n < 2:
            role = "target" if s in targets_of(study) else "source"
            raise UserInputError(
                f"{role} site '{s}' has only {n} row", where=where,
                fix=f"one row cannot be split or learned from: remove '{s}' from [transfer], merge it with "
                "another site in the domain column, or add data",
            )
    warnings_out = []
    y = ds.frame[ds.label]
    src = ds.frame[ds.domain].isin(study.transfer.sources)
    if y[src].nunique() < 2:
        raise UserInputError(
            f"the label '{ds.label}' has a single class across the source sites",
            where=where, fix="add a source site with both outcomes, or check the label column",
        )
    for s in study.transfer.sources:
        if y[ds.frame[ds.domain] == s].nunique() < 2:
            warnings_out.append(f"source site '{s}' has a single label class; it is used, but only pooled with other sources")
    for t in targets_of(study):
        yt = y[ds.frame[ds.domain] == t]
        counts = yt.value_counts()
        if len(yt) < 4 or len(counts) < 2 or counts.min() < 2:
            raise UserInputError(
                f"target site '{t}' has {len(yt)} row(s) and {len(counts)} class(es) of the label '{ds.label}'"
                + (f", the rarest with {int(counts.min())} row(s)" if len(counts) > 1 else ""),
                where=where,
                fix="a pool/test split needs at least 2 rows of each class at the target; choose another target or add data",
            )
    empty = [f for f in ds.features if ds.frame[f].isna().all()]
    if empty:
        raise UserInputError(f"features {empty} are missing at every site", where=where,
                             fix="remove them from `features` or check the export")
    for site, cols in ds.report.absent().items():
        cols = [c for c in cols if c in ds.features]
        if cols and site in named:
            warnings_out.append(f"site '{site}' never measures {', '.join(cols)}; those values are imputed")
    return warnings_out


def default_methods(study: Study, reference_score: str | None = None) -> list[str]:
    """The methods a study runs when it names none: the baselines, a cheap and robust member
    of each family, and, where the data have a reference score (the study's
    ``reference_score``, or a built-in source's, e.g. APACHE IV in ``eicu_demo``), the
    transfers from it.

    >>> from healthtransfer.study import Study
    >>> s = Study.model_validate({"study": {"name": "x"}, "data": {"dataset": "uci_heart"},
    ...                           "transfer": {"sources": ["cleveland"], "target": "va"}})
    >>> default_methods(s)[-1]
    'relation_imputation_lr'
    """
    has_reference = bool(reference_score or study.data.reference_score)
    return DEFAULT_METHODS + (REFERENCE_METHODS if has_reference else [])


def _methods(study: Study, methods: list[str] | None, reference_score: str | None = None) -> list[str]:
    names = methods or study.transfer.methods or default_methods(study, reference_score)
    for n in names:
        get_method(n)  # raises with a suggestion for unknown names
    return list(dict.fromkeys(names))


@dataclass
class Unit:
    """One (target, seed): the rows on each side of the split and the preprocessed matrices.

    The preprocessing is fitted on source + target pool rows only, never on test rows; ``sd``
    holds skada-style domain ids for the fit rows (sources 1..k, target pool -1)."""

    src: pd.DataFrame
    pool: pd.DataFrame
    test: pd.DataFrame
    pre: Any
    Xs: np.ndarray
    Xp: np.ndarray
    Xte: np.ndarray
    ys: np.ndarray
    yp: np.ndarray
    yte: np.ndarray
    sd: np.ndarray
    pool_pos: np.ndarray | None = None  # row positions in ``ds.frame`` of the pool and test rows
    test_pos: np.ndarray | None = None


def split_target(ds: Dataset, target: str, seed: int, test_fraction: float):
    """The target's rows and their pool/test split for ``seed`` (stratified, group-aware)."""
    tgt = ds.frame[ds.frame[ds.domain].astype(str) == target]
    groups = tgt[ds.group].to_numpy() if ds.group and ds.group in tgt else None
    return tgt, target_split(tgt[ds.label].to_numpy().astype(int), seed=seed, test_fraction=test_fraction, groups=groups)


def prepare_unit(ds: Dataset, sources: list[str], target: str, seed: int, test_fraction: float) -> Unit:
    """Split the target, fit the preprocessing on the allowed rows and transform every part."""
    dom = ds.frame[ds.domain].astype(str)
    src = ds.frame[dom.isin(sources)]
    tgt, split = split_target(ds, target, seed, test_fraction)
    pool, test = tgt.iloc[split.pool], tgt.iloc[split.test]
    at_target = np.flatnonzero(dom.to_numpy() == target)
    pre = fit_preprocessor(ds.numeric, ds.categorical, pd.concat([src, pool])[ds.features])
    src_ids = {s: i + 1 for i, s in enumerate(sources)}
    sd = np.r_[dom[dom.isin(sources)].map(src_ids).to_numpy().astype(int), -np.ones(len(pool), int)]
    label = lambda frame: frame[ds.label].to_numpy().astype(int)  # noqa: E731
    return Unit(src=src, pool=pool, test=test, pre=pre, Xs=pre.transform(src[ds.features]),
                Xp=pre.transform(pool[ds.features]), Xte=pre.transform(test[ds.features]),
                ys=label(src), yp=label(pool), yte=label(test), sd=sd,
                pool_pos=at_target[split.pool], test_pos=at_target[split.test])


def run_unit(ds: Dataset, sources: list[str], target: str, seed: int, budgets: list[int],
             methods: list[str], test_fraction: float, keep_predictions: bool = False,
             selection=None, on_step=None, keep_models: bool = False) -> tuple:
    """One (target, seed): split, preprocess, fit every method at every budget, score.

    Runs single-threaded: units are the parallel grain, and OpenMP thread pools on tables of a
    few hundred rows cost far more in synchronisation than they save (measured: a 450-row
    histogram-boosting fit took 0.16 s on one thread and up to 30 s on two busy cores).

    Returns ``(records, skipped, predictions, selections)``; with ``keep_models`` a fifth item,
    the selected model of the largest budget *as evaluated* (fitted estimator with its
    calibration, preprocessing, and the positions of the rows it was fitted and scored on),
    from which :func:`healthtransfer.study.final.finalise` builds the model a bundle ships.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        out = _run_unit(ds, sources, target, seed, budgets, methods, test_fraction, keep_predictions, selection,
                        on_step)
    return out if keep_models else out[:4]


def _run_unit(ds, sources, target, seed, budgets, methods, test_fraction, keep_predictions, sel=None, on_step=None):
    from ._shipped import ReferenceScoreInput, ShippedModel

    step = on_step or (lambda what: None)  # progress: called as each fit / selection starts
    from ..evaluation.calibration import PriorShift, Recalibrator
    from ..evaluation.metrics import ece_noise_floor
    from ..selection import expand_candidates, recalibration_evidence, select
    from ..shift import estimate_label_shift

    records, skipped, preds, selections, shipped = [], [], [], [], []
    u = prepare_unit(ds, sources, target, seed, test_fraction)
    if len(np.unique(u.yte)) < 2:
        return (records, [dict(target=target, seed=seed, n_labeled=None, reason="test half holds one class")], preds,
                selections, shipped)
    f, src_rows, pool, test = ds.frame, u.src, u.pool, u.test
    Xs, Xp, Xte, ys, yp, yte, sd = u.Xs, u.Xp, u.Xte, u.ys, u.yp, u.yte, u.sd
    ref_cols = None
    eval_mask = np.ones(len(test), bool)
    if ds.reference_score:
        ref_train = np.r_[src_rows[ds.reference_score].to_numpy(float), pool[ds.reference_score].to_numpy(float)]
        ref_test = test[ds.reference_score].to_numpy(float)
        ref_cols = (logit(ref_train), logit(ref_test))
        ref_cols[0][np.isnan(ref_train)] = np.nan
        ref_cols[1][np.isnan(ref_test)] = np.nan
        # Like the eicu-region protocol: every method is scored on the test rows that have the
        # reference score, so the score and the models are compared on identical rows.
        eval_mask = ~np.isnan(ref_test)
    n_classes = len(ds.class_names) if ds.class_names else int(f[ds.label].nunique())
    X_train = np.vstack([Xs, Xp])
    # the source and pool blocks as views of X_train: one copy of the fit rows, not two
    Xs, Xp = X_train[: len(Xs)], X_train[len(Xs):]
    u.Xs = u.Xp = None
    # Above a size threshold (or a method's own max_rows) the scalable variant runs instead of
    # the exact method (Nystroem KMM/TCA, minibatch OT, streamed CORAL, ...).
    methods = list(dict.fromkeys(resolve_method(m, len(X_train)) for m in methods))
    candidates = expand_candidates(methods, grid=bool(sel and sel.grid))
    sub = test[ds.subgroup_columns()].reset_index(drop=True)
    # the unit's row frames are not needed past this point: at 10^6 rows they hold ~1 GB
    n_pool = len(pool)
    src_counts = {str(k): int(v) for k, v in src_rows[ds.domain].astype(str).value_counts().items()}
    u.src = u.pool = u.test = src_rows = pool = None
    test = None
    label_shift = None  # estimated once per unit, from source labels and pool features only
    label_free_cache: dict[str, tuple[np.ndarray, float, Any]] = {}
    label_free_choice = None  # the selection with every target label hidden, shared by all budgets
    for n_t in budgets:
        if n_t > n_pool:
            skipped.append(dict(target=target, seed=seed, n_labeled=n_t, reason=f"budget larger than the pool ({n_pool} rows)"))
            continue
        lab = label_budget(yp, np.arange(n_pool), n_t, seed=seed)
        if n_t > 0 and len(np.unique(yp[lab])) < 2:
            skipped.append(dict(target=target, seed=seed, n_labeled=n_t, reason="labelled draw holds one class"))
            continue
        y_pool = np.full(n_pool, -1)
        y_pool[lab] = yp[lab]
        y_train = np.r_[ys, y_pool]
        test_proba: dict[str, np.ndarray] = {}
        fitted: dict[str, Any] = {}
        runnable = []
        for c in candidates:
            step(f"{target} seed {seed} n_t={n_t}: {c.name}")
            spec = c.spec
            if spec.needs_labels and n_t == 0:
                continue
            if n_classes > 2 and not spec.multiclass:
                continue
            if c.uses_reference and ref_cols is None:
                continue
            if spec.max_rows is not None and len(X_train) > spec.max_rows:
                skipped.append(dict(target=target, seed=seed, n_labeled=n_t, method=c.name,
                                    reason=f"more than {spec.max_rows} rows"))
                continue
            runnable.append(c)
            Xtr, Xev = (np.column_stack([X_train, ref_cols[0]]), np.column_stack([Xte, ref_cols[1]])) \
                if c.uses_reference else (X_train, Xte)
            # A method that never reads target labels fits the same model at every budget:
            # fit it once per unit and reuse its test predictions.
            label_free = c.spec.uses_target in ("none", "unlabelled")
            if label_free and c.name in label_free_cache:
                proba, fit_s, est = label_free_cache[c.name]
            else:
                est = c.factory(random_state=seed)
                t0 = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    est.fit(Xtr, y_train, sample_domain=sd)
                    fit_s = time.perf_counter() - t0
                    proba = est.predict_proba(Xev, sample_domain=-np.ones(len(Xev), int))
                if label_free:
                    label_free_cache[c.name] = (proba, fit_s, est)
            test_proba[c.name] = proba
            fitted[c.name] = est
            rec = _record(spec, sources, target, n_t, seed, yte[eval_mask], proba[eval_mask], n_classes, fit_s)
            rec.update(method=c.name, base_method=c.method, params=dict(c.params))
            records.append(rec)
            if keep_predictions:
                preds.append(dict(method=c.name, target=target, seed=seed, n_labeled=n_t,
                                  y=yte[eval_mask], proba=proba[eval_mask]))
        if ref_cols is not None and n_classes == 2:
            ref_p = ref_test[eval_mask]
            rec = _record(None, sources, target, n_t, seed, yte[eval_mask], ref_p, 2, 0.0)
            rec.update(method=f"reference:{ds.reference_score}", family="baseline", base_method="reference")
            records.append(rec)
        if sel is None or not sel.enabled or not runnable:
            continue
        step(f"{target} seed {seed} n_t={n_t}: selection")
        # ---- selection: scored on the fit rows only (source + pool), never on test rows ----
        extra = (lambda c: ref_cols[0]) if ref_cols is not None else None
        sel_kw = dict(seed=seed, margin=sel.margin, min_gain=sel.min_gain, n_splits_target=sel.folds_target,
                      n_splits_source=sel.folds_source, extra_columns=extra, min_per_class=sel.min_per_class,
                      score_mask=None if ref_cols is None else ~np.isnan(ref_cols[0]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            choice = select(runnable, X_train, y_train, sd, n_classes, label_free=label_free_choice, **sel_kw)
        # the selection with every label hidden (the bar at n_t > 0) is the same for all budgets:
        # n_t = 0's own choice, or the one select() made for the first labelled budget
        label_free_choice = choice if n_t == 0 else (choice.label_free or label_free_choice)
        chosen = next(c for c in runnable if c.name == choice.chosen)
        proba = test_proba[chosen.name]
        p_eval = proba[eval_mask]
        calibration, calibrator = "none", None
        if sel.calibrate and n_classes == 2:
            oof = choice.oof.get(chosen.name)
            if n_t > 0 and oof is not None and oof.criterion == "target_cv":
                # recalibrate only where cross-fitting on the labelled rows shows it lowers Brier
                if recalibration_evidence(oof.y, oof.proba[:, 1], seed=seed)["helps"]:
                    calibrator = Recalibrator().fit(oof.y, oof.proba[:, 1])
                    calibration = calibrator.kind
            else:
                if label_shift is None:
                    label_shift = estimate_label_shift(Xs, ys, Xp, classes=list(range(n_classes)), n_bootstrap=100,
                                                       random_state=seed)
                ls = label_shift
                lo, hi = np.asarray(ls["ci_low"], float), np.asarray(ls["ci_high"], float)
                src_prior = np.asarray(ls["source_prior"], float)
                ess = choice.scores.get(chosen.name, {}).get("ess_fraction", 1.0)
                # Adjust for label shift only when it is detected (the CI excludes the source
                # prior) AND the covariate shift is mild enough for EM's assumption (same p(x|y))
                # to be plausible: importance weights keep >= 40% effective sample size. Under
                # strong covariate shift the EM prior is biased (on VA it says 1.00 vs 0.75; VA's
                # ESS is 0.28-0.32 and the adjustment cost it 0.014 Brier; Switzerland, 0.55, gains).
                if np.all(np.isfinite(lo)) and (src_prior[1] < lo[1] or src_prior[1] > hi[1]) and ess >= 0.4:
                    target_prior = np.clip(np.asarray(ls["target_prior"], float), 0.02, 0.98)
                    calibrator = PriorShift(src_prior.tolist(), (target_prior / target_prior.sum()).tolist())
                    calibration = "prior_shift"
            if calibrator is not None and calibration != "none":
                before = score(yte[eval_mask], p_eval[:, 1])
                # the shipped model's own map, so the number reported is the number shipped
                p_eval = ShippedModel(None, calibrator).calibrate(p_eval)
        rec = _record(chosen.spec, sources, target, n_t, seed, yte[eval_mask], p_eval, n_classes, 0.0)
        rec.update(method="selected", chosen=chosen.name, base_method=chosen.method, criterion=choice.criterion,
                   calibration=calibration)
        if n_classes == 2:  # what a perfectly calibrated model would score on these test rows
            rec["ece_floor"] = ece_noise_floor(p_eval[:, 1], random_state=seed)
        if calibration != "none":
            rec.update(ece_uncalibrated=before["ece"], brier_uncalibrated=before["brier"])
        records.append(rec)
        if n_t == max(budgets):
            pre = u.pre if not chosen.uses_reference else ReferenceScoreInput(u.pre, ds.reference_score)
            shipped.append(dict(
                target=target, seed=seed, n_labeled=n_t, candidate=chosen.name, record=rec,
                model=ShippedModel(fitted[chosen.name], calibrator if calibration != "none" else None),
                preprocessor=pre, calibration=calibration, uses_reference=bool(chosen.uses_reference),
                uses_target=chosen.spec.uses_target, source_rows=src_counts, n_pool=n_pool,
                labelled_pos=u.pool_pos[lab] if n_t > 0 else u.pool_pos[:0], pool_pos=u.pool_pos,
                eval_pos=u.test_pos[eval_mask]))
        selections.append(dict(target=target, seed=seed, n_labeled=n_t, **choice.to_dict(), calibration=calibration))
        # the selected model's test predictions are kept for ROC, reliability and subgroup views
        preds.append(dict(method="selected", target=target, seed=seed, n_labeled=n_t, y=yte[eval_mask],
                          proba=p_eval, proba_uncalibrated=proba[eval_mask], chosen=chosen.name,
                          subgroups=sub[eval_mask].reset_index(drop=True)))
    return records, skipped, preds, selections, shipped


def _record(spec, sources, target, n_t, seed, y, proba, n_classes, fit_s) -> dict:
    proba = np.asarray(proba, float)
    if n_classes == 2 and proba.ndim == 2:
        proba = proba[:, 1]
    rec = dict(
        method=spec.name if spec else None,
        family=spec.family if spec else "baseline",
        sources=list(sources), target=target, n_labeled=int(n_t), seed=int(seed),
        n_test=int(len(y)),
    )
    rec.update(score(y, proba, n_classes))
    for k, (lo, hi) in fast_bootstrap_ci(y, proba, n_boot=200, random_state=seed).items():
        rec[f"{k}_ci"] = [lo, hi]
    rec["fit_seconds"] = float(fit_s)
    return rec


def summarise(records: list[dict], metrics: list[str], by=("method", "n_labeled")) -> list[dict]:
    """Mean, standard deviation and range (``spread``: min, max) over seeds (and targets) of each
    metric: how much a result varies with the split, not a confidence interval."""
    if not records:
        return []
    df = pd.DataFrame.from_records(records)
    out = []
    for key, grp in df.groupby(list(by), sort=False):
        key = key if isinstance(key, tuple) else (key,)
        row: dict[str, Any] = dict(zip(by, [k.item() if hasattr(k, "item") else k for k in key]))
        row["family"] = grp["family"].iloc[0]
        row["n"] = int(len(grp))
        for m in metrics:
            vals = grp[m].to_numpy(float)
            vals = vals[np.isfinite(vals)]
            if len(vals) == 0:
                continue
            mean, sd = float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
            # every seed re-splits the same target patients: the spread says how much a result
            # moves with the split, and is not a confidence interval (it would narrow with seeds)
            row[m] = {"mean": mean, "std": sd, "spread": [float(vals.min()), float(vals.max())]}
        out.append(row)
    return out


def run_study(study: Study, *, methods: list[str] | None = None, data_dir=None, n_jobs: int = 1,
              progress: bool = True, dataset: Dataset | None = None, backend: str | None = None,
              keep_predictions: bool = False) -> StudyResult:
    """Run every (target, seed) unit of a study and collect the records."""
    from joblib import Parallel, delayed

    t0 = time.perf_counter()
    ds = dataset if dataset is not None else load_study_data(study, data_dir)
    from .outcome import outcome_of, run_outcome_study

    outcome = outcome_of(study, ds)
    if outcome is not None:  # survival or continuous outcome: its own protocol loop
        return run_outcome_study(study, ds, outcome, methods=methods, progress=progress,
                                 keep_predictions=keep_predictions)
    for w in check_study_data(study, ds):
        log.warning(w)
    names = _methods(study, methods, ds.reference_score)
    tr = study.transfer
    units = [(t, s) for t in targets_of(study) for s in range(tr.seeds)]
    jobs = (delayed(run_unit)(ds, tr.sources, t, s, tr.labeled_target, names, tr.test_fraction, keep_predictions,
                              study.selection, keep_models=True)
            for t, s in units)
    results = []
    if backend is None and (n_jobs == 1 or len(units) == 1):
        # in-process: the bar moves with every fit, not only with every (target, seed) unit,
        # which matters when one fit on 10^6 rows takes a minute
        from ..selection import expand_candidates

        # one step per candidate (a method's grid points count one each when selection grids)
        n_cand = len(expand_candidates(names, grid=bool(study.selection.grid)))
        steps = len(units) * len(tr.labeled_target) * (n_cand + int(bool(study.selection.enabled)))
        with StepProgress(progress, steps, f"{study.study.name}: {len(names)} methods") as advance:
            for t, s in units:
                results.append(run_unit(ds, tr.sources, t, s, tr.labeled_target, names, tr.test_fraction,
                                        keep_predictions, study.selection, on_step=advance, keep_models=True))
    else:
        with StepProgress(progress, len(units), f"{study.study.name}: {len(names)} methods") as advance:
            from ._backends import parallel_backend

            with parallel_backend(backend, n_jobs=n_jobs) as active:  # "ray"/"dask": same sweep on a cluster
                as_ = "list" if active in ("ray", "dask") else "generator"  # ray: no generator support
                for res in Parallel(n_jobs=n_jobs, return_as=as_)(jobs):
                    results.append(res)
                    advance()
    shift = {}
    if study.selection.diagnose:
        with StepProgress(progress, len(targets_of(study)), "shift diagnostics") as advance:
            shift = diagnose_targets(ds, tr.sources, targets_of(study), tr.test_fraction, on_target=advance)
    return StudyResult(
        study=study, dataset=ds,
        records=[r for res in results for r in res[0]],
        skipped=[s for res in results for s in res[1]],
        predictions=[p for res in results for p in res[2]],
        selections=[s for res in results for s in res[3]],
        shipped=[m for res in results for m in res[4]],
        shift=shift,
        seconds=time.perf_counter() - t0,
    )


def diagnose_targets(ds: Dataset, sources: list[str], targets: list[str], test_fraction: float, seed: int = 0,
                     on_target=None) -> dict:
    """Shift diagnostics per target on the target's pool rows of ``seed`` (never its test rows)."""
    from ..shift import diagnose

    out = {}
    for t in targets:
        if on_target is not None:
            on_target(f"shift diagnostics: {t}")
        tgt, split = split_target(ds, t, seed, test_fraction)  # labels used only to stratify
        out[t] = diagnose(ds, sources, t, rows_target=tgt.index[split.pool], random_state=seed, n_permutations=50)
    return out
