"""One final model per target for survival and regression studies, and its deployment check.

The same contract as :mod:`.final` for classification: the shipped model is a candidate
*exactly as one seed of the run fitted and evaluated it* (never a refit), its numbers are that
object's metrics on that seed's held-out target test rows, and the bundle written from it is
loaded back and must reproduce its predictions on those rows (risk at every horizon and the
risk score, or the regression prediction) within :data:`DEPLOYMENT_TOLERANCE`, and with them
the reported metrics.

Which candidate: the one the selection chose most often at the largest budget, from the first
seed that chose it. A bundle holds a model as JSON numbers, so only a model that is linear on
the target rows (every Cox and ridge method, CORAL and domain standardisation included) or a
boosted Cox model (its trees as node arrays) can be shipped; a survival model on the reference
score ships with the score as a required input (``logit(score)``, as classification bundles
do). When the selection's choice is none of these (boosted regression, a regression model on a
reference score), the next candidate in the selection's order *from the same seed* is shipped, and the
report, card and ``training.json`` say so.

Example
-------
>>> from healthtransfer.study.run import run_study                       # doctest: +SKIP
>>> finals = finalise_outcome(run_study(study, progress=False))          # doctest: +SKIP
>>> finals["South"].evaluation["c_harrell"]                              # doctest: +SKIP
0.74
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["FinalOutcomeModel", "finalise_outcome", "outcome_deployment_check", "DEPLOYMENT_TOLERANCE"]

DEPLOYMENT_TOLERANCE = 1e-9
# the metrics the deployment check recomputes from the loaded bundle's predictions
CHECKED_METRICS = {"survival": ("c_harrell", "c_uno", "ibs"), "regression": ("mae", "rmse", "r2")}


@dataclass
class FinalOutcomeModel:
    """The survival / regression model shipped for one target and how it does there."""

    target: str
    method: str              # the candidate shipped
    selected: str            # what the selection chose most often at n_labeled
    n_labeled: int
    seed: int
    preprocessor: Any
    model: Any
    export: dict             # the model as JSON numbers (bundle/_outcome.export_model)
    eval_positions: np.ndarray
    grid: np.ndarray | None
    evaluation: dict         # metrics of this object on its held-out rows (the run's record of it)
    training: dict[str, Any]
    note: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)
    reference_input: dict | None = None  # {"name", "range", "meaning"} when the model reads a score

    def features(self, frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.preprocessor.transform(frame[list(self.preprocessor.feature_names_in_)]), float)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Risk score (survival) or prediction on the fitted scale (regression), in memory."""
        X = self.features(frame)
        return np.asarray(self.model.predict(X, sample_domain=-np.ones(len(X), int)), float)

    def predict_survival(self, frame: pd.DataFrame, times) -> np.ndarray:
        X = self.features(frame)
        return self.model.predict_survival(X, times, sample_domain=-np.ones(len(X), int))


def _choice_order(result, target) -> tuple[int, list[str], list[dict]]:
    """The largest budget with a selection, the candidates by how often selection chose them
    there (then by their mean selection score), and those selections."""
    sels = [s for s in result.selections if s["target"] == target]
    top = max(s["n_labeled"] for s in sels)
    sels = [s for s in sels if s["n_labeled"] == top]
    votes = collections.Counter(s["chosen"] for s in sels)
    score = collections.defaultdict(list)
    for s in sels:
        for k, v in s["scores"].items():
            if v is not None and np.isfinite(v):
                score[k].append(v)
    order = sorted(set(score) | set(votes), key=lambda k: (-votes.get(k, 0), -np.mean(score[k] or [-np.inf])))
    return top, order, sels


def _training(result, unit, method) -> dict[str, Any]:
    from ..methods import get_method

    spec = get_method(method)
    uses = spec.uses_target
    n_lab = int(len(unit["labelled_pos"])) if uses in ("labelled", "both") else 0
    n_unl = int(len(unit["pool_pos"])) if uses in ("unlabelled", "both") else 0
    return {"sources": list(result.study.transfer.sources), "source_rows": unit["n_source"],
            "target_labelled_rows": n_lab, "target_unlabelled_rows": n_unl, "uses_target": uses,
            "seed": unit["seed"],
            "preprocessing_fitted_on": f"source rows and the {len(unit['pool_pos'])} target pool rows (features only)"}


def finalise_outcome(result) -> dict[str, FinalOutcomeModel]:
    """The final model of every target with a selection; stored on ``result.finals``."""
    from ..bundle._outcome import export_model
    from ._shipped import ReferenceScoreInput
    from .outcome import _targets, outcome_values, score_outcome

    oc, ds = result.outcome, result.dataset
    finals = {}
    for target in _targets(result.study):
        if not any(s["target"] == target for s in result.selections):
            continue
        top, order, sels = _choice_order(result, target)
        chosen = order[0]
        units = sorted((u for u in result.shipped if u["target"] == target and u["n_labeled"] == top),
                       key=lambda u: (u["chosen"] != chosen, u["seed"]))
        if not units:
            continue
        unit = units[0]
        rows = ds.frame.iloc[unit["eval_pos"]]
        shipped = export = ref_input = None
        pre = unit["preprocessor"]
        for m in [m for m in order if m in unit["models"]]:
            pre, ref_input = unit["preprocessor"], None
            if unit["uses_reference"].get(m):
                if oc.kind != "survival" or not ds.reference_score:
                    continue  # a continuous reference score is not on a logit scale: not shipped
                # the model reads logit(score) as its last column: the classification bundles'
                # ReferenceScoreInput gives exactly that, and refuses a record without the score
                pre = ReferenceScoreInput(unit["preprocessor"], ds.reference_score)
                ref_input = {"name": ds.reference_score, "range": [0.0, 1.0],
                             "meaning": f"the existing clinical score '{ds.reference_score}' as a predicted "
                                        "probability (from 0 to 1); required: this model is built on it"}
            X = pre.transform(rows[list(pre.feature_names_in_)])
            export = export_model(unit["models"][m], oc.kind, X)
            if export is not None:
                shipped = m
                break
        if shipped is None:
            from ..errors import UserInputError

            raise UserInputError(f"no candidate for '{target}' is a model that a bundle can hold (a linear Cox "
                                 "or ridge model on the preprocessed features)", where="[transfer] methods",
                                 fix="add a Cox / ridge method, e.g. source_cox or pooled_ridge")
        est = unit["models"][shipped]
        fm = FinalOutcomeModel(target=target, method=shipped, selected=chosen, n_labeled=top, seed=unit["seed"],
                               preprocessor=pre, model=est, export=export, reference_input=ref_input,
                               eval_positions=np.asarray(unit["eval_pos"]), grid=unit["grid"], evaluation={},
                               training=_training(result, unit, shipped),
                               evidence={"choices": dict(collections.Counter(s["chosen"] for s in sels)),
                                         "seeds": len(sels), "criterion": collections.Counter(
                                             s["criterion"] for s in sels).most_common(1)[0][0]})
        if shipped != chosen:
            fm.note = (f"the selection chose `{chosen}` most often at n_t = {top}; it cannot be held by a JSON "
                       f"bundle (neither linear nor boosted Cox trees, or a regression model on the reference score), so `{shipped}` from the same seed "
                       "is shipped, and these are its own numbers")
        # evaluate exactly this object on its held-out rows; it must agree with the run's record
        y = outcome_values(oc, rows)
        curves = fm.predict_survival(rows, fm.grid) if oc.kind == "survival" else None
        ev = score_outcome(oc, y, fm.predict(rows), curves, fm.grid, fm.seed)
        run_rec = unit["records"][shipped]
        key = CHECKED_METRICS[oc.kind][0]
        if not np.isclose(ev[key], run_rec[key], rtol=0, atol=1e-12):
            raise RuntimeError(f"the final model of '{target}' does not reproduce its run record ({key})")
        fm.evaluation = {k: v for k, v in ev.items() if not isinstance(v, (dict, list))}
        fm.evaluation["rows"] = (f"{len(rows)} held-out {target} test rows of seed {fm.seed} "
                                 "(no fitting or selection step saw them)")
        finals[target] = fm
    result.finals = finals
    return finals


def outcome_deployment_check(fm: FinalOutcomeModel, bundle_dir, result) -> dict[str, Any]:
    """Load the written bundle with the service's loader, predict the final model's held-out rows
    and compare with the object: predictions (risk at each horizon and the risk score; the
    regression prediction) and the reported metrics, within :data:`DEPLOYMENT_TOLERANCE`."""
    from ..bundle._outcome import load_outcome_bundle
    from .outcome import outcome_values, score_outcome

    oc, ds = result.outcome, result.dataset
    b = load_outcome_bundle(bundle_dir, allow_unsigned=True)
    rows = ds.frame.iloc[fm.eval_positions]
    records = rows  # the loader's own frame(): schema columns only, coerced as a request's are
    lp_b, lp_m = b.risk_score(records), fm.predict(rows)
    diffs = {"risk_score" if oc.kind == "survival" else "prediction (fitted scale)": float(np.max(np.abs(lp_b - lp_m)))}
    curves = None
    if oc.kind == "survival":
        hz = np.asarray(oc.horizons, float)
        risk_b = 1.0 - b.survival(records, hz)
        risk_m = 1.0 - fm.predict_survival(rows, hz)
        diffs["risk at horizons"] = float(np.max(np.abs(risk_b - risk_m)))
        curves = b.survival(records, fm.grid)
    else:
        pred = np.array([p["prediction"] for p in b.predict_outcome(records)])
        diffs["prediction"] = float(np.max(np.abs(pred - oc.inverse(lp_m))))
    got = score_outcome(oc, outcome_values(oc, rows), lp_b, curves, fm.grid, fm.seed)
    keys = [k for k in CHECKED_METRICS[oc.kind] if k in fm.evaluation]
    metric_diff = max(abs(got[k] - fm.evaluation[k]) for k in keys)
    worst = max(max(diffs.values()), metric_diff)
    return {"target": fm.target, "method": fm.method, "model_version": b.model_version, "n_rows": int(len(rows)),
            "seed": fm.seed, "prediction_differences": diffs, "bundle": {k: got[k] for k in keys},
            "reported": {k: fm.evaluation[k] for k in keys}, "max_abs_difference": float(worst),
            "tolerance": DEPLOYMENT_TOLERANCE, "passed": bool(worst <= DEPLOYMENT_TOLERANCE)}
