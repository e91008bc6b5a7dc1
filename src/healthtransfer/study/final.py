"""From a finished run to one final model per target: the object every writer reads.

The recommended candidate for a target is the one the selection stage chose most often at the
largest label budget (ties: first seen). The final model is that candidate *exactly as one
seed of the run fitted, calibrated and evaluated it*: the first seed whose selection chose it.
It was fitted on the source rows plus what that seed's target pool allows (its labelled rows,
or its unlabelled rows, as the method declares), calibrated on out-of-fold predictions for the
labelled rows (or by the estimated target prior), and scored on that seed's held-out target
test rows, which no fitting step saw. :func:`finalise` re-scores the object on those rows and
states a target-sample interval; :func:`deployment_check` scores the *written bundle*, loaded by
the service's loader, on the same rows.

Example
-------
>>> from healthtransfer.study import Study
>>> from healthtransfer.study.run import run_study
>>> study = Study.model_validate({"study": {"name": "demo"}, "data": {"dataset": "uci_heart"},
...     "transfer": {"sources": ["cleveland"], "target": "va", "seeds": 2,
...                  "labeled_target": [0, 20], "methods": ["source_lr", "target_lr"]}})
>>> finals = finalise(run_study(study, progress=False))  # doctest: +SKIP
>>> finals["va"].evaluation["auroc"]["ci"]  # doctest: +SKIP
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .._sampling import uniform_rows
from ..evaluation.metrics import score, target_sample_ci
from ..selection import expand_candidates

__all__ = ["BASELINE_NAMES", "FinalModel", "deployment_check", "finalise", "recommend", "selection_summary",
           "subgroup_table"]

BASELINE_NAMES = ("source_lr", "source_gbm", "target_lr", "target_gbm", "pooled_lr", "pooled_gbm")
# What the report, card and results.json call numbers chosen by looking at test labels.
PICKED_WITH_TEST_LABELS = "picked with test labels: a reference, not a choice a user could have made"
DEPLOYMENT_TOLERANCE = 1e-9


@dataclass
class FinalModel:
    """The model shipped for one target, how it was made, and how it does there."""

    target: str
    candidate: str
    method: str
    family: str
    n_labeled: int
    seed: int
    preprocessor: Any
    model: Any
    inputs: list[str]                      # the columns a record must carry, in order
    reference_input: dict | None           # {"name", "range", "meaning"} when the model reads a score
    calibration: str                       # none | intercept | platt | isotonic | prior_shift
    training: dict[str, Any]               # what the fit actually used (rows per site, target info)
    training_frame: pd.DataFrame           # the rows the fit saw (aggregates go into the bundle)
    eval_positions: np.ndarray             # positions in dataset.frame of the held-out rows scored
    evaluation: dict[str, Any]             # metrics of this object on those rows, with intervals
    seed_spread: dict[str, Any]            # the selection procedure's result over splits
    calibration_table: list[dict]          # observed rate per risk bin on those rows (service)
    evidence: dict[str, Any] = field(default_factory=dict)
    importance: pd.DataFrame | None = None
    relations: pd.DataFrame | None = None

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Class probabilities for harmonised rows (the object itself, in memory)."""
        return self.model.predict_proba(self.preprocessor.transform(frame[self.inputs]))

    def predict_risk(self, frame: pd.DataFrame) -> np.ndarray:
        """Probability of the positive class (binary outcomes)."""
        return self.predict_proba(frame)[:, 1]


def selection_summary(records: list[dict]) -> list[dict]:
    """Per (target, n_labeled): the selected model's mean AUROC beside the oracle-best candidate
    and the best of source/target/pooled. Both are picked by mean *test* AUROC (marked so in
    ``picked_with_test_labels``): references, not choices. Paired differences and win-rates are
    over seeds."""
    df = pd.DataFrame.from_records(records)
    if df.empty or "selected" not in set(df["method"]):
        return []
    out = []
    for (t, n), g in df.groupby(["target", "n_labeled"], sort=False):
        sel = g[g["method"] == "selected"].set_index("seed")
        if sel.empty:
            continue
        cands = g[(g["method"] != "selected") & ~g["method"].str.startswith("reference:")]
        means = cands.groupby("method")["auroc"].mean()
        base = means[means.index.isin(BASELINE_NAMES)]
        oracle, best_base = means.idxmax(), (base.idxmax() if len(base) else None)
        row = {"target": t, "n_labeled": int(n), "seeds": int(len(sel)),
               "selected_auroc": float(sel["auroc"].mean()), "selected_ece": float(sel["ece"].mean()) if "ece" in sel else None,
               "oracle": oracle, "oracle_auroc": float(means.max()),
               "best_baseline": best_base, "best_baseline_auroc": float(base.max()) if len(base) else None,
               "picked_with_test_labels": ["oracle", "oracle_auroc", "best_baseline", "best_baseline_auroc"],
               "chosen": sel["chosen"].value_counts().to_dict() if "chosen" in sel else {}}
        if "ece_uncalibrated" in sel and sel["ece_uncalibrated"].notna().any():
            row["selected_ece_uncalibrated"] = float(sel["ece_uncalibrated"].mean())
        for ref, key in ((best_base, "vs_best_baseline"), (oracle, "vs_oracle")):
            if ref is None:
                continue
            r = cands[cands["method"] == ref].set_index("seed")["auroc"]
            d = (sel["auroc"] - r).dropna()
            row[key] = {"mean_delta": float(d.mean()), "win_rate": float((d > 0).mean()), "ties": float((d == 0).mean())}
        out.append(row)
    return out


def subgroup_table(predictions: list[dict], columns: list[str], numeric: list[str]) -> pd.DataFrame:
    """Selected-model metrics per subgroup at each target (largest budget), mean over seeds with a
    their range over seeds (a spread, not a CI: every seed re-splits the same patients); numeric
    columns are cut into tertiles of the target's values."""

    rows = []
    sel = [p for p in predictions if p["method"] == "selected" and p.get("subgroups") is not None]
    if not sel:
        return pd.DataFrame()
    for target in dict.fromkeys(p["target"] for p in sel):
        ps = [p for p in sel if p["target"] == target]
        top = max(p["n_labeled"] for p in ps)
        ps = [p for p in ps if p["n_labeled"] == top]
        allsub = pd.concat([p["subgroups"] for p in ps])
        for col in columns:
            if col in numeric and allsub[col].nunique() > 5:
                # open outer bins: the 0 and 1 quantiles would print one patient's value
                edges = np.unique([-np.inf, *np.nanquantile(allsub[col].to_numpy(float),
                                                            [1 / 3, 2 / 3]), np.inf])
            else:
                edges = None
            per_level: dict[str, list] = {}
            for p in ps:
                vals = p["subgroups"][col]
                if edges is not None:
                    lv = pd.cut(vals, edges, include_lowest=True).astype(str)
                else:
                    lv = vals.map(lambda v: "missing" if pd.isna(v) else (str(int(v)) if isinstance(v, float) and float(v).is_integer() else str(v)))
                proba = p["proba"][:, 1] if p["proba"].ndim == 2 else p["proba"]
                for level in lv.unique():
                    m = (lv == level).to_numpy()
                    if m.sum() >= 5 and len(np.unique(p["y"][m])) == 2:
                        s = score(p["y"][m], proba[m])
                        per_level.setdefault(level, []).append((s["auroc"], s["brier"], int(m.sum())))
            for level, vals in per_level.items():
                a = np.array([v[0] for v in vals])

                rows.append({"target": target, "n_labeled": top, "column": col, "level": level, "seeds": len(a),
                             "n_per_seed": float(np.mean([v[2] for v in vals])), "auroc": float(a.mean()),
                             "spread_low": float(a.min()), "spread_high": float(a.max()),
                             "brier": float(np.mean([v[1] for v in vals]))})
    df = pd.DataFrame(rows)
    if len(df):
        df["largest_gap"] = False
        for (t, c), g in df.groupby(["target", "column"]):
            if len(g) > 1:
                df.loc[g["auroc"].idxmin(), "largest_gap"] = (g["auroc"].max() - g["auroc"].min()) >= 0.05
    return df


def recommend(result, target: str) -> dict[str, Any]:
    """Which candidate to use at ``target``, with the evidence behind it."""
    sels = [s for s in result.selections if s["target"] == target]
    if not sels:
        return {}
    top = max(s["n_labeled"] for s in sels)
    at_top = [s for s in sels if s["n_labeled"] == top]
    counts = Counter(s["chosen"] for s in at_top)
    chosen, n_chosen = counts.most_common(1)[0]
    df = result.frame()
    g = df[(df["target"] == target) & (df["n_labeled"] == top)]
    sel = g[g["method"] == "selected"]
    base = g[g["family"] == "baseline"].groupby("method")["auroc"].mean()
    cand = g[g["method"] != "selected"].groupby("method")["auroc"].mean()
    return {
        "target": target,
        "n_labeled": int(top),
        "candidate": chosen,
        "times_chosen": int(n_chosen),
        "seeds": len(at_top),
        "choices": dict(counts),
        "criterion": Counter(s["criterion"] for s in at_top).most_common(1)[0][0],
        "selected_auroc": float(sel["auroc"].mean()) if len(sel) else None,
        "best_baseline": base.idxmax() if len(base) else None,
        "best_baseline_auroc": float(base.max()) if len(base) else None,
        "oracle": cand.idxmax() if len(cand) else None,
        "oracle_auroc": float(cand.max()) if len(cand) else None,
        "picked_with_test_labels": ["best_baseline", "best_baseline_auroc", "oracle", "oracle_auroc"],
        "adapts": bool(next(c for c in expand_candidates([chosen.split("[")[0]])).family != "baseline"),
    }


def finalise(result) -> dict[str, FinalModel]:
    """Compute, once, the selection summary, the subgroup table and the final model of every
    target; store them on ``result`` (``selection_summary``, ``subgroups``, ``finals``) and
    return the finals."""
    from .run import targets_of

    result.selection_summary = selection_summary(result.records)
    ds = result.dataset
    result.subgroups = subgroup_table(result.predictions, ds.subgroup_columns(), ds.numeric)
    finals = {}
    for t in targets_of(result.study):
        fm = _final_model(result, t)
        if fm is not None:
            finals[t] = fm
    result.finals = finals
    return finals


def _training_description(unit: dict, ds, n_labeled: int, calibration: str) -> dict[str, Any]:
    """What the fit used, from the run's own bookkeeping (never from the budget alone)."""
    uses = unit["uses_target"]
    target_labelled = n_labeled if uses in ("labelled", "both") else 0
    target_unlabelled = unit["n_pool"] if uses in ("unlabelled", "both") else 0
    cal = {"none": "none",
           "prior_shift": f"class prior re-weighted to the target prior estimated from {unit['n_pool']} unlabelled "
                          "target rows",
           }.get(calibration, f"{calibration} recalibration on out-of-fold predictions for the {n_labeled} "
                              "labelled target rows")
    return {
        "source_rows": dict(unit["source_rows"]),
        "target_labelled_rows": int(target_labelled),
        "target_unlabelled_rows": int(target_unlabelled),
        "uses_target": uses,
        "calibration": calibration,
        "calibration_fitted_on": cal,
        # labels read by the fit or by the recalibration (a label-free model can be recalibrated)
        "target_labels_read": int(n_labeled if target_labelled or calibration in ("intercept", "platt", "isotonic")
                                  else 0),
        "preprocessing_fitted_on": f"source rows and the {unit['n_pool']} target pool rows (features only)",
        "reference_score": ds.reference_score if unit["uses_reference"] else None,
        "seed": int(unit["seed"]),
    }


def _training_text(tr: dict, target: str) -> str:
    """One sentence for the card and the report, generated from :func:`_training_description`."""
    src = ", ".join(f"{n} {s}" for s, n in tr["source_rows"].items())
    parts = [f"fitted on {sum(tr['source_rows'].values())} source rows ({src})"]
    if tr["target_labelled_rows"]:
        parts.append(f"{tr['target_labelled_rows']} labelled {target} rows")
    if tr["target_unlabelled_rows"]:
        parts.append(f"the features of {tr['target_unlabelled_rows']} unlabelled {target} rows")
    text = " plus ".join(parts)
    if tr["uses_target"] == "none":
        text += f"; the model itself reads no {target} data"
    if tr["reference_score"]:
        text += f"; it takes the existing score `{tr['reference_score']}` as an input"
    text += f"; calibration: {tr['calibration_fitted_on']}"
    return text + "."


def _final_model(result, target: str) -> FinalModel | None:
    rec = recommend(result, target)
    if not rec:
        return None
    units = [u for u in result.shipped if u["target"] == target and u["candidate"] == rec["candidate"]
             and u["n_labeled"] == rec["n_labeled"]]
    if not units:
        return None
    unit = min(units, key=lambda u: u["seed"])
    ds = result.dataset
    cand = next(c for c in expand_candidates([rec["candidate"].split("[")[0]], grid=True) if c.name == rec["candidate"])
    inputs = list(ds.features) + ([ds.reference_score] if unit["uses_reference"] else [])
    ref_input = None
    if unit["uses_reference"]:
        ref_input = {"name": ds.reference_score, "range": [0.0, 1.0],
                     "meaning": f"the existing clinical score '{ds.reference_score}' as a predicted probability "
                                f"of {ds.label} (from 0 to 1); required: this model recalibrates it"}
    training = _training_description(unit, ds, rec["n_labeled"], unit["calibration"])
    training["text"] = _training_text(training, target)
    fit_pos = np.flatnonzero(ds.frame[ds.domain].astype(str).isin(result.study.transfer.sources).to_numpy())
    if training["target_unlabelled_rows"]:
        fit_pos = np.r_[fit_pos, unit["pool_pos"]]
    elif training["target_labelled_rows"]:
        fit_pos = np.r_[fit_pos, unit["labelled_pos"]]
    fm = FinalModel(
        target=target, candidate=cand.name, method=cand.method, family=cand.family, n_labeled=int(rec["n_labeled"]),
        seed=int(unit["seed"]), preprocessor=unit["preprocessor"], model=unit["model"], inputs=inputs,
        reference_input=ref_input, calibration=unit["calibration"], training=training,
        training_frame=ds.frame.iloc[fit_pos], eval_positions=np.asarray(unit["eval_pos"]),
        evaluation={}, seed_spread=_seed_spread(result, target, rec["n_labeled"]), calibration_table=[],
        evidence=rec)
    # Evaluate exactly this object on its held-out rows (the run's record must agree with it).
    rows = ds.frame.iloc[fm.eval_positions]
    y = rows[ds.label].to_numpy().astype(int)
    if ds.n_classes == 2:
        p = fm.predict_risk(rows)
        fm.evaluation = target_sample_ci(y, p, random_state=fm.seed)
        fm.calibration_table = calibration_table(y, p)
    else:  # multi-class: the point metrics (no target-sample interval yet)
        fm.evaluation = {k: {"value": v, "n": int(len(y))}
                         for k, v in score(y, fm.predict_proba(rows), ds.n_classes).items()}
    fm.evaluation["rows"] = (f"{len(y)} held-out {target} test rows of seed {fm.seed} "
                             "(no fitting, selection or calibration step saw them)")
    fm.evaluation["run_record"] = {k: unit["record"].get(k) for k in _metric_keys(fm)}
    if ds.n_classes == 2:
        fm.importance = _importance(fm, ds, result.study.transfer.sources, rows)
        fm.relations = _relations(ds, result.study.transfer.sources, rows)
    return fm


def _seed_spread(result, target: str, n_labeled: int) -> dict[str, Any]:
    """The selection procedure's test metrics over seeds (splits): a spread, not an interval."""
    df = result.frame()
    sel = df[(df["method"] == "selected") & (df["target"] == target) & (df["n_labeled"] == n_labeled)]
    out: dict[str, Any] = {"seeds": int(len(sel)),
                           "meaning": "the selection procedure re-run on each split of the same target patients: how "
                                      "much the result moves with the split (not a confidence interval)"}
    for m in ("auroc", "brier", "ece"):
        if m in sel and sel[m].notna().any():
            v = sel[m].dropna()
            out[m] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
                      "min": float(v.min()), "max": float(v.max())}
    return out


def calibration_table(y, p, n_bins: int = 5) -> list[dict]:
    """Observed rate per predicted-risk bin with a Wilson 95% interval (each patient once): what
    the service shows beside a prediction."""
    y, p = np.asarray(y).astype(int), np.asarray(p, float)
    edges = np.linspace(0, 1, n_bins + 1)
    out, z = [], 1.96
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (p >= lo) & ((p < hi) if hi < 1 else (p <= hi))
        n = int(m.sum())
        if n == 0:
            continue
        phat = float(y[m].mean())
        centre = (phat + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(phat * (1 - phat) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        out.append({"lo": float(lo), "hi": float(hi), "observed": phat, "n": n,
                    "ci": [float(centre - half), float(centre + half)]})
    return out


def _metric_keys(final: FinalModel) -> list[str]:
    return [k for k, v in final.evaluation.items() if isinstance(v, dict) and "value" in v]


def deployment_check(final: FinalModel, bundle_dir, dataset) -> dict[str, Any]:
    """Load the written bundle through the service's loader, score it on the final model's
    held-out rows and compare with the reported AUROC / Brier / ECE (tolerance 1e-9)."""
    from ..bundle import load_bundle

    b = load_bundle(bundle_dir)
    rows = dataset.frame.iloc[final.eval_positions]
    y = rows[dataset.label].to_numpy().astype(int)
    got = score(y, b.predict_proba(rows), dataset.n_classes)
    want = {k: final.evaluation[k]["value"] for k in _metric_keys(final)}
    diff = max(abs(got[k] - want[k]) for k in want)
    return {"target": final.target, "model_version": b.model_version, "n_rows": int(len(y)), "seed": final.seed,
            "bundle": {k: got[k] for k in want}, "reported": want, "max_abs_difference": float(diff),
            "tolerance": DEPLOYMENT_TOLERANCE, "passed": bool(diff <= DEPLOYMENT_TOLERANCE)}


def _importance(final: FinalModel, ds, sources, test: pd.DataFrame, n_repeats: int = 5,
                max_rows: int = 20_000) -> pd.DataFrame:
    """Permutation importance: mean AUROC drop when one input is shuffled (on at most
    ``max_rows`` rows per site; rows without a required reference score are left out)."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(final.seed)
    src = ds.frame[ds.frame[ds.domain].astype(str).isin(sources)]
    rows = {}
    for site, frame in (("source", src), ("target", test)):
        if final.reference_input is not None:
            frame = frame[frame[final.reference_input["name"]].notna()]
        if (keep := uniform_rows(len(frame), max_rows, rng)) is not None:  # a sample keeps it seconds
            frame = frame.iloc[keep]
        y = frame[ds.label].to_numpy().astype(int)
        if len(np.unique(y)) < 2:
            continue
        base = roc_auc_score(y, final.predict_risk(frame))
        drops = {}
        for feat in final.inputs:
            d = []
            for _ in range(n_repeats):
                shuffled = frame[final.inputs].copy()
                shuffled[feat] = rng.permutation(shuffled[feat].to_numpy())
                d.append(base - roc_auc_score(y, final.predict_risk(shuffled)))
            drops[feat] = float(np.mean(d))
        rows[site] = drops
    return pd.DataFrame(rows)


def _univariate_auroc(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    from ..evaluation.metrics import _auroc_rows

    out = np.full(X.shape[1], np.nan)
    if len(np.unique(y)) < 2:
        return out
    for j in range(X.shape[1]):
        col = X[:, j]
        ok = np.isfinite(col)
        if ok.sum() > 5 and len(np.unique(y[ok])) == 2:
            out[j] = _auroc_rows(y[ok][None].astype(int), col[ok][None])[0]
    return out


def _relations(ds, sources, test: pd.DataFrame) -> pd.DataFrame:
    """Univariate AUROC of each numeric feature for the outcome, at the source and the target:
    a relation that flips or fades between sites is one a transferred model gets wrong."""
    src = ds.frame[ds.frame[ds.domain].astype(str).isin(sources)]
    out = {}
    for name, frame in (("source", src), ("target", test)):
        out[name] = _univariate_auroc(frame[ds.numeric].to_numpy(float), frame[ds.label].to_numpy().astype(int))
    df = pd.DataFrame(out, index=ds.numeric)
    df["change"] = df["target"] - df["source"]
    return df.reindex(df["change"].abs().sort_values(ascending=False).index)
