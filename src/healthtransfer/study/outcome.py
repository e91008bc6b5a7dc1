"""Studies of time-to-event (survival) and continuous (regression) outcomes.

The same protocol as a classification study (``run.py``): per (target, seed) a pool/test split
of the target, preprocessing fitted on source + pool rows, nested label budgets n_t, every
method fitted on the rows it may see and scored on the held-out target test rows, and a
selected model chosen on the fit rows only. What changes is the target (structured
(event, time) array or a float), the metrics (:mod:`healthtransfer.evaluation.survival`,
:mod:`~healthtransfer.evaluation.regression`) and the selection
(:mod:`healthtransfer.selection._outcomes`). Splits and budgets are stratified on the event
(survival; censored rows count as labelled) or on quintiles of the label (regression).

Example
-------
>>> from healthtransfer.study import Study
>>> study = Study.model_validate({"study": {"name": "s"}, "data": {"dataset": "eicu_demo",
...     "time": "hospital_days", "event": "death", "horizons": [7, 14]},
...     "transfer": {"sources": ["Midwest"], "target": "South", "seeds": 1, "labeled_target": [0],
...                  "methods": ["source_cox"]}})
>>> outcome_of(study).kind
'survival'
"""

from __future__ import annotations

import logging
import time as _time
import warnings
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from ..data import Dataset
from ..data.outcomes import (check_horizons, infer_task, masked_survival, regression_target, survival_target)
from ..data.preprocess import fit_preprocessor
from ..data.splits import label_budget, target_split
from ..errors import UserInputError

__all__ = ["Outcome", "outcome_of", "prepare_outcome_data", "run_outcome_study", "DEFAULT_OUTCOME_METHODS",
           "OUTCOME_METRICS", "file_outcome", "load_outcome_table"]

log = logging.getLogger(__name__)

DEFAULT_OUTCOME_METHODS = {
    "survival": ["source_cox", "target_cox", "pooled_cox", "source_gbsurv", "pooled_gbsurv", "iw_cox",
                 "coral_cox", "domain_std_cox", "recalibrated_cox", "revised_cox", "reference_cox"],
    "regression": ["source_ridge", "source_gbr", "target_ridge", "target_gbr", "pooled_ridge", "pooled_gbr",
                   "iw_ridge", "coral_ridge", "domain_std_ridge", "finetune_ridge", "finetune_gbr",
                   "reference_recalibration_reg", "reference_boosting_reg"],
}
OUTCOME_METRICS = {"survival": ["c_harrell", "c_uno", "ibs"], "regression": ["mae", "rmse", "r2"]}


@dataclass
class Outcome:
    """What the study predicts: ``kind`` survival (``time``, ``event``, ``horizons``) or
    regression (``label``, ``transform``), and how that was decided."""

    kind: str
    label: str | None = None
    time: str | None = None
    event: str | None = None
    horizons: list[float] = field(default_factory=list)
    time_unit: str = "days"
    transform: str = "none"
    inferred: bool = False

    def describe(self) -> str:
        if self.kind == "survival":
            return (f"time to event: '{self.time}' ({self.time_unit}), event '{self.event}' (0 = censored); "
                    f"risks at {', '.join(f'{h:g}' for h in self.horizons)} {self.time_unit}")
        how = " (inferred: a numeric label with many values)" if self.inferred else ""
        tr = f", fitted on the {self.transform} scale and reported on the original scale" if self.transform != "none" else ""
        return f"continuous outcome '{self.label}'{how}{tr}"

    def forward(self, y):
        return {"none": y, "log": np.log(y), "log1p": np.log1p(y)}[self.transform]

    def inverse(self, z):
        return {"none": z, "log": np.exp(z), "log1p": np.expm1(z)}[self.transform]


def outcome_of(study, ds: Dataset | None = None) -> Outcome | None:
    """The study's outcome, or ``None`` for a classification study."""
    d = study.data
    if d.time is not None:
        return Outcome("survival", time=d.time, event=d.event, horizons=list(d.horizons), time_unit=d.time_unit)
    if d.task == "regression":
        return Outcome("regression", label=d.label, transform=d.transform)
    if d.task is None and d.label is not None and ds is not None and d.label in ds.frame:
        if infer_task(ds.frame[d.label]) == "regression":
            return Outcome("regression", label=d.label, transform=d.transform, inferred=True)
    return None


def prepare_outcome_data(study, ds: Dataset, outcome: Outcome) -> Dataset:
    """Check the outcome columns and put them on ``ds`` (label, reference score); refuse bad input."""
    f = ds.frame
    where_ds = ds.domain
    if outcome.kind == "survival":
        y = survival_target(f, time=outcome.time, event=outcome.event, domain=where_ds)
        ds.frame = f.assign(**{outcome.event: y["event"].astype(int), outcome.time: y["time"]})
        ds.label = outcome.event
        for t in ([study.transfer.target] if isinstance(study.transfer.target, str) else study.transfer.target):
            rows = (ds.frame[ds.domain].astype(str) == t).to_numpy()
            if rows.any():
                check_horizons(y[rows], outcome.horizons, t)
    else:
        y = regression_target(f, label=outcome.label, domain=where_ds, transform=outcome.transform)
        ds.frame = f.assign(**{outcome.label: y})
        ds.label = outcome.label
        ds.reference_score = None  # a built-in source's score belongs to its own label
    if ds.label in ds.features or (outcome.time and outcome.time in ds.features):
        raise UserInputError(f"the outcome column '{ds.label}' is also a feature", where="[data] features",
                             fix="remove the outcome (and its time column) from `features`")
    if study.data.reference_score and study.data.reference_score in ds.frame:
        ds.reference_score = study.data.reference_score
        ds.frame[ds.reference_score] = pd.to_numeric(ds.frame[ds.reference_score], errors="coerce")
    ds.extra = {**ds.extra, "outcome": outcome.describe()}
    return ds


def file_outcome(study) -> Outcome | None:
    """The outcome of a CSV/Parquet study, reading the label column when the task is inferred."""
    oc = outcome_of(study)
    d = study.data
    if oc is None and d.task is None and d.label is not None:
        from ..data.sources import read_table

        raw = read_table(study.resolve(d.path), delimiter=d.delimiter, encoding=d.encoding)
        if d.label in raw.columns and infer_task(raw[d.label]) == "regression":
            return Outcome("regression", label=d.label, transform=d.transform, inferred=True)
    return oc


def load_outcome_table(study, outcome: Outcome) -> Dataset:
    """A CSV/Parquet study of a survival or continuous outcome: the outcome columns are checked
    on the file as written (text in the time column, negative times, events not 0/1, ...), then
    the table is harmonised as any other and the outcome columns are put back as numbers."""
    from ..data.sources import load_table, read_table

    d = study.data
    path = study.resolve(d.path)
    raw = read_table(path, delimiter=d.delimiter, encoding=d.encoding)
    if d.domain not in raw.columns:
        raise UserInputError(f"the column '{d.domain}' named by `domain` is not in the file", where=str(path),
                             fix=f"set `domain` to one of the file's columns: {list(raw.columns)[:20]}")
    if outcome.kind == "survival":
        y = survival_target(raw, time=outcome.time, event=outcome.event, domain=d.domain)
        outcome_cols, load_label = [outcome.time, outcome.event], outcome.event
    else:
        regression_target(raw, label=outcome.label, domain=d.domain, transform=outcome.transform)
        outcome_cols, load_label = [outcome.label], outcome.label
    special = {d.domain, d.group, d.reference_score, *outcome_cols}
    features = d.features or [c for c in raw.columns if c not in special]
    ds = load_table(path, domain=d.domain, label=load_label, features=features, categorical=d.categorical,
                    group=d.group, reference_score=d.reference_score if outcome.kind == "survival" else None,
                    schema=study.resolve(d.schema_file), delimiter=d.delimiter, encoding=d.encoding,
                    name=study.study.name)
    if len(ds.frame) != len(raw):  # harmonisation keeps every row, in order; the outcome relies on it
        raise UserInputError("rows were dropped while harmonising", where=str(path), fix="report this as a bug")
    if outcome.kind == "survival":
        ds.frame[outcome.time] = y["time"]
        ds.frame[outcome.event] = y["event"].astype(int)
    else:
        ds.frame[outcome.label] = pd.to_numeric(raw[outcome.label]).to_numpy(float)
        if d.reference_score:
            ds.frame[d.reference_score] = pd.to_numeric(raw[d.reference_score], errors="coerce").to_numpy(float)
    if d.subgroups:
        ds.subgroups = list(d.subgroups)
    return ds


def _strata(outcome: Outcome, frame: pd.DataFrame) -> np.ndarray:
    """What splits and budgets stratify on: the event, or quintiles of the label."""
    if outcome.kind == "survival":
        return frame[outcome.event].to_numpy().astype(int)
    v = frame[outcome.label].to_numpy(float)
    return np.searchsorted(np.quantile(v, [0.2, 0.4, 0.6, 0.8]), v, side="right")


def _targets(study) -> list[str]:
    t = study.transfer.target
    return [t] if isinstance(t, str) else list(t)


@dataclass
class _Cand:
    name: str
    spec: Any
    factory: Any


def _ref_column(outcome, values):
    """The reference score as a method sees it: logit of a risk (survival), the prediction on
    the fitted scale (regression)."""
    from ..evaluation.calibration import logit

    v = np.asarray(values, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        if outcome.kind == "survival":  # the same logit a bundle's ReferenceScoreInput applies
            out = logit(v)
        else:
            out = outcome.forward(np.where(v > 0, v, np.nan)) if outcome.transform != "none" else v
    return np.where(np.isnan(v), np.nan, out)


def _grid(y_fit) -> np.ndarray:
    t = y_fit["time"][~np.isnan(y_fit["time"])]
    return np.unique(np.quantile(t, np.linspace(0, 0.99, 100)))


def score_outcome(outcome: Outcome, y, pred, curves, grid, seed) -> dict:
    """The metrics of one model on held-out rows: the runner's records, the final model's
    evaluation and the deployment check all come from this one function."""
    if outcome.kind == "survival":
        from ..evaluation.survival import survival_scores

        return survival_scores(y, pred, curves, grid, outcome.horizons, n_boot=100, random_state=seed)
    from ..evaluation.regression import regression_scores

    return regression_scores(outcome.inverse(y), outcome.inverse(pred))


def outcome_values(outcome: Outcome, frame: pd.DataFrame):
    """The target as the methods see it: the (event, time) array, or the label on the fitted scale."""
    if outcome.kind == "survival":
        return survival_target(frame, time=outcome.time, event=outcome.event)
    return outcome.forward(frame[outcome.label].to_numpy(float))


def run_outcome_unit(ds: Dataset, outcome: Outcome, sources, target, seed, budgets, methods, test_fraction,
                     sel=None, keep_predictions=False, on_step=None, shipped: list | None = None):
    """One (target, seed) of a survival or regression study: records, skips, predictions, selections.

    With ``shipped`` (a list), the unit appends what the final model needs at its largest budget:
    every candidate's fitted estimator and record, the preprocessor and the positions (in
    ``ds.frame``) of the held-out rows they were scored on (see :mod:`.outcome_final`)."""
    from ..evaluation.regression import regression_scores
    from ..methods import get_method, make_method
    from ..selection._outcomes import select_outcome

    step = on_step or (lambda what: None)
    f = ds.frame
    dom = f[ds.domain].astype(str)
    src, tgt = f[dom.isin(sources)], f[dom == target]
    strat_t = _strata(outcome, tgt)
    groups = tgt[ds.group].to_numpy() if ds.group and ds.group in tgt else None
    split = target_split(strat_t, seed=seed, test_fraction=test_fraction, groups=groups)
    pool, test = tgt.iloc[split.pool], tgt.iloc[split.test]
    tgt_pos = np.flatnonzero((dom == target).to_numpy())
    pre = fit_preprocessor(ds.numeric, ds.categorical, pd.concat([src, pool])[ds.features])
    Xs, Xp, Xte = (pre.transform(p[ds.features]) for p in (src, pool, test))
    src_ids = {s: i + 1 for i, s in enumerate(sources)}
    sd = np.r_[dom[dom.isin(sources)].map(src_ids).to_numpy().astype(int), -np.ones(len(pool), int)]
    X = np.vstack([Xs, Xp])
    survival = outcome.kind == "survival"
    ys, yp, yte = (outcome_values(outcome, p) for p in (src, pool, test))
    ref_fit = ref_test = None
    eval_mask = np.ones(len(test), bool)
    if ds.reference_score:
        ref_fit = _ref_column(outcome, np.r_[src[ds.reference_score].to_numpy(float), pool[ds.reference_score].to_numpy(float)])
        ref_test = _ref_column(outcome, test[ds.reference_score].to_numpy(float))
        eval_mask = ~np.isnan(ref_test)  # every method is scored on the rows the score has
    y_eval = yte[eval_mask]
    strat_pool = _strata(outcome, pool)
    records, skipped, preds, selections = [], [], [], []
    cands = [_Cand(m, get_method(m), partial(make_method, m)) for m in methods]
    wrong = [c.name for c in cands if c.spec.outcome != outcome.kind]
    if wrong:
        raise UserInputError(f"methods {wrong} do not fit a {outcome.kind} outcome", where="[transfer] methods",
                             fix=f"use {outcome.kind} methods, e.g. {DEFAULT_OUTCOME_METHODS[outcome.kind][:4]}; "
                             "`healthtransfer methods` lists them")
    base = dict(sources=list(sources), target=target, seed=int(seed), outcome=outcome.kind)
    grid = _grid(ys) if survival else None

    def evaluate(pred_risk, curves):
        return score_outcome(outcome, y_eval, pred_risk, curves, grid, seed)

    cache: dict = {}
    sel_cache: dict = {}
    top = max([b for b in budgets if b <= len(pool)], default=None)
    for n_t in budgets:
        if n_t > len(pool):
            skipped.append(dict(target=target, seed=seed, n_labeled=n_t, reason=f"budget larger than the pool ({len(pool)} rows)"))
            continue
        lab = np.zeros(len(pool), bool)
        lab[label_budget(strat_pool, np.arange(len(pool)), n_t, seed=seed)] = True
        if survival:
            y_pool = masked_survival(yp, lab)
            y_fit = np.concatenate([ys, y_pool])
        else:
            y_fit = np.r_[ys, np.where(lab, yp, np.nan)]
        runnable, test_out, models, recs = [], {}, {}, {}
        for c in cands:
            if c.spec.needs_labels and n_t == 0:
                continue
            if c.spec.uses_reference and ref_fit is None:
                continue
            step(f"{target} seed {seed} n_t={n_t}: {c.name}")
            Xf, Xe = (np.column_stack([X, ref_fit]), np.column_stack([Xte, ref_test])) if c.spec.uses_reference \
                else (X, Xte)
            label_free = c.spec.uses_target in ("none", "unlabelled")
            if label_free and c.name in cache:
                out, fit_s, est = cache[c.name]
            else:
                t0 = _time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    try:
                        est = c.factory(random_state=seed).fit(Xf, y_fit, sample_domain=sd)
                    except (ValueError, np.linalg.LinAlgError, ArithmeticError) as exc:
                        skipped.append(dict(target=target, seed=seed, n_labeled=n_t, method=c.name,
                                            reason=f"fit failed: {type(exc).__name__}"))
                        continue
                    fit_s = _time.perf_counter() - t0
                    risk = est.predict(Xe[eval_mask])
                    curves = est.predict_survival(Xe[eval_mask], grid) if survival else None
                out = (risk, curves)
                if label_free:
                    cache[c.name] = (out, fit_s, est)
            runnable.append(c)
            test_out[c.name], models[c.name] = out, est
            rec = dict(base, method=c.name, family=c.spec.family, n_labeled=int(n_t), fit_seconds=float(fit_s))
            rec.update(evaluate(*out))
            records.append(rec)
            recs[c.name] = rec
            if keep_predictions:
                preds.append(dict(method=c.name, target=target, seed=seed, n_labeled=n_t, y=y_eval, pred=out[0]))
        if ds.reference_score:
            # the clinical bar as it is: APACHE IV's risk ranks rows (no curve, so C only);
            # its predicted length of stay is scored like any prediction
            r = test[ds.reference_score].to_numpy(float)[eval_mask]
            rec = dict(base, method=f"reference:{ds.reference_score}", family="baseline", n_labeled=int(n_t),
                       fit_seconds=0.0)
            if survival:
                from sksurv.metrics import concordance_index_censored, concordance_index_ipcw

                rec.update(c_harrell=float(concordance_index_censored(y_eval["event"], y_eval["time"], r)[0]),
                           c_uno=float(concordance_index_ipcw(y_eval, y_eval, r, tau=max(outcome.horizons))[0]),
                           n_test=int(len(y_eval)))
            else:
                rec.update(regression_scores(outcome.inverse(y_eval), r))
            records.append(rec)
        if sel is None or not sel.enabled or not runnable:
            continue
        step(f"{target} seed {seed} n_t={n_t}: selection")
        lab_t = np.r_[np.zeros(len(ys), bool), lab]
        choice = select_outcome(outcome.kind, runnable, X, y_fit, sd, lab_t, seed=seed, folds_target=sel.folds_target,
                                folds_source=sel.folds_source, margin=sel.margin, cache=sel_cache,
                                extra_column=ref_fit)
        risk, curves = test_out[choice.chosen]
        chosen_spec = next(c.spec for c in runnable if c.name == choice.chosen)
        rec = dict(base, method="selected", chosen=choice.chosen, family=chosen_spec.family, criterion=choice.criterion,
                   n_labeled=int(n_t), fit_seconds=0.0)
        rec.update(evaluate(risk, curves))
        records.append(rec)
        selections.append(dict(target=target, seed=seed, n_labeled=n_t, **choice.to_dict()))
        if shipped is not None and n_t == top:
            shipped.append(dict(target=target, seed=int(seed), n_labeled=int(n_t), chosen=choice.chosen,
                                models=models, records=recs, selected_record=rec, preprocessor=pre, grid=grid,
                                uses_reference={c.name: c.spec.uses_reference for c in runnable},
                                eval_pos=tgt_pos[split.test][eval_mask], pool_pos=tgt_pos[split.pool],
                                labelled_pos=tgt_pos[split.pool][lab], n_source=int(len(src))))
        preds.append(dict(method="selected", target=target, seed=seed, n_labeled=n_t, y=y_eval, pred=risk,
                          curves=curves, grid=grid, chosen=choice.chosen))
    return records, skipped, preds, selections


def check_outcome_data(study, ds: Dataset, outcome: Outcome) -> list[str]:
    """Refuse what cannot support the study (sites, events); warn about what weakens it."""
    where = f"study '{study.study.name}'"
    dom = ds.frame[ds.domain].astype(str)
    named = [*study.transfer.sources, *_targets(study)]
    missing = [s for s in named if s not in set(dom)]
    if missing:
        raise UserInputError(f"sites {missing} are named in [transfer] but the data has no rows for them", where=where,
                             fix=f"use sites from the domain column '{ds.domain}': {sorted(set(dom))[:20]}")
    out = []
    if outcome.kind == "survival":
        src = dom.isin(study.transfer.sources)
        if ds.frame.loc[src, outcome.event].sum() == 0:
            raise UserInputError("every source row is censored", where=where,
                                 fix="choose source sites with observed events")
        for t in _targets(study):
            n_ev = int(ds.frame.loc[dom == t, outcome.event].sum())
            if n_ev < 4:
                raise UserInputError(f"target site '{t}' has {n_ev} event(s)", where=where,
                                     fix="a pool/test split needs at least 2 events on each side; choose another target")
    for t in _targets(study):
        if int((dom == t).sum()) < 10:
            raise UserInputError(f"target site '{t}' has fewer than 10 rows", where=where,
                                 fix="choose a larger target or merge sites")
    return out


def run_outcome_study(study, ds: Dataset, outcome: Outcome, *, methods=None, progress=True, keep_predictions=False):
    """Every (target, seed) unit of a survival or regression study, in this process."""
    from ._progress import StepProgress
    from .run import StudyResult

    t0 = _time.perf_counter()
    if outcome.kind == "survival":
        try:
            import sksurv  # noqa: F401
        except ImportError:
            raise UserInputError("survival studies need scikit-survival, which is not installed",
                                 where=f"study '{study.study.name}'",
                                 fix="pip install 'healthtransfer[survival]'") from None
    ds = prepare_outcome_data(study, ds, outcome)
    for w in check_outcome_data(study, ds, outcome):
        log.warning(w)
    names = list(dict.fromkeys(methods or study.transfer.methods or DEFAULT_OUTCOME_METHODS[outcome.kind]))
    tr = study.transfer
    units = [(t, s) for t in _targets(study) for s in range(tr.seeds)]
    results, shipped = [], []
    steps = len(units) * len(tr.labeled_target) * (len(names) + 1)
    with StepProgress(progress, steps, f"{study.study.name}: {len(names)} {outcome.kind} methods") as advance:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            for t, s in units:
                results.append(run_outcome_unit(ds, outcome, tr.sources, t, s, tr.labeled_target, names,
                                                tr.test_fraction, study.selection, keep_predictions, on_step=advance,
                                                shipped=shipped))
    res = StudyResult(study=study, dataset=ds, records=[r for x in results for r in x[0]],
                      skipped=[s for x in results for s in x[1]], predictions=[p for x in results for p in x[2]],
                      selections=[s for x in results for s in x[3]], seconds=_time.perf_counter() - t0,
                      outcome=outcome, shipped=shipped)
    return res
