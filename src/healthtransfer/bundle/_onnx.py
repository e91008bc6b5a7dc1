"""ONNX export of a bundle, where the model allows it.

The exported graph takes one input, ``input``: a double tensor ``[N, n_features]`` with the
bundle's features in schema order (categorical features as their numeric codes, NaN for
missing), and returns ``label`` and ``probabilities`` (``[N, n_classes]``).

The preprocessing (median imputation, missingness indicators, standardisation, one-hot
encoding with a 'missing' category) is written as plain ONNX operators from the fitted
parameters; the classifier is converted with ``skl2onnx``. Supported: the baselines
(source/target/pooled with logistic regression or histogram gradient boosting) on a
``make_preprocessor`` transformer with numeric category codes. Other models raise
:class:`OnnxExportError` naming what is not supported. After writing, the export is checked
against the bundle with ONNX Runtime on random inputs spanning the training ranges
(including missing values): the largest probability difference must be below ``1e-5``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._load import BundleError, load_bundle

__all__ = ["export_onnx", "OnnxExportError", "PARITY_TOL"]

PARITY_TOL = 1e-5


class OnnxExportError(BundleError):
    """The bundle's model (or preprocessing) has no faithful ONNX form."""


def _refuse(what: str) -> OnnxExportError:
    return OnnxExportError(what, where="ONNX export",
                           fix="serve the bundle with `healthtransfer serve` instead")


class _Graph:
    def __init__(self):
        from onnx import helper

        self.h = helper
        self.nodes, self.inits, self._n = [], [], 0

    def name(self, stem):
        self._n += 1
        return f"pre_{stem}_{self._n}"

    def const(self, value, dtype=np.float64):
        from onnx import numpy_helper

        n = self.name("c")
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), n))
        return n

    def op(self, op_type, inputs, stem=None, **attrs):
        out = self.name(stem or op_type.lower())
        self.nodes.append(self.h.make_node(op_type, inputs, [out], **attrs))
        return out

    def cols(self, x, idx):
        return self.op("Gather", [x, self.const(np.asarray(idx, dtype=np.int64), np.int64)],
                       axis=1)

    def isnan_f(self, x):
        from onnx import TensorProto

        return self.op("Cast", [self.op("IsNaN", [x])], to=TensorProto.DOUBLE)

    def impute(self, x, stats):
        return self.op("Where", [self.op("IsNaN", [x]), self.const(np.asarray(stats)[None, :]),
                                 x])


def _front(bundle, g: _Graph, x: str) -> str:
    """Preprocessor + the model's own imputer as ONNX nodes; returns the output name."""
    from onnx import TensorProto
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import MissingIndicator, SimpleImputer
    from sklearn.pipeline import FeatureUnion, Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    pre = bundle.preprocessor
    feats = bundle.feature_names
    if not isinstance(pre, ColumnTransformer):
        raise _refuse(f"preprocessor {type(pre).__name__} is not a ColumnTransformer")
    blocks = []
    for name, trans, cols in pre.transformers_:
        if trans == "drop" or name == "remainder":
            continue
        idx = [feats.index(str(c)) for c in cols]
        xc = g.cols(x, idx)
        if name == "num":
            parts = trans.transformer_list if isinstance(trans, FeatureUnion) else [("s", trans)]
            for _pname, part in parts:
                if isinstance(part, Pipeline):
                    steps = [s for _, s in part.steps]
                else:
                    steps = [part]
                y = xc
                for step in steps:
                    if isinstance(step, SimpleImputer) and step.strategy in ("median", "mean") \
                            and not step.add_indicator:
                        y = g.impute(y, step.statistics_)
                    elif isinstance(step, StandardScaler):
                        if step.with_mean:
                            y = g.op("Sub", [y, g.const(step.mean_[None, :])])
                        if step.with_std:
                            y = g.op("Div", [y, g.const(step.scale_[None, :])])
                    elif isinstance(step, MissingIndicator):
                        y = g.isnan_f(g.cols(y, list(step.features_)))
                    else:
                        raise _refuse(f"numeric step {type(step).__name__} is not supported")
                blocks.append(y)
        elif name == "cat":
            enc = trans.named_steps.get("onehot") if isinstance(trans, Pipeline) else None
            if not isinstance(enc, OneHotEncoder) or enc.drop_idx_ is not None:
                raise _refuse("categorical encoding other than one-hot is not supported")
            for j, cats in enumerate(enc.categories_):
                xj = g.cols(xc, [j])
                for c in cats:
                    if str(c) == "missing":
                        blocks.append(g.isnan_f(xj))
                        continue
                    try:
                        code = float(c)
                    except ValueError:
                        raise _refuse(f"category {str(c)!r} of a categorical feature is not "
                                      "a numeric code") from None
                    eq = g.op("Equal", [xj, g.const(np.array([[code]]))])
                    blocks.append(g.op("Cast", [eq], to=TensorProto.DOUBLE))
        else:
            raise _refuse(f"transformer {name!r} is not supported")
    z = g.op("Concat", blocks, axis=1) if len(blocks) > 1 else blocks[0]
    imp = getattr(bundle.model, "_imputer", None)
    if imp is not None:
        filled = g.impute(z, imp.statistics_)
        ind = getattr(imp, "indicator_", None)
        if ind is not None and len(ind.features_):
            z = g.op("Concat", [filled, g.isnan_f(g.cols(z, list(ind.features_)))], axis=1)
        else:
            z = filled
    return z


def _classifier(bundle):
    from ..methods.baselines import _Baseline

    model = bundle.model
    if not isinstance(model, _Baseline):
        raise _refuse(f"model type {type(model).__module__}.{type(model).__qualname__} has no "
                      "ONNX converter (supported: the source/target/pooled baselines)")
    est = model.estimator_
    if list(np.asarray(est.classes_).astype(int)) != list(range(len(model.classes_))):
        raise _refuse("the fitted classifier lacks a class of the training labels")
    return est


def _build(bundle):
    import onnx
    from onnx import TensorProto, compose, helper
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    est = _classifier(bundle)
    g = _Graph()
    z = _front(bundle, g, "input")
    n_mid = int(bundle.model.n_features_in_ if bundle.model._imputer is None else
                bundle.model._imputer.transform(np.zeros((1, bundle.model.n_features_in_))).shape[1])
    back, mid_type, errors = None, TensorProto.DOUBLE, []
    # Double precision end to end where skl2onnx supports it (linear models); tree ensembles
    # convert in float32 only, so the preprocessed matrix is cast (parity is checked after).
    for tensor_type, proto in ((DoubleTensorType, TensorProto.DOUBLE),
                               (FloatTensorType, TensorProto.FLOAT)):
        try:
            back = convert_sklearn(est, initial_types=[("features", tensor_type([None, n_mid]))],
                                   options={id(est): {"zipmap": False}},
                                   target_opset={"": 17, "ai.onnx.ml": 3})
            mid_type = proto
            break
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {str(exc)[:160]}")
    if back is None:
        raise _refuse(f"skl2onnx cannot convert {type(est).__name__} ({errors[-1]})")
    if mid_type == TensorProto.FLOAT:
        z = g.op("Cast", [z], to=TensorProto.FLOAT)
    opsets = [helper.make_opsetid(o.domain, o.version) for o in back.opset_import]
    front_graph = helper.make_graph(
        g.nodes + [helper.make_node("Identity", [z], ["preprocessed"])], "preprocess",
        [helper.make_tensor_value_info("input", TensorProto.DOUBLE,
                                       [None, len(bundle.feature_names)])],
        [helper.make_tensor_value_info("preprocessed", mid_type, [None, n_mid])],
        initializer=g.inits)
    front = helper.make_model(front_graph, opset_imports=opsets)
    front.ir_version = back.ir_version
    model = compose.merge_models(front, back, io_map=[("preprocessed", "features")])
    model.doc_string = f"healthtransfer bundle {bundle.model_version}"
    meta = model.metadata_props.add()
    meta.key, meta.value = "feature_names", ",".join(bundle.feature_names)
    onnx.checker.check_model(model)
    return model


def _random_inputs(bundle, n=256, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = np.empty((n, len(bundle.feature_names)))
    for j, f in enumerate(bundle.schema["features"]):
        ref = bundle.reference["features"].get(f["name"], {})
        if f["kind"] == "numeric":
            lo = ref.get("clip_low") if ref.get("clip_low") is not None else (f.get("range") or [0, 1])[0]
            hi = ref.get("clip_high") if ref.get("clip_high") is not None else (f.get("range") or [0, 1])[1]
            X[:, j] = rng.uniform(lo, hi, n)
        else:
            cats = np.asarray(f.get("categories") or [0, 1], dtype=float)
            X[:, j] = rng.choice(cats, n)
        X[rng.random(n) < 0.1, j] = np.nan
    return X


def onnx_predict_proba(onnx_path, X: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    out = sess.run(["probabilities"], {"input": np.asarray(X, dtype=np.float64)})[0]
    return np.asarray(out, dtype=float)


def _unwrap_shipped(bundle):
    """A study's shipped model is the fitted estimator plus its calibration map; only the
    uncalibrated, features-only case has an ONNX graph today."""
    import dataclasses

    from ..study._shipped import ReferenceScoreInput, ShippedModel

    if isinstance(bundle.preprocessor, ReferenceScoreInput):
        raise _refuse("models that take an existing score as an input are not exported yet")
    if isinstance(bundle.model, ShippedModel):
        if bundle.model.calibration is not None:
            raise _refuse(f"the model's {bundle.model.calibration.kind} calibration map is not exported yet")
        bundle = dataclasses.replace(bundle, model=bundle.model.estimator)
    return bundle


def export_onnx(bundle_dir, out_path=None, *, check: bool = True) -> Path:
    """Write the bundle's model as ONNX (default ``<bundle_dir>.onnx`` beside the folder, so
    the bundle itself stays unchanged) and check parity with ONNX Runtime."""
    bundle = _unwrap_shipped(load_bundle(bundle_dir))
    if any(not f.get("numeric_codes", True) for f in bundle.schema["features"]):
        raise _refuse("categorical features with text categories are not supported")
    try:
        import onnx  # noqa: F401
        import skl2onnx  # noqa: F401
    except ImportError:
        raise _refuse("onnx and skl2onnx are not installed; pip install 'healthtransfer[onnx]'") from None
    model = _build(bundle)
    bundle_dir = Path(bundle_dir)
    out = Path(out_path) if out_path is not None else bundle_dir.parent / f"{bundle_dir.name}.onnx"
    from ..reports._io import atomic_write_bytes

    atomic_write_bytes(out, model.SerializeToString())
    if check:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return out
        X = _random_inputs(bundle)
        frame = {f: X[:, j] for j, f in enumerate(bundle.feature_names)}
        import pandas as pd

        want = bundle.predict_proba(pd.DataFrame(frame))
        got = onnx_predict_proba(out, X)
        diff = float(np.max(np.abs(want - got)))
        if not np.isfinite(diff) or diff > PARITY_TOL:
            out.unlink(missing_ok=True)
            raise _refuse(f"the ONNX model differs from the bundle by {diff:.2e} "
                          f"(> {PARITY_TOL:g}) on test inputs")
    return out
