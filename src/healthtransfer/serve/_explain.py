"""Per-feature contributions for one record.

Method (model-agnostic, documented in the response as ``occlusion-to-reference``): for each
feature, replace the record's value by the training reference value (median for numeric
features, most frequent category otherwise) and take the change in the predicted log-odds of
the positive class::

    contribution_j = logit p(x) - logit p(x with x_j := reference_j)

Positive contributions push the risk up. For survival and regression bundles the scale is the
model's risk score (the log relative hazard; the prediction on its fitted scale) instead of
the log-odds. All ``n_features + 1`` variants go through the model
in one call. This is exact for a model additive on the logit scale after preprocessing
(logistic regression; a missing value then counts against the median it is imputed with) and
a first-order, one-at-a-time attribution for others; contributions need not sum to the
difference from the reference prediction when features interact. SHAP is not used, so the
service needs no extra dependency and gives the same kind of answer for every model.

Example
-------
>>> # see tests/serve/test_service.py::test_explain_sorted
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["explain_record", "METHOD"]

METHOD = "occlusion-to-reference"


def _logit(p):
    p = np.clip(np.asarray(p, float), 1e-12, 1 - 1e-12)
    return np.log(p / (1 - p))


def reference_values(bundle) -> dict:
    out = {}
    for f in bundle.schema["features"]:
        ref = bundle.reference["features"].get(f["name"], {})
        if ref.get("type") == "numeric":
            out[f["name"]] = ref.get("median")
        else:
            mode = ref.get("mode")
            if mode is not None and f.get("numeric_codes", True):
                mode = float(mode)
            out[f["name"]] = mode
    return out


def scale(bundle) -> str:
    """What a contribution measures for this bundle."""
    kind = bundle.manifest.get("outcome")  # verified against model.json by the loader
    return {"survival": "log relative hazard (the Cox risk score)",
            "regression": "the prediction on its fitted scale"}.get(kind, "log-odds of the positive class")


def explain_record(bundle, record: dict, predict_proba=None) -> dict:
    """``predict_proba(records) -> array`` (e.g. the service's compiled path, equal to the
    bundle's within 1e-9) replaces ``bundle.predict_proba`` when given. Survival / regression
    bundles are explained on their risk score (``bundle.risk_score``)."""
    names = bundle.feature_names
    refs = reference_values(bundle)
    base = bundle.frame([record])
    if bundle.manifest.get("outcome") in ("survival", "regression"):
        rec = {n: record.get(n) for n in names}
        z = np.asarray(bundle.risk_score([rec] + [dict(rec, **{n: refs[n]}) for n in names]), float)
        return _result(bundle, names, refs, base, z, {"risk_score": float(z[0])})
    if predict_proba is not None:
        rec = {n: record.get(n) for n in names}
        variants = [rec] + [dict(rec, **{n: refs[n]}) for n in names]
        risk = np.asarray(predict_proba(variants))[:, bundle.positive_index]
    else:
        rows = [base]
        for name in names:
            v = base.copy()
            v[name] = np.nan if refs[name] is None else refs[name]
            rows.append(v)
        frame = pd.concat(rows, ignore_index=True)
        risk = bundle.predict_risk(frame)
    return _result(bundle, names, refs, base, _logit(risk), {"probability": float(risk[0])})


def _result(bundle, names, refs, base, z, head: dict) -> dict:
    contrib = z[0] - z[1:]
    items = [{"feature": n, "contribution": float(c), "reference": refs[n],
              "missing": bool(pd.isna(base[n].iloc[0])),
              "unit": bundle.feature_specs[n].get("unit")}
             for n, c in zip(names, contrib)]
    items.sort(key=lambda d: -abs(d["contribution"]))
    return {"method": METHOD, "scale": scale(bundle), **head, "contributions": items}
