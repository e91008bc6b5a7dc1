"""A bundle's fitted preprocessing + model as plain numpy array operations.

The scikit-learn path (``Bundle.predict_proba``) builds a pandas frame, runs the
``ColumnTransformer`` (a dozen validated transformers) and then the model, which costs about
30 ms for one record whatever its size. :func:`compile_bundle` reads the fitted parameters
once and returns a :class:`CompiledModel` that does the same arithmetic on a float array
(medians, means, scales, one-hot positions, the model's own imputer; a logistic regression's
coefficients; any other model's ``_predict_proba`` is called on the preprocessed array
directly, skipping re-validation). A study's bundle is covered too: a reference-score model's
:class:`~healthtransfer.study._shipped.ReferenceScoreInput` compiles to the features' blocks
plus ``logit(score)`` as the last column (a missing or out-of-range score is refused exactly as
on the scikit-learn path), and a :class:`~healthtransfer.study._shipped.ShippedModel` to its
estimator's array form followed by its calibration map.

Parity is checked when compiling, not assumed: records drawn from the bundle's training
reference (every category, values across the training range and beyond, missing values) go
through both paths, and a largest probability difference above :data:`PARITY_TOL` makes
:func:`compile_bundle` raise :class:`CompileError` with the reason. Callers (the service) then
keep the full path and log why.

Example
-------
>>> from healthtransfer.bundle import load_bundle          # doctest: +SKIP
>>> compiled = compile_bundle(load_bundle("out/bundle"))   # doctest: +SKIP
>>> compiled.predict_proba_records([{"age": 61.0, "cp": 4}])  # doctest: +SKIP
array([[0.31, 0.69]])
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

__all__ = ["CompileError", "CompiledModel", "compile_bundle", "PARITY_TOL", "parity_records"]

PARITY_TOL = 1e-9


class CompileError(ValueError):
    """A step of the bundle has no array form here; the reason says which."""


def _category_text(v) -> str:
    # the rule of data.preprocess._as_category_text, applied to one value
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "missing"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _to_float(v) -> float:
    if v is None or isinstance(v, (bool, np.bool_)):
        return float(v) if v is not None else math.nan
    try:
        return float(v)
    except (TypeError, ValueError):  # pd.to_numeric(errors="coerce") in Bundle.frame
        return math.nan


def _floats(vals: list) -> np.ndarray:
    """``[_to_float(v) for v in vals]``, in one numpy call when they are plain numbers / None."""
    if all(type(v) is float or type(v) is int or v is None for v in vals):
        return np.array([math.nan if v is None else v for v in vals], dtype=float)
    return np.array([_to_float(v) for v in vals], dtype=float)


def _memo_map(fn, vals: list) -> list:
    """``[fn(v) for v in vals]`` computing ``fn`` once per distinct value (a category column
    repeats a few values)."""
    memo: dict = {}
    out = []
    for v in vals:
        k = (type(v), v)  # by type too: True == 1, yet str(True) != str(1)
        try:
            c = memo[k]
        except KeyError:
            c = memo[k] = fn(v)
        except TypeError:  # unhashable
            c = fn(v)
        out.append(c)
    return out


# -- preprocessing ---------------------------------------------------------------------------
# A block maps the raw float array's columns ``cols`` to output columns; ``width`` says how many.
@dataclass
class _Block:
    cols: np.ndarray
    width: int
    fn: Callable[[np.ndarray], np.ndarray]


def _numeric_chain(trans, where: str):
    """Compile a numeric transformer into ``fn(X) -> array`` (same float operations as sklearn)."""
    from sklearn.impute import MissingIndicator, SimpleImputer
    from sklearn.pipeline import FeatureUnion, Pipeline
    from sklearn.preprocessing import StandardScaler

    if isinstance(trans, Pipeline):
        fns = [_numeric_chain(s, where) for _, s in trans.steps if s != "passthrough"]

        def run(X, fns=fns):
            for f in fns:
                X = f(X)
            return X
        return run
    if isinstance(trans, FeatureUnion):
        if trans.transformer_weights:
            raise CompileError(f"{where}: FeatureUnion with weights")
        fns = [_numeric_chain(s, where) for _, s in trans.transformer_list if s != "drop"]
        return lambda X, fns=fns: np.hstack([f(X) for f in fns])
    if isinstance(trans, SimpleImputer):
        if trans.strategy not in ("median", "mean", "most_frequent", "constant"):
            raise CompileError(f"{where}: SimpleImputer strategy {trans.strategy!r}")
        if not (trans.missing_values is np.nan or (isinstance(trans.missing_values, float)
                                                   and math.isnan(trans.missing_values))):
            raise CompileError(f"{where}: SimpleImputer with missing_values other than NaN")
        stats = np.asarray(trans.statistics_, dtype=float)
        keep = ~np.isnan(stats) if not getattr(trans, "keep_empty_features", False) else None
        ind = (np.asarray(trans.indicator_.features_) if trans.add_indicator
               and trans.indicator_ is not None else None)

        def impute(X, stats=stats, keep=keep, ind=ind):
            filled = np.where(np.isnan(X), stats, X)
            if keep is not None:
                filled = filled[:, keep]
            if ind is not None and len(ind):
                return np.hstack([filled, np.isnan(X[:, ind]).astype(float)])
            return filled
        return impute
    if isinstance(trans, MissingIndicator):
        feats = np.asarray(trans.features_)
        return lambda X, feats=feats: np.isnan(X[:, feats]).astype(float)
    if isinstance(trans, StandardScaler):
        mean = np.asarray(trans.mean_, float) if trans.with_mean else None
        scale = np.asarray(trans.scale_, float) if trans.with_std else None

        def standardise(X, mean=mean, scale=scale):
            if mean is not None:
                X = X - mean
            if scale is not None:
                X = X / scale
            return X
        return standardise
    raise CompileError(f"{where}: step {type(trans).__name__} has no array form")


def _onehot(trans, where: str):
    """Categories per column of a (FunctionTransformer(text) ->) OneHotEncoder pipeline."""
    from sklearn.pipeline import FunctionTransformer, Pipeline
    from sklearn.preprocessing import OneHotEncoder

    from ..data.preprocess import _as_category_text

    steps = [s for _, s in trans.steps] if isinstance(trans, Pipeline) else [trans]
    if len(steps) == 2 and isinstance(steps[0], FunctionTransformer) \
            and steps[0].func is _as_category_text:
        steps = steps[1:]
    if len(steps) != 1 or not isinstance(steps[0], OneHotEncoder):
        raise CompileError(f"{where}: categorical transformer other than text + one-hot")
    enc = steps[0]
    if enc.drop_idx_ is not None or getattr(enc, "_infrequent_enabled", False):
        raise CompileError(f"{where}: one-hot with drop or infrequent categories")
    if enc.handle_unknown != "ignore":
        raise CompileError(f"{where}: one-hot that raises on unknown categories")
    return [[str(c) for c in cats] for cats in enc.categories_]


# -- the model -------------------------------------------------------------------------------
def _model_fn(model) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """``fn(Z) -> proba`` for the fitted model, and a short name of the path taken."""
    from sklearn.linear_model import LogisticRegression

    from ..methods._base import TransferClassifier
    from ..methods.baselines import _Baseline
    from ..study._shipped import ShippedModel

    if isinstance(model, ShippedModel):  # a study's final model: estimator (target rows) + map
        inner, path = _model_fn(model.estimator)
        if model.calibration is None:
            return inner, path
        kind = getattr(model.calibration, "kind", type(model.calibration).__name__)
        return (lambda Z: model.calibrate(inner(Z))), f"{path}, then the {kind} calibration map"
    if not isinstance(model, TransferClassifier):
        if not hasattr(model, "predict_proba"):
            raise CompileError(f"model {type(model).__name__} has no predict_proba")
        return (lambda Z: np.asarray(model.predict_proba(Z), dtype=float)), "model.predict_proba"
    imp = model._imputer
    pre = _numeric_chain(imp, "model imputer") if imp is not None else (lambda Z: Z)
    n_classes = len(model.classes_)
    est = getattr(model, "estimator_", None)
    if isinstance(model, _Baseline) and isinstance(est, LogisticRegression):
        from scipy.special import expit
        from sklearn.utils.extmath import softmax

        coef_t, icpt = np.asarray(est.coef_, float).T, np.asarray(est.intercept_, float)
        cls = np.asarray(est.classes_).astype(int)

        def linear(Z):
            s = pre(Z) @ coef_t + icpt
            if len(cls) <= 2:  # LogisticRegression._predict_proba_lr, binary case
                p = expit(s.ravel())
                p_est = np.stack([1 - p, p], axis=1)
            else:
                p_est = softmax(s, copy=False)
            out = np.zeros((Z.shape[0], n_classes))
            out[:, cls] = p_est
            return out
        return linear, "logistic regression (numpy)"

    if isinstance(model, _Baseline) and type(est).__name__ == "HistGradientBoostingClassifier":
        hgb = _hgb_fn(est)
        cls = np.asarray(est.classes_).astype(int)

        def boosted(Z):
            out = np.zeros((Z.shape[0], n_classes))
            out[:, cls] = hgb(pre(Z))
            return out
        return boosted, "histogram gradient boosting (numpy, all trees at once)"

    def native(Z):
        Zi = pre(Z)
        return np.asarray(model._predict_proba(Zi, -np.ones(Z.shape[0], dtype=int)), dtype=float)
    return native, f"{type(model).__name__}._predict_proba on the compiled preprocessing"


def _hgb_fn(est) -> Callable[[np.ndarray], np.ndarray]:
    """All trees of a fitted HistGradientBoostingClassifier walked at once: the per-tree
    Cython call (~40 us each, 150 trees) dominates a single-row prediction."""
    if getattr(est, "is_categorical_", None) is not None and np.any(est.is_categorical_):
        raise CompileError("gradient boosting with native categorical splits")
    per_iter = est.n_trees_per_iteration_
    feat, thr, left, right, leaf, val, nan_left, roots, out_col = [], [], [], [], [], [], [], [], []
    offset = 0
    for it in est._predictors:
        for k, pred in enumerate(it):
            nd = pred.nodes
            if np.any(nd["is_categorical"]):
                raise CompileError("gradient boosting with native categorical splits")
            feat.append(nd["feature_idx"].astype(np.intp))
            thr.append(nd["num_threshold"].astype(float))
            left.append(nd["left"].astype(np.intp) + offset)
            right.append(nd["right"].astype(np.intp) + offset)
            leaf.append(nd["is_leaf"].astype(bool))
            val.append(nd["value"].astype(float))
            nan_left.append(nd["missing_go_to_left"].astype(bool))
            roots.append(offset)
            out_col.append(k)
            offset += len(nd)
    feat, thr, left, right = map(np.concatenate, (feat, thr, left, right))
    leaf, val, nan_left = map(np.concatenate, (leaf, val, nan_left))
    roots, out_col = np.asarray(roots, np.intp), np.asarray(out_col, np.intp)
    base = np.asarray(est._baseline_prediction, float).reshape(1, -1)
    loss = est._loss

    def predict(Z):
        node = np.broadcast_to(roots, (Z.shape[0], len(roots))).copy()
        rows = np.arange(Z.shape[0])[:, None]
        while True:
            active = ~leaf[node]
            if not active.any():
                break
            x = Z[rows, feat[node]]
            go_left = np.where(np.isnan(x), nan_left[node], x <= thr[node])
            node = np.where(active, np.where(go_left, left[node], right[node]), node)
        leaves = val[node]
        raw = np.repeat(base, Z.shape[0], axis=0)
        for k in range(per_iter):
            raw[:, k] += leaves[:, out_col == k].sum(axis=1)
        return np.asarray(loss.predict_proba(raw), dtype=float)
    return predict


@dataclass
class CompiledModel:
    """Array form of a bundle. Input: records (dicts) or a raw array from :meth:`array`."""

    feature_names: list[str]
    numeric_codes: list[bool]
    cat_index: dict[int, dict[str, int]]
    blocks: list[_Block] = field(repr=False)
    model_fn: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    model_path: str = ""
    parity: float | None = None

    def array(self, records: list[dict]) -> np.ndarray:
        """Records as floats in schema order (NaN = missing; a categorical column holds the
        position of its category in the encoder, -1 for one the encoder never saw)."""
        X = np.empty((len(records), len(self.feature_names)))
        for j, name in enumerate(self.feature_names):
            cmap = self.cat_index.get(j)
            vals = [r.get(name) for r in records]
            if cmap is None:
                X[:, j] = _floats(vals)
            else:
                code = ((lambda v, m=cmap: m.get(_category_text(_to_float(v)), -1))
                        if self.numeric_codes[j] else
                        (lambda v, m=cmap: m.get(_category_text(v), -1)))
                X[:, j] = _memo_map(code, vals)
        return X

    def transform(self, X: np.ndarray) -> np.ndarray:
        """The preprocessed matrix, as ``bundle.transform`` gives it."""
        return np.hstack([b.fn(X[:, b.cols]) for b in self.blocks]) if len(self.blocks) > 1 \
            else self.blocks[0].fn(X[:, self.blocks[0].cols])

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if X.shape[0] == 0:
            return np.zeros((0, 0))
        return self.model_fn(self.transform(X))

    def predict_proba_records(self, records: list[dict]) -> np.ndarray:
        return self.predict_proba(self.array(records))


def _onehot_block(cats_per_col: list[list[str]]):
    offsets = np.cumsum([0] + [len(c) for c in cats_per_col])

    def fn(C, offsets=offsets):
        out = np.zeros((C.shape[0], int(offsets[-1])))
        for j in range(C.shape[1]):
            code = C[:, j]
            rows = np.flatnonzero(code >= 0)
            out[rows, offsets[j] + code[rows].astype(int)] = 1.0
        return out
    return fn, int(offsets[-1])


def _build(bundle) -> CompiledModel:
    from sklearn.compose import ColumnTransformer

    from ..study._shipped import ReferenceScoreInput

    pre = bundle.preprocessor
    names = bundle.feature_names
    score_input = None
    if isinstance(pre, ReferenceScoreInput):  # features' preprocessing, then logit(score) last
        score_input, pre = pre, pre.preprocessor
        if score_input.column not in names:
            raise CompileError(f"the reference score '{score_input.column}' is not in the schema")
    if not isinstance(pre, ColumnTransformer):
        raise CompileError(f"preprocessor {type(pre).__name__} is not a ColumnTransformer")
    if getattr(pre, "sparse_output_", False):
        raise CompileError("preprocessor has sparse output")
    blocks, cat_index = [], {}
    probe = np.zeros((1, len(names)))
    for tname, trans, cols in pre.transformers_:
        if trans == "drop" or (tname == "remainder" and trans == "drop"):
            continue
        if trans == "passthrough":
            raise CompileError(f"transformer {tname!r} passes columns through unchanged")
        try:
            idx = np.asarray([names.index(str(c)) for c in cols], dtype=int)
        except ValueError:
            raise CompileError(f"transformer {tname!r} reads a column outside the schema") from None
        if len(idx) == 0:
            continue
        try:
            fn = _numeric_chain(trans, f"transformer {tname!r}")
            width = fn(probe[:, idx]).shape[1]
        except CompileError as num_err:
            try:
                cats = _onehot(trans, f"transformer {tname!r}")
            except CompileError:
                raise CompileError(f"{num_err} (and it is not a one-hot block)") from None
            for j, cs in zip(idx, cats):
                cat_index[int(j)] = {c: i for i, c in enumerate(cs)}
            fn, width = _onehot_block(cats)
        blocks.append(_Block(idx, width, fn))
    if score_input is not None:
        blocks.append(_Block(np.asarray([names.index(score_input.column)]), 1,
                             lambda S, f=score_input.score_logit: f(S[:, 0])[:, None]))
    if not blocks:
        raise CompileError("the preprocessor has no output columns")
    model_fn, path = _model_fn(bundle.model)
    if score_input is not None:
        path += f" (reads logit({score_input.column}))"
    return CompiledModel(names, [bool(f.get("numeric_codes", True))
                                 for f in bundle.schema["features"]],
                         cat_index, blocks, model_fn, path)


def parity_records(bundle, n: int = 200, seed: int = 0) -> list[dict]:
    """Records that exercise every path: each category, numeric values across and beyond the
    training range (reference min/max), and about 15% missing values per feature. A required
    input (a reference score) is always given and within its declared range, as the service
    requires; a record without it is refused by both paths alike."""
    rng = np.random.default_rng(seed)
    ref = bundle.reference.get("features", {})
    recs: list[dict] = [{} for _ in range(n)]
    for f in bundle.schema["features"]:
        r = ref.get(f["name"], {})
        if f["kind"] == "numeric":
            lo = r.get("min") if r.get("min") is not None else (f.get("range") or [0, 1])[0]
            hi = r.get("max") if r.get("max") is not None else (f.get("range") or [0, 1])[1]
            span = (hi - lo) or 1.0
            vals = rng.uniform(lo - 0.2 * span, hi + 0.2 * span, n).tolist()
        else:
            cats = list(f.get("categories") or [0, 1])
            vals = [cats[i] for i in rng.integers(0, len(cats), n)]
        if f.get("required") and f.get("range"):
            lo, hi = map(float, f["range"])
            vals = np.clip(vals, lo, hi).tolist()
        for rec, v, miss in zip(recs, vals, rng.random(n) < 0.15):
            rec[f["name"]] = None if miss and not f.get("required") else v
    return recs


def compile_bundle(bundle, *, check: bool = True) -> CompiledModel:
    """Compile ``bundle`` and check it against the scikit-learn path on
    :func:`parity_records` (largest difference <= :data:`PARITY_TOL`, else :class:`CompileError`)."""
    compiled = _build(bundle)
    if check:
        recs = parity_records(bundle)
        want = bundle.predict_proba(recs)
        got = compiled.predict_proba_records(recs)
        if got.shape != want.shape:
            raise CompileError(f"compiled output shape {got.shape} != {want.shape}")
        diff = float(np.max(np.abs(got - want)))
        for rec in recs[:5]:  # single rows take other BLAS / torch kernels than batches
            one = np.abs(compiled.predict_proba_records([rec]) - bundle.predict_proba([rec]))
            diff = max(diff, float(np.max(one)))
        if not np.isfinite(diff) or diff > PARITY_TOL:
            raise CompileError(f"compiled path differs from scikit-learn by {diff:.1e} "
                               f"(> {PARITY_TOL:g})")
        compiled.parity = diff
    return compiled
