"""Bundles of survival and regression models: the same folder, manifest and checks as a
classification bundle (:mod:`._write`, :mod:`._load`), with the model as plain JSON.

A shipped survival model is a proportional-hazards model on the preprocessed features:
``S(t | x) = S0(t) ** exp(b . x)``; a shipped regression model is ``a + b . x`` (on the fitted
scale, with a prediction interval from held-out target residuals). Both are read off the fitted
estimator by probing it at 0 and at each unit vector, then checked to reproduce its
predictions on the training rows (to 1e-6) before anything is written: a model that is not of
that form (boosted trees) is not shipped; the best such candidate by the selection's criterion
is, and the model card says so.

Layout of ``OUT/bundle/``: ``preprocessor.skops``, ``model.json``, ``schema.json``,
``training.json``, ``metrics.json``, ``reference.json``, ``model_card.md``, ``manifest.json``.

Example
-------
>>> b = load_outcome_bundle("out/bundle")                        # doctest: +SKIP
>>> b.predict_outcome([{"age": 70, "heartrate": 120}])[0]["risk"]  # doctest: +SKIP
{'7': 0.08, '14': 0.15}
"""

from __future__ import annotations

import collections
import datetime as _dt
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..reports._io import replace_path
from ._load import FORMAT, FORMAT_VERSION, MANIFEST, Bundle, BundleError, _parse_json, _skops_load, _verify, \
    sha256_file, verify_bundle
from ._reference import build_reference
from .._json import jsonable as _clean_json
from ._write import _dump_json, _dump_skops, _input_features, _schema

__all__ = ["write_outcome_bundle", "load_outcome_bundle", "OutcomeBundle", "linear_export", "is_outcome_bundle"]

INTERVAL_LEVEL = 0.9


def linear_export(est, kind: str, X: np.ndarray, sample_domain=None) -> dict | None:
    """The model as JSON numbers if it is linear on the rows it will see (target rows), else None.

    Survival: ``lp(x) = b0 + b . x`` and the survival of ``x = 0`` as ``baseline_survival`` on
    ``times``; regression: ``b0 + b . x``.
    """
    p = X.shape[1]
    probe = np.vstack([np.zeros(p), np.eye(p)])
    dom = -np.ones(len(probe), int)
    f = est.predict(probe, sample_domain=dom)
    b0, b = float(f[0]), f[1:] - f[0]
    dom_x = -np.ones(len(X), int)
    if not np.allclose(b0 + X @ b, est.predict(X, sample_domain=dom_x), rtol=1e-6, atol=1e-6):
        return None
    out = {"intercept": b0, "coef": b.tolist()}
    if kind == "survival":
        times = np.asarray(getattr(est.est_, "unique_times_", getattr(getattr(est, "baseline_", None), "unique_times_", [])), float)
        if len(times) == 0:
            return None
        S0 = est.predict_survival(np.zeros((1, p)), times, sample_domain=-np.ones(1, int))[0]
        S = est.predict_survival(X[:50], times, sample_domain=dom_x[:50])
        lp = X[:50] @ b
        if not np.allclose(S0[None, :] ** np.exp(lp)[:, None], S, atol=1e-6):
            return None  # not proportional hazards in this linear predictor
        out.update(times=times.tolist(), baseline_survival=S0.tolist())
    return out


@dataclass
class OutcomeBundle(Bundle):
    """A loaded survival / regression bundle (``model`` is the JSON of :func:`linear_export`)."""

    def _lp(self, records) -> np.ndarray:
        X = self.transform(records)
        return float(self.model["intercept"]) + X @ np.asarray(self.model["coef"], float)

    def predict_outcome(self, records) -> list[dict]:
        """Per record: survival -> risk at each horizon and the survival curve; regression ->
        the prediction and its interval, on the outcome's original scale."""
        m = self.model
        lp = self._lp(records)
        if m["kind"] == "survival":
            times = np.asarray(m["times"], float)
            S0 = np.asarray(m["baseline_survival"], float)
            out = []
            for v in lp:
                S = S0 ** np.exp(v)
                at = lambda h: float(S[np.searchsorted(times, h, side="right") - 1]) if h >= times[0] else 1.0  # noqa: E731
                out.append({"risk": {f"{h:g}": 1.0 - at(h) for h in m["horizons"]},
                            "curve": {"times": m["curve_times"], "survival": [at(t) for t in m["curve_times"]]},
                            "time_unit": m["time_unit"]})
            return out
        inv = {"none": lambda z: z, "log": np.exp, "log1p": np.expm1}[m["transform"]]
        q = float(m["interval_halfwidth"])
        return [{"prediction": float(inv(v)), "interval": [float(inv(v - q)), float(inv(v + q))],
                 "interval_level": m["interval_level"]} for v in lp]


def is_outcome_bundle(path) -> bool:
    p = Path(path) / MANIFEST
    try:
        return json.loads(p.read_text(encoding="utf-8")).get("outcome") in ("survival", "regression")
    except (OSError, ValueError, AttributeError):
        return False


def load_outcome_bundle(path, *, trust=None, allow_unsigned: bool = False) -> OutcomeBundle:
    """Verify (manifest, digests, signature, versions) and load a survival / regression bundle.

    The same verifier as :func:`~._load.load_bundle`: each file is read once, and the bytes
    that were hashed are the bytes that are parsed."""
    path = Path(path)
    manifest, files = _verify(path, trust, allow_unsigned)
    where = f"bundle {path}"
    if manifest.get("outcome") not in ("survival", "regression"):
        raise BundleError("is not a survival or regression bundle", where=where, fix="load it with load_bundle()")
    for need in ("model.json", "schema.json", "metrics.json", "reference.json", "training.json",
                 "model_card.md", "preprocessor.skops"):
        if need not in files:
            raise BundleError(f"lacks {need}", where=where, fix="write the bundle again")
    model = _parse_json(files["model.json"], "model.json", where)
    if not isinstance(model, dict) or model.get("kind") != manifest["outcome"]:
        raise BundleError("model.json does not describe the bundle's outcome", where=where,
                          fix="write the bundle again")
    try:
        card = files["model_card.md"].decode("utf-8")
    except UnicodeDecodeError:
        raise BundleError("model_card.md is not UTF-8 text", where=where, fix="write the bundle again") from None
    return OutcomeBundle(path=path, manifest=manifest, schema=_parse_json(files["schema.json"], "schema.json", where),
                         card=card,
                         metrics=_parse_json(files["metrics.json"], "metrics.json", where),
                         reference=_parse_json(files["reference.json"], "reference.json", where),
                         training=_parse_json(files["training.json"], "training.json", where),
                         preprocessor=_skops_load(files["preprocessor.skops"], "preprocessor.skops", where),
                         model=model)


def _final_fit(result, target, method):
    """``method`` refitted on every source row and the target's rows, the top budget of them
    labelled (the label draw of seed 0 over the whole target), preprocessing on the same rows."""
    from ..data.outcomes import masked_survival, survival_target
    from ..data.preprocess import fit_preprocessor
    from ..data.splits import label_budget
    from ..methods import get_method, make_method
    from ..study.outcome import _strata

    ds, oc, tr = result.dataset, result.outcome, result.study.transfer
    dom = ds.frame[ds.domain].astype(str)
    src, tgt = ds.frame[dom.isin(tr.sources)], ds.frame[dom == target]
    n_lab = min(max(tr.labeled_target), len(tgt))
    lab = np.zeros(len(tgt), bool)
    lab[label_budget(_strata(oc, tgt), np.arange(len(tgt)), n_lab, seed=0)] = True
    rows = pd.concat([src, tgt])
    pre = fit_preprocessor(ds.numeric, ds.categorical, rows[ds.features])
    X = pre.transform(rows[ds.features])
    ids = {s: i + 1 for i, s in enumerate(tr.sources)}
    sd = np.r_[dom[dom.isin(tr.sources)].map(ids).to_numpy().astype(int), -np.ones(len(tgt), int)]
    if oc.kind == "survival":
        y = survival_target(rows, time=oc.time, event=oc.event)
        y = masked_survival(y, np.r_[np.ones(len(src), bool), lab])
    else:
        y = oc.forward(rows[oc.label].to_numpy(float))
        y[len(src):][~lab] = np.nan
    if get_method(method).uses_reference:
        return None  # needs the score as an input: not shipped (see module docstring)
    est = make_method(method, random_state=0).fit(X, y, sample_domain=sd)
    return est, pre, X[len(src):], rows, int(lab.sum())


def _choice_order(result, target) -> list[str]:
    """Methods by how often selection chose them at the top budget, then by their selection
    score averaged over seeds (every runnable candidate has one)."""
    sels = [s for s in result.selections if s["target"] == target]
    top = max(s["n_labeled"] for s in sels)
    sels = [s for s in sels if s["n_labeled"] == top]
    votes = collections.Counter(s["chosen"] for s in sels)
    score = collections.defaultdict(list)
    for s in sels:
        for k, v in s["scores"].items():
            if np.isfinite(v):
                score[k].append(v)
    return sorted(score, key=lambda k: (-votes.get(k, 0), -np.mean(score[k])))


def _interval_halfwidth(result, target) -> float:
    """90% quantile of |y - prediction| of the selected model on the held-out target test rows
    (fitted scale): split-conformal on rows no fit saw."""
    res = [np.abs(np.asarray(p["y"], float) - np.asarray(p["pred"], float)) for p in result.predictions
           if p["method"] == "selected" and p["target"] == target]
    if not res:
        return float("nan")
    return float(np.quantile(np.concatenate(res), INTERVAL_LEVEL))


def write_outcome_bundle(result, out_dir, target: str | None = None) -> Path:
    """Write the recommended survival / regression model of ``target`` (default: the first)."""
    from .. import __version__

    oc = result.outcome
    target = target or (result.study.transfer.target if isinstance(result.study.transfer.target, str)
                        else result.study.transfer.target[0])
    order = _choice_order(result, target)
    chosen = order[0] if order else None
    shipped = export = fit = None
    for m in order:
        fit = _final_fit(result, target, m)
        if fit is None:
            continue
        export = linear_export(fit[0], oc.kind, fit[2])
        if export is not None:
            shipped = m
            break
    if shipped is None:
        raise BundleError(f"none of the selected candidates for '{target}' is a linear model that can be shipped as JSON",
                          where="write_outcome_bundle", fix="add a Cox / ridge method to [transfer] methods")
    est, pre, Xt, rows, n_lab = fit
    model = {"kind": oc.kind, "method": shipped, **export}
    if oc.kind == "survival":
        grid = np.unique(np.r_[np.linspace(0, max(oc.horizons) * 1.5, 31)[1:], oc.horizons])
        model.update(horizons=oc.horizons, time_unit=oc.time_unit, curve_times=grid.tolist())
    else:
        model.update(transform=oc.transform, interval_level=INTERVAL_LEVEL,
                     interval_halfwidth=_interval_halfwidth(result, target))
    top = max(r["n_labeled"] for r in result.records if r["target"] == target)
    metrics = [r for r in result.records if r["target"] == target and r["n_labeled"] == top
               and r["method"] in ("selected", shipped)]
    metrics = [{k: v for k, v in r.items() if not isinstance(v, (dict, list)) or k == "c_harrell_ci"} for r in metrics]
    features = _input_features(pre)
    specs = _schema(result.dataset, features, pre)
    card = "\n".join([
        f"# Model card: {result.study.study.name} ({oc.kind})", "",
        f"- Outcome: {oc.describe()}",
        f"- Shipped method: `{shipped}`" + (f" (selection chose `{chosen}` most often at n_t = {top}; it is not a "
                                             "linear model and cannot be shipped as JSON)" if shipped != chosen else ""),
        f"- Trained on sources {', '.join(result.study.transfer.sources)} and target {target} "
        f"({n_lab} labelled target rows)",
        "- Metrics: held-out target test rows of the study (selected model and this method at the top budget), "
        "see metrics.json",
        "- Not a medical device; validate locally before use.", ""])
    out_dir = Path(out_dir)
    stage = Path(tempfile.mkdtemp(prefix=".bundle-", dir=out_dir.parent if out_dir.parent.exists() else None))
    try:
        _dump_skops(pre, stage / "preprocessor.skops", "preprocessor")
        _dump_json(stage / "model.json", model)
        _dump_json(stage / "schema.json", {"features": specs, "classes": [], "outcome": oc.kind})
        _dump_json(stage / "training.json", {"method": shipped, "selected": chosen, "sources": result.study.transfer.sources,
                                             "target": target, "n_labelled_target": n_lab, "rows": int(len(rows))})
        _dump_json(stage / "metrics.json", {"records": metrics})
        # per-feature aggregates of the training rows: the service's range flags and drift monitor
        _dump_json(stage / "reference.json", _clean_json(build_reference(rows[features], specs)))
        (stage / "model_card.md").write_text(card, encoding="utf-8")
        files = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in sorted(stage.iterdir())}
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "healthtransfer_version": __version__,
                    "outcome": oc.kind, "model_version": f"{shipped}-{files['model.json']['sha256'][:12]}",
                    "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "files": files}
        _dump_json(stage / MANIFEST, manifest)
        # loaded back, it must give the fitted model's predictions before it is put in place
        b = load_outcome_bundle(stage)
        lp = b._lp(rows.iloc[len(rows) - len(Xt):][features])
        if not np.allclose(lp, est.predict(Xt, sample_domain=-np.ones(len(Xt), int)), atol=1e-6):
            raise BundleError("the written bundle does not reproduce the fitted model", where="write_outcome_bundle")
        replace_path(stage, out_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return out_dir
