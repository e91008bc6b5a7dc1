"""Write a deployable bundle: everything needed to serve one fitted model, and nothing that
identifies a patient.

Layout of ``OUT/bundle/``::

    preprocessor.skops      fitted ColumnTransformer (skops.io, no pickle)
    model.skops             fitted estimator; for deep methods without its torch module
    model.safetensors       torch weights of deep methods (state_dict tensors only)
    schema.json             inputs: name, kind, unit, allowed range, categories; a model that
                            recalibrates an existing score declares it ("required": true,
                            "role": "reference_score", range 0..1, its meaning)
    training.json           method, what the fit used (rows per site, target rows, calibration),
                            data fingerprints
    metrics.json            target-test metrics with confidence intervals (as given)
    reference.json          per-feature aggregates for drift/flags/explanations
    model_card.md           the model card (Markdown)
    manifest.json           sha256 and size of every file, package and format versions

The folder is written into a temporary sibling and renamed into place at the end, so a
failure never leaves a half-written bundle. The written bundle is loaded back and must give
the same probabilities on the training rows before it is renamed into place.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from .._json import jsonable
from ..data.dataset import fingerprint
from ..reports._io import replace_path
from ._card import render_card
from ._load import (FORMAT, FORMAT_VERSION, MANIFEST, BundleError, check_trusted_types,
                    load_bundle, sha256_file)
from ._reference import build_reference

__all__ = ["write_bundle"]


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.bool_,)):
        return bool(o)
    if isinstance(o, (set, tuple)):
        return list(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def _dump_json(path: Path, obj) -> None:
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")


def _input_features(preprocessor) -> list[str]:
    names = getattr(preprocessor, "feature_names_in_", None)
    if names is None:
        raise BundleError("the preprocessor is not fitted on a DataFrame (no feature_names_in_)",
                          where="write_bundle",
                          fix="fit make_preprocessor(...) on the harmonised DataFrame")
    return [str(n) for n in names]


def _schema(dataset, features: list[str], preprocessor) -> dict:
    cat_cols: set[str] = set()
    for name, _trans, cols in getattr(preprocessor, "transformers_", []):
        if name == "cat":
            cat_cols.update(map(str, cols))
    specs = []
    for name in features:
        fs = dataset.schema.feature(name) if dataset.schema is not None else None
        if fs is not None:
            d = {"name": name, "kind": fs.kind, "unit": fs.unit,
                 "range": None if fs.range is None else [float(fs.range[0]), float(fs.range[1])],
                 "categories": fs.categories, "description": fs.description}
            if getattr(fs, "fhir", None) is not None:  # code map for the FHIR / CDS Hooks input
                d["fhir"] = fs.fhir.model_dump(exclude_defaults=True)
        else:
            kind = "categorical" if name in dataset.categorical else "numeric"
            d = {"name": name, "kind": kind, "unit": None, "range": None, "categories": None,
                 "description": ""}
        if name in cat_cols and d["kind"] != "categorical":
            d["kind"] = "categorical"
        if d["kind"] in ("categorical", "binary") and not d["categories"]:
            vals = dataset.frame[name].dropna().unique().tolist() if name in dataset.frame else []
            d["categories"] = sorted(vals, key=str)
        if d["kind"] == "binary" and not d["categories"]:
            d["categories"] = [0, 1]
        cats = d["categories"] or []
        d["numeric_codes"] = all(isinstance(c, (int, float)) and not isinstance(c, bool)
                                 for c in cats)
        specs.append(jsonable(d))
    return specs


def _torch_modules(model) -> dict:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        return {}
    mods = {}
    for attr, val in vars(model).items():
        if isinstance(val, torch.nn.Module):
            mods[attr] = val
        elif isinstance(val, torch.Tensor):
            raise BundleError(f"{type(model).__name__}.{attr} is a torch tensor outside a module; "
                              "it cannot be stored safely", where="write_bundle",
                              fix="use a supported method or convert the attribute to numpy")
    return mods


def _dump_skops(obj, file: Path, what: str) -> None:
    import skops.io as sio

    try:
        data = sio.dumps(obj)
    except Exception as exc:
        raise BundleError(f"{what} of type {type(obj).__name__} cannot be serialised with "
                          f"skops ({type(exc).__name__}: {exc})", where="write_bundle",
                          fix="use a method built from scikit-learn/numpy/torch parts") from None
    from ._skops_audit import skops_names

    check_trusted_types(skops_names(data), f"write_bundle: {what}")
    file.write_bytes(data)


def _save_model(model, stage: Path) -> dict | None:
    """Write model.skops (+ model.safetensors for torch modules); return the torch spec."""
    mods = _torch_modules(model)
    if not mods:
        _dump_skops(model, stage / "model.skops", "model")
        return None
    from safetensors.torch import save_file

    spec: dict = {"file": "model.safetensors", "modules": {}}
    tensors = {}
    for attr, mod in mods.items():
        if attr != "module_" or not hasattr(model, "_build_module"):
            raise BundleError(
                f"{type(model).__name__}.{attr} is a torch module the bundle cannot rebuild "
                "(only the `module_` network of DeepTransferClassifier methods is supported)",
                where="write_bundle", fix="choose another method for deployment")
        n_in = int(np.asarray(model.scaler_mean_).shape[0])
        spec["modules"][attr] = {"class": f"{type(mod).__module__}.{type(mod).__qualname__}",
                                 "n_in": n_in, "n_classes": int(len(model.classes_))}
        for k, v in mod.state_dict().items():
            tensors[f"{attr}.{k}"] = v.detach().cpu().contiguous().clone()
    save_file(tensors, str(stage / "model.safetensors"))
    shallow = copy.copy(model)
    for attr in mods:
        setattr(shallow, attr, None)
    _dump_skops(shallow, stage / "model.skops", "model")
    return spec


def write_bundle(out_dir, *, model, preprocessor, dataset, training_frame: pd.DataFrame,
                 method: str, metrics: dict, extra: dict | None = None, reference_input: dict | None = None,
                 training_description: dict | None = None) -> Path:
    """Write the deployable bundle of a fitted ``preprocessor`` + ``model`` to ``out_dir``.

    ``training_frame`` is the harmonised DataFrame the final model was fitted on; only
    aggregates of it are stored (bins, shares, clipped quantiles), never rows. ``metrics`` is
    any JSON-able dict (target-test metrics with CIs; ``overall``/``per_site``/``subgroups``
    keys render as tables in the card). ``extra`` may carry ``intended_use``, ``limits``,
    ``sources``, ``target`` and anything else worth recording in ``training.json``.
    ``reference_input`` (``{"name", "range", "meaning"}``) declares an existing score the model
    reads as a required input; ``training_description`` (what the fit used, with a ``text``
    sentence) goes into ``training.json`` and the card.
    """
    from .. import __version__

    out_dir = Path(out_dir)
    method = str(getattr(method, "name", method))  # a MethodSpec or its name
    extra = dict(extra or {})
    features = _input_features(preprocessor)
    missing = [f for f in features if f not in training_frame.columns]
    if missing:
        raise BundleError(f"training_frame lacks the model's input columns {missing}",
                          where="write_bundle", fix="pass the harmonised frame the model was fitted on")
    specs = _schema(dataset, features, preprocessor)
    if reference_input is not None:
        name = reference_input["name"]
        if name not in features:
            raise BundleError(f"the reference score '{name}' is not an input of the preprocessor",
                              where="write_bundle", fix="wrap the preprocessor in ReferenceScoreInput")
        lo, hi = reference_input.get("range", [0.0, 1.0])
        specs[features.index(name)] = {
            "name": name, "kind": "numeric", "unit": "probability", "range": [float(lo), float(hi)],
            "categories": None, "description": reference_input.get("meaning", ""), "required": True,
            "role": "reference_score", "numeric_codes": True}
    classes = [c.item() if hasattr(c, "item") else c for c in getattr(model, "classes_", [])]
    positive = dataset.schema.positive if dataset.schema is not None else None
    pos_idx = (classes.index(positive) if positive in classes else len(classes) - 1) if classes else 1
    schema = jsonable({
        "dataset": dataset.name, "label": dataset.label, "classes": classes,
        "class_names": [str(c) for c in (dataset.class_names or classes)],
        "positive": classes[pos_idx] if classes else positive, "positive_index": pos_idx,
        "features": specs,
    })
    created = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    dom = dataset.domain
    training = jsonable({
        "dataset": dataset.name,
        "method": str(method),
        "model_class": f"{type(model).__module__}.{type(model).__qualname__}",
        "created": created,
        "n_rows": int(len(training_frame)),
        "domains": ({str(k): int(v) for k, v in training_frame[dom].value_counts().sort_index().items()}
                    if dom in training_frame else {}),
        "fingerprints": {"dataset": dataset.fingerprint(),
                         "training_rows": fingerprint(training_frame.reset_index(drop=True))},
        "license": dataset.license, "citation": dataset.citation,
        "sources": extra.pop("sources", None), "target": extra.pop("target", None),
        "description": training_description,
        "extra": {k: v for k, v in extra.items() if k not in ("intended_use", "limits")},
    })
    reference = jsonable(build_reference(training_frame, specs))
    metrics = jsonable(metrics or {})
    card = render_card(schema=schema, training=training, metrics=metrics, version=__version__,
                       reference=reference, extra=extra)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        stage.chmod(0o755)
        _dump_skops(preprocessor, stage / "preprocessor.skops", "preprocessor")
        torch_spec = _save_model(model, stage)
        _dump_json(stage / "schema.json", schema)
        _dump_json(stage / "training.json", training)
        _dump_json(stage / "metrics.json", metrics)
        _dump_json(stage / "reference.json", reference)
        (stage / "model_card.md").write_text(card, encoding="utf-8")
        files = {p.relative_to(stage).as_posix(): {"sha256": sha256_file(p),
                                                   "bytes": p.stat().st_size}
                 for p in sorted(stage.rglob("*")) if p.is_file()}
        model_digest = files["model.skops"]["sha256"][:12]
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "healthtransfer_version": __version__, "created": created,
            "method": str(method), "model_version": f"{method}-{model_digest}",
            "torch": torch_spec, "files": files,
        }
        _dump_json(stage / MANIFEST, manifest)
        for p in stage.rglob("*"):
            if p.is_file():
                with open(p, "rb") as fh:
                    os.fsync(fh.fileno())
        # The bundle must reproduce the in-memory model before it replaces anything.
        required = [f["name"] for f in specs if f.get("required")]
        _check_round_trip(stage, model, preprocessor, training_frame[features].dropna(subset=required))
        replace_path(stage, out_dir)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out_dir


def _check_round_trip(stage: Path, model, preprocessor, frame: pd.DataFrame) -> None:
    rows = frame.iloc[: min(len(frame), 64)]
    if rows.empty:
        return
    b = load_bundle(stage)
    want = np.asarray(model.predict_proba(preprocessor.transform(rows)), dtype=float)
    got = b.predict_proba(rows)
    if want.shape != got.shape or not np.allclose(want, got, rtol=0, atol=1e-9):
        raise BundleError("the written bundle does not reproduce the model's probabilities",
                          where="write_bundle",
                          fix="report this as a bug with the method name")
