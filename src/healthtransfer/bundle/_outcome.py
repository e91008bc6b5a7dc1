"""Bundles of survival and regression models: the same folder, manifest and checks as a
classification bundle (:mod:`._write`, :mod:`._load`), with the model as plain JSON.

A shipped survival model is a proportional-hazards model on the preprocessed features:
``S(t | x) = S0(t) ** exp(b . x)``, or ``S0(t) ** exp(f(x))`` with ``f`` a sum of boosted
regression trees held as node arrays; a shipped regression model is ``a + b . x`` (on the fitted
scale, with a prediction interval from held-out target residuals). Both are read off the fitted
estimator by probing it at 0 and at each unit vector, then checked to reproduce its
predictions on the target rows (to 1e-6). The bundle holds one target's final model
(:mod:`healthtransfer.study.outcome_final`): exactly the fitted object whose numbers the report
prints, and the deployment check proves the written folder reproduces it to 1e-9.

Layout of ``OUT/bundle/<target>/``: ``preprocessor.skops``, ``model.json``, ``schema.json``,
``training.json``, ``metrics.json``, ``reference.json``, ``model_card.md``, ``manifest.json``.

Example
-------
>>> b = load_outcome_bundle("out/bundle/South")                   # doctest: +SKIP
>>> b.predict_outcome([{"age": 70, "heartrate": 120}])[0]["risk"]  # doctest: +SKIP
{'7': 0.08, '14': 0.15}
"""

from __future__ import annotations

import datetime as _dt
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..reports._io import replace_path
from ._load import FORMAT, FORMAT_VERSION, MANIFEST, Bundle, BundleError, _parse_json, _skops_load, _verify, \
    sha256_file, verify_bundle
from ._reference import build_reference
from .._json import jsonable as _clean_json
from ._write import _dump_json, _dump_skops, _input_features, _schema

__all__ = ["write_outcome_bundle", "load_outcome_bundle", "OutcomeBundle", "linear_export", "tree_export",
           "export_model", "is_outcome_bundle"]

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


def tree_export(est, kind: str, X: np.ndarray) -> dict | None:
    """A boosted Cox model (scikit-survival's ``GradientBoostingSurvivalAnalysis``, coxph loss) as
    JSON numbers: every regression tree's nodes, the learning rate and the Breslow baseline
    survival; None for anything else or if the numbers do not reproduce it on ``X`` (1e-12)."""
    inner = getattr(est, "est_", None)
    if kind != "survival" or type(inner).__name__ != "GradientBoostingSurvivalAnalysis" \
            or getattr(inner, "init_", None) != "zero" or getattr(inner, "dropout_rate", 0) or \
            np.asarray(est._features(X[:2])).shape != X[:2].shape or not np.array_equal(est._features(X[:2]), X[:2]):
        return None
    trees = []
    for stage in inner.estimators_[:, 0]:
        t = stage.tree_
        trees.append({"left": t.children_left.tolist(), "right": t.children_right.tolist(),
                      "feature": t.feature.tolist(), "threshold": t.threshold.tolist(),
                      "value": t.value[:, 0, 0].tolist()})
    base = inner._get_baseline_model()
    out = {"form": "trees", "intercept": 0.0, "coef": [], "n_features": int(X.shape[1]),
           "learning_rate": float(inner.learning_rate), "trees": trees,
           "times": base.unique_times_.tolist(), "baseline_survival": base.baseline_survival_.y.tolist()}
    dom = -np.ones(len(X), int)
    if not np.allclose(_tree_risk(out, X), est.predict(X, sample_domain=dom), rtol=0, atol=1e-12):
        return None
    times = np.asarray(out["times"])
    S = np.asarray(out["baseline_survival"])[None, :] ** np.exp(_tree_risk(out, X[:50]))[:, None]
    if not np.allclose(S, est.predict_survival(X[:50], times, sample_domain=dom[:50]), rtol=0, atol=1e-12):
        return None
    return out


def export_model(est, kind: str, X: np.ndarray) -> dict | None:
    """The model as JSON numbers: linear (:func:`linear_export`) or boosted trees
    (:func:`tree_export`); None if it is neither."""
    return linear_export(est, kind, X) or tree_export(est, kind, X)


def _tree_risk(model: dict, X: np.ndarray) -> np.ndarray:
    """Sum of the trees' leaf values times the learning rate, stage by stage in the order
    scikit-learn adds them; splits compare float32 inputs as scikit-learn's trees do."""
    Xf = np.asarray(X, float).astype(np.float32).astype(np.float64)
    out = np.zeros(len(Xf))
    lr = float(model["learning_rate"])
    rows = np.arange(len(Xf))
    for t in model["trees"]:
        left, right = np.asarray(t["left"]), np.asarray(t["right"])
        feat, thr, val = np.asarray(t["feature"]), np.asarray(t["threshold"], float), np.asarray(t["value"], float)
        node = np.zeros(len(Xf), int)
        while True:
            inner = left[node] != -1
            if not inner.any():
                break
            i = rows[inner]
            n = node[inner]
            go_left = Xf[i, feat[n]] <= thr[n]
            node[inner] = np.where(go_left, left[n], right[n])
        out += lr * val[node]
    return out


def _check_trees(model: dict, n_features: int, where: str) -> None:
    """An untrusted tree model: every array the same length, children after their parent (so
    every walk ends), features in range. Raises BundleError otherwise."""
    trees = model.get("trees")
    if not isinstance(trees, list) or not trees or len(trees) > 10_000:
        raise BundleError("model.json holds no valid list of trees", where=where, fix="write the bundle again")
    try:
        for t in trees:
            left, right = np.asarray(t["left"], int), np.asarray(t["right"], int)
            feat = np.asarray(t["feature"], int)
            n = len(left)
            if not (0 < n <= 100_000 and len(right) == len(feat) == len(t["threshold"]) == len(t["value"]) == n):
                raise ValueError
            idx = np.arange(n)
            leaf = left == -1
            if not (np.all((right == -1) == leaf) and np.all(left[~leaf] > idx[~leaf]) and np.all(right[~leaf] > idx[~leaf])
                    and np.all(left < n) and np.all(right < n) and np.all((feat[~leaf] >= 0) & (feat[~leaf] < n_features))):
                raise ValueError
            np.asarray(t["threshold"], float), np.asarray(t["value"], float)
        float(model["learning_rate"])
    except (ValueError, TypeError, KeyError):
        raise BundleError("model.json's trees are malformed", where=where, fix="write the bundle again") from None


@dataclass
class OutcomeBundle(Bundle):
    """A loaded survival / regression bundle (``model`` is the JSON of :func:`linear_export`)."""

    def risk_score(self, records) -> np.ndarray:
        """The linear predictor ``b0 + b . x`` (survival: the risk score; regression: the
        prediction on the fitted scale)."""
        X = self.transform(records)
        if self.model.get("form") == "trees":
            return _tree_risk(self.model, X)
        return float(self.model["intercept"]) + X @ np.asarray(self.model["coef"], float)

    _lp = risk_score

    def survival(self, records, times) -> np.ndarray:
        """Survival probabilities, shape (n_records, len(times)): ``S0(t) ** exp(b . x)``
        (``S0`` is the survival at x = 0, whose risk score is the intercept)."""
        m = self.model
        grid = np.asarray(m["times"], float)
        S0 = np.asarray(m["baseline_survival"], float)
        idx = np.searchsorted(grid, np.asarray(times, float), side="right") - 1
        out = np.ones((len(self.frame(records)), len(idx)))
        rel = self.risk_score(records) - float(m["intercept"])
        ok = idx >= 0
        out[:, ok] = S0[idx[ok]][None, :] ** np.exp(rel)[:, None]
        return out

    def predict_outcome(self, records) -> list[dict]:
        """Per record: survival -> risk at each horizon and the survival curve; regression ->
        the prediction and its interval, on the outcome's original scale."""
        m = self.model
        if m["kind"] == "survival":
            hz = [float(h) for h in m["horizons"]]
            S = self.survival(records, [*hz, *m["curve_times"]])
            return [{"risk": {horizon_key(h): 1.0 - float(s[i]) for i, h in enumerate(hz)},
                     "curve": {"times": m["curve_times"], "survival": [float(v) for v in s[len(hz):]]},
                     "time_unit": m["time_unit"]} for s in S]
        lp = self.risk_score(records)
        inv = {"none": lambda z: z, "log": np.exp, "log1p": np.expm1}[m["transform"]]
        q = float(m["interval_halfwidth"])
        return [{"prediction": float(inv(v)), "interval": [float(inv(v - q)), float(inv(v + q))],
                 "interval_level": m["interval_level"]} for v in lp]


def horizon_key(h: float) -> str:
    """The key of a horizon's risk: ``"7"`` for 7.0, exact for any float (``:g`` alone keeps six
    digits, so 1234567 and 1234568 would share a key)."""
    short = f"{h:g}"
    return short if float(short) == h else repr(float(h))


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
    if model.get("form") == "trees":
        _check_trees(model, int(model.get("n_features", 0)), where)
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


def _interval_halfwidth(fm, result) -> float:
    """90% quantile of |y - prediction| of the final model on its held-out target rows (fitted
    scale): split-conformal on rows no fit saw."""
    from ..study.outcome import outcome_values

    rows = result.dataset.frame.iloc[fm.eval_positions]
    return float(np.quantile(np.abs(outcome_values(result.outcome, rows) - fm.predict(rows)), INTERVAL_LEVEL))


def write_outcome_bundle(fm, result, out_dir) -> Path:
    """Write the final survival / regression model ``fm`` of one target
    (:class:`~healthtransfer.study.outcome_final.FinalOutcomeModel`) into ``out_dir``: exactly
    that fitted object, as JSON numbers. :func:`~healthtransfer.study.outcome_final.outcome_deployment_check`
    then proves the written folder reproduces it."""
    from .. import __version__

    oc = result.outcome
    pre, target = fm.preprocessor, fm.target
    model = {"kind": oc.kind, "method": fm.method, **fm.export}
    if oc.kind == "survival":
        grid = np.unique(np.r_[np.linspace(0, max(oc.horizons) * 1.5, 31)[1:], oc.horizons])
        model.update(horizons=oc.horizons, time_unit=oc.time_unit, curve_times=grid.tolist())
    else:
        model.update(transform=oc.transform, interval_level=INTERVAL_LEVEL,
                     interval_halfwidth=_interval_halfwidth(fm, result))
    features = _input_features(pre)
    specs = _schema(result.dataset, features, pre)
    if fm.reference_input is not None:  # the score the model reads: required, a probability
        ref = fm.reference_input
        specs[features.index(ref["name"])] = {
            "name": ref["name"], "kind": "numeric", "unit": "probability", "range": [float(v) for v in ref["range"]],
            "categories": None, "description": ref["meaning"], "required": True, "role": "reference_score",
            "numeric_codes": True}
    ds = result.dataset
    dom = ds.frame[ds.domain].astype(str)
    train_rows = ds.frame[dom.isin(result.study.transfer.sources) | (dom == target)]
    tr = fm.training
    card = "\n".join([
        f"# Model card: {result.study.study.name} ({oc.kind}), target {target}", "",
        f"- Outcome: {oc.describe()}",
        f"- Shipped method: `{fm.method}`, fitted in seed {fm.seed} of the study at n_t = {fm.n_labeled}"
        + (f" ({fm.note})" if fm.note else " (the selection's choice)"),
        f"- Trained on {tr['source_rows']} source rows ({', '.join(tr['sources'])}), {tr['target_labelled_rows']} "
        f"labelled and {tr['target_unlabelled_rows']} unlabelled {target} rows; preprocessing fitted on "
        f"{tr['preprocessing_fitted_on']}",
        f"- Metrics (metrics.json): this model on {fm.evaluation['rows']}; the deployment check reproduces them "
        "from this bundle",
        "- Not a medical device; validate locally before use.", ""])
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".bundle-", dir=out_dir.parent))
    try:
        _dump_skops(pre, stage / "preprocessor.skops", "preprocessor")
        _dump_json(stage / "model.json", model)
        # label: the event (survival) or outcome column, for the FHIR / CDS Hooks texts
        _dump_json(stage / "schema.json", {"features": specs, "classes": [], "outcome": oc.kind,
                                           "label": oc.event if oc.kind == "survival" else oc.label})
        _dump_json(stage / "training.json", {"method": fm.method, "selected": fm.selected, "note": fm.note,
                                             "target": target, "n_labeled": fm.n_labeled, **tr})
        _dump_json(stage / "metrics.json", {"target": target, "method": fm.method, "n_labeled": fm.n_labeled,
                                            "overall": _clean_json(fm.evaluation)})
        # per-feature aggregates of the source and target rows: the service's range flags and drift monitor
        _dump_json(stage / "reference.json", _clean_json(build_reference(train_rows[features], specs)))
        (stage / "model_card.md").write_text(card, encoding="utf-8")
        files = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in sorted(stage.iterdir())}
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "healthtransfer_version": __version__,
                    "outcome": oc.kind, "model_version": f"{fm.method}-{files['model.json']['sha256'][:12]}",
                    "written": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "files": files}
        _dump_json(stage / MANIFEST, manifest)
        replace_path(stage, out_dir)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return out_dir
