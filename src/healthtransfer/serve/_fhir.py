"""FHIR R4 in and out: ``POST /fhir/RiskAssessment/$predict``.

Input: a FHIR ``Bundle`` (any type; ``collection`` or ``searchset`` are usual) holding the
``Patient`` and its ``Observation`` / ``Condition`` resources. Each model feature is found
through its code map in the study schema (``fhir = {...}`` on the feature, see
:class:`healthtransfer.data.schema.FhirCode`): LOINC / SNOMED CT / local codes to columns,
with UCUM unit conversion. The mapped record then takes the same validated, audited path as
``/v1/predict``.

Output: a FHIR ``RiskAssessment`` (``application/fhir+json``): the probability of the positive
outcome (survival bundles: one prediction per horizon, ``whenRange.high`` in UCUM time units),
the model identity and version as ``method`` (and the resources used as ``basis``),
the calibrated interval and the top contributions as ``note``. A Bundle that is not valid
FHIR, lacks a required observation or carries a value in a unit that cannot be converted gets
an ``OperationOutcome`` naming the code (HTTP 422), never a 500. Resources are validated with
``fhir.resources`` (R4B models, which read R4 Patient / Observation / Condition / Bundle /
RiskAssessment unchanged); issues never echo patient values.

Note: no ``from __future__ import annotations`` here; FastAPI reads the endpoint annotations.

Example
-------
>>> # curl -X POST localhost:8000/fhir/RiskAssessment/\\$predict -H 'X-API-Key: ...' \\
>>> #      -H 'Content-Type: application/fhir+json' --data @bundle.json
"""

import datetime as _dt
import importlib.util
import json
import math
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["ServiceContext", "FhirInputError", "code_maps", "record_from_resources",
           "fhir_bundle_from_record", "risk_assessment", "operation_outcome", "fhir_router",
           "outcome_text", "horizon_risks",
           "FHIR_JSON"]

FHIR_JSON = "application/fhir+json"
_HAVE_FHIR = importlib.util.find_spec("fhir") is not None \
    and importlib.util.find_spec("fhir.resources") is not None
UCUM = "http://unitsofmeasure.org"
MODEL_SYSTEM = "urn:healthtransfer:model"
_ACTIVE = {"active", "recurrence", "relapse"}
_IGNORED_STATUS = {"entered-in-error", "cancelled"}


@dataclass
class ServiceContext:
    """What the FHIR and CDS Hooks routers need from the service (see ``app.create_app``)."""

    bundle: Any
    require: Callable           # scope -> FastAPI dependency returning the ApiKey
    serve: Callable             # (records, request_id, key) -> predictions (audited)
    rid: Callable               # request -> request id
    drift: Any
    record_model: Any           # pydantic model of one record (schema ranges and categories)
    preview_model: Any = None   # pydantic model of {"record": {...}} (the web page's card preview)
    predict_proba: Any = None   # the service's (compiled) path, for the contributions


class FhirInputError(Exception):
    """The FHIR input cannot be mapped; ``issues`` are OperationOutcome issues."""

    def __init__(self, issues: list[dict], status: int = 422):
        super().__init__("; ".join(i["diagnostics"] for i in issues))
        self.issues, self.status = issues, status


def _issue(code: str, text: str, expression: str | None = None, severity: str = "error") -> dict:
    out = {"severity": severity, "code": code, "diagnostics": text}
    if expression:
        out["expression"] = [expression]
    return out


def operation_outcome(issues: list[dict]) -> dict:
    """A validated FHIR OperationOutcome."""
    from fhir.resources.R4B.operationoutcome import OperationOutcome

    oo = OperationOutcome.model_validate({"resourceType": "OperationOutcome", "issue": issues})
    return json.loads(oo.model_dump_json())


# -- the code map ------------------------------------------------------------------------------
def code_maps(bundle) -> dict:
    """Feature name -> :class:`FhirCode`, from the bundle's schema or, for bundles written
    before code maps existed, from the built-in schema of the same dataset."""
    from ..data.schema import FhirCode

    out = {}
    fallback = None
    for f in bundle.schema["features"]:
        spec = f.get("fhir")
        if spec is None:
            if fallback is None:
                fallback = _builtin_features(bundle.schema.get("dataset"))
            fs = fallback.get(f["name"])
            spec = None if fs is None or fs.fhir is None else fs.fhir.model_dump()
        if spec is not None:
            out[f["name"]] = FhirCode.model_validate(spec)
    return out


def _builtin_features(name) -> dict:
    from ..data.sources import builtin_schema

    try:
        return {f.name: f for f in builtin_schema(str(name)).features}
    except Exception:  # not a built-in dataset: no fallback code map
        return {}


def _label(m) -> str:
    if m.resource == "Patient":
        return f"Patient.{'birthDate' if m.element == 'age' else 'gender'}"
    return f"{m.resource} {m.system}|{m.code}" + (f" ({m.display})" if m.display else "")


# -- FHIR -> record ------------------------------------------------------------------------------
def parse_resources(payload) -> list:
    """Validate a Bundle (or a single resource) with ``fhir.resources``; return its resources."""
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    if not isinstance(payload, dict) or "resourceType" not in payload:
        raise FhirInputError([_issue("structure", "the body must be a FHIR resource (a JSON "
                                     "object with resourceType), usually a Bundle")], 400)
    try:
        cls = get_fhir_model_class(str(payload["resourceType"]))
        res = cls.model_validate(payload)
    except KeyError:
        raise FhirInputError([_issue("not-supported", "unknown FHIR resourceType")], 400) from None
    except ValidationError as exc:
        issues = []
        for e in exc.errors()[:20]:
            where = ".".join(str(p) for p in e.get("loc", ()))
            issues.append(_issue("invalid", f"not valid FHIR R4 at {where or 'the resource'} "
                                 f"({e.get('type', 'invalid')})", where or None))
        raise FhirInputError(issues) from None
    except Exception as exc:  # fhir.resources raises plain errors for some structures
        raise FhirInputError([_issue("invalid", f"not valid FHIR R4 ({type(exc).__name__})")]) \
            from None
    if type(res).__name__ == "Bundle":
        return [e.resource for e in (res.entry or []) if e.resource is not None]
    return [res]


def _codings(cc) -> list:
    return list(getattr(cc, "coding", None) or []) if cc is not None else []


def _has_code(cc, system: str, code: str) -> bool:
    return any(c.system == system and c.code == code for c in _codings(cc))


def _when(res) -> str:
    for attr in ("effectiveDateTime", "effectiveInstant", "issued", "recordedDate",
                 "onsetDateTime"):
        v = getattr(res, attr, None)
        if v is not None:
            return str(v)
    period = getattr(res, "effectivePeriod", None)
    if period is not None and getattr(period, "end", None) is not None:
        return str(period.end)
    return ""


def _as_of(resources) -> _dt.date:
    """The date ages are computed at: the latest observation date, else today (UTC)."""
    dates = []
    for r in resources:
        w = _when(r)
        if w:
            try:
                dates.append(_dt.date.fromisoformat(w[:10]))
            except ValueError:
                pass
    return max(dates) if dates else _dt.datetime.now(_dt.timezone.utc).date()


def _years(birth: _dt.date, on: _dt.date) -> int:
    return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))


def _observation_value(obs, m, name: str):
    """The feature value of one Observation, or raise FhirInputError naming the code."""
    q = getattr(obs, "valueQuantity", None)
    if q is not None and q.value is not None:
        v = float(q.value)
        unit = q.code or q.unit
        if m.unit is not None and unit is not None and unit != m.unit:
            conv = m.units.get(str(unit))
            if conv is None:
                accepted = [m.unit, *m.units]
                raise FhirInputError([_issue(
                    "value", f"{_label(m)} for feature '{name}' is in unit '{unit}', which "
                    f"cannot be converted; send one of {accepted} (UCUM)")])
            v = v * conv.factor + conv.offset
        if m.above is not None:
            return 1 if v > m.above else 0
        return v
    for attr in ("valueInteger", "valueDecimal"):
        v = getattr(obs, attr, None)
        if v is not None:
            return float(v)
    b = getattr(obs, "valueBoolean", None)
    if b is not None:
        return 1 if b else 0
    cc = getattr(obs, "valueCodeableConcept", None)
    for c in _codings(cc):
        if c.code in m.values:
            return m.values[c.code]
        try:
            return float(c.code)
        except (TypeError, ValueError):
            continue
    if cc is not None or getattr(obs, "valueString", None) is not None:
        raise FhirInputError([_issue("code-invalid", f"{_label(m)} for feature '{name}' has a "
                                     "coded or text answer the code map does not know")])
    return None  # dataAbsentReason or no value: missing


def record_from_resources(resources: list, maps: dict, feature_names: list[str]):
    """(record, basis references, problems) from FHIR resources through the code maps.

    Features without a code map, or whose optional observation is absent, are missing (None).
    Raises :class:`FhirInputError` naming every required code that is absent.
    """
    patients = [r for r in resources if type(r).__name__ == "Patient"]
    by_type: dict = {}
    for r in resources:
        if getattr(r, "status", None) in _IGNORED_STATUS:
            continue
        by_type.setdefault(type(r).__name__, []).append(r)
    as_of = _as_of(resources)
    record: dict = {}
    basis: list[dict] = []
    missing: list[dict] = []
    for name in feature_names:
        m = maps.get(name)
        if m is None:
            record[name] = None
            continue
        value = None
        found = False
        if m.resource == "Patient":
            p = patients[0] if patients else None
            if p is not None and m.element == "age" and p.birthDate is not None:
                value, found = _years(_dt.date.fromisoformat(str(p.birthDate)[:10]), as_of), True
            elif p is not None and m.element == "gender" and p.gender is not None:
                value, found = m.values.get(str(p.gender)), str(p.gender) in m.values
        elif m.resource == "Condition":
            conds = [c for c in by_type.get("Condition", []) if _has_code(c.code, m.system, m.code)
                     and not any(x.code in ("refuted", "entered-in-error")
                                 for x in _codings(getattr(c, "verificationStatus", None)))]
            active = [c for c in conds if not _codings(c.clinicalStatus)
                      or any(x.code in _ACTIVE for x in _codings(c.clinicalStatus))]
            value, found = (1 if active else 0), True  # a problem list without it: absent
            for c in active:
                if c.id:
                    basis.append({"reference": f"Condition/{c.id}"})
        else:
            obs = [o for o in by_type.get("Observation", []) if _has_code(o.code, m.system, m.code)]
            if obs:
                latest = max(enumerate(obs), key=lambda t: (_when(t[1]), t[0]))[1]
                value = _observation_value(latest, m, name)
                found = value is not None
                if found and latest.id:
                    basis.append({"reference": f"Observation/{latest.id}"})
        if not found and m.required:
            missing.append(_issue("required", f"missing {_label(m)}: the model needs it for "
                                  f"feature '{name}'",
                                  f"Bundle.entry.resource.where(resourceType='{m.resource}')"))
        record[name] = value if found else None
    if missing:
        raise FhirInputError(missing)
    if patients and patients[0].id:
        basis.insert(0, {"reference": f"Patient/{patients[0].id}"})
    return record, basis


def validate_record(ctx: ServiceContext, record: dict, maps: dict) -> dict:
    """The mapped record through the service's own record model (schema ranges, categories)."""
    from pydantic import ValidationError

    try:
        return ctx.record_model.model_validate(record).model_dump(by_alias=True)
    except ValidationError as exc:
        issues = []
        for e in exc.errors():
            name = next((p for p in e.get("loc", ()) if isinstance(p, str)), None)
            spec = ctx.bundle.feature_specs.get(name, {})
            m = maps.get(name)
            rng = spec.get("range")
            expected = (f"from {rng[0]:g} to {rng[1]:g} {spec.get('unit') or ''}".strip()
                        if rng else f"one of {spec.get('categories')}")
            issues.append(_issue("value", f"{_label(m) if m else name} gives feature '{name}' a "
                                 f"value outside what the model accepts (expected {expected})"))
        raise FhirInputError(issues) from None


# -- record -> FHIR (examples, tests, the web page) ------------------------------------------------
def fhir_bundle_from_record(record: dict, bundle, *, patient_id: str = "example",
                            as_of: _dt.date | None = None) -> dict:
    """A FHIR collection Bundle carrying ``record`` through the bundle's code maps (the inverse
    of :func:`record_from_resources`, for examples and tests). Missing values are left out."""
    maps = code_maps(bundle)
    specs = bundle.feature_specs
    as_of = as_of or _dt.date(2024, 6, 1)
    when = as_of.isoformat()
    patient: dict = {"resourceType": "Patient", "id": patient_id}
    entries = []
    for i, (name, m) in enumerate(maps.items()):
        v = record.get(name)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        spec = specs.get(name, {})
        if m.resource == "Patient":
            if m.element == "age":
                # born on the first of the as-of month: whole years at as_of == the value
                patient["birthDate"] = _dt.date(as_of.year - int(v), as_of.month, 1).isoformat()
            else:
                inv = {val: k for k, val in m.values.items()}
                if v in inv:
                    patient["gender"] = inv[v]
            continue
        coding = {"system": m.system, "code": m.code}
        if m.display:
            coding["display"] = m.display
        if m.resource == "Condition":
            if v:
                entries.append({"resourceType": "Condition", "id": f"c{i}",
                                "clinicalStatus": {"coding": [{
                                    "system": "http://terminology.hl7.org/CodeSystem/"
                                              "condition-clinical", "code": "active"}]},
                                "code": {"coding": [coding]},
                                "subject": {"reference": f"Patient/{patient_id}"}})
            continue
        obs: dict = {"resourceType": "Observation", "id": f"o{i}", "status": "final",
                     "code": {"coding": [coding]},
                     "subject": {"reference": f"Patient/{patient_id}"},
                     "effectiveDateTime": when}
        if m.above is not None:
            q = m.above + 10.0 if v else m.above - 20.0  # a representative value on each side
            obs["valueQuantity"] = {"value": q, "unit": m.unit, "system": UCUM, "code": m.unit}
        elif spec.get("kind") == "binary" and not m.values:
            obs["valueBoolean"] = bool(v)
        elif spec.get("kind") == "categorical" and not m.values:
            obs["valueInteger"] = int(v)
        elif m.values:
            inv = {val: k for k, val in m.values.items()}
            obs["valueCodeableConcept"] = {"coding": [{"system": m.system, "code": inv[v]}]}
        else:
            q = {"value": float(v)}
            if m.unit:
                q.update(unit=m.unit, system=UCUM, code=m.unit)
            obs["valueQuantity"] = q
        entries.append(obs)
    return {"resourceType": "Bundle", "type": "collection",
            "entry": [{"fullUrl": f"urn:uuid:{patient_id}", "resource": patient}]
            + [{"resource": e} for e in entries]}


# -- prediction -> RiskAssessment ----------------------------------------------------------------
def _pct(p) -> str:
    return f"{100 * float(p):.0f}%"


def contributions(bundle, record: dict, top: int = 3, predict_proba=None) -> list[dict]:
    """The ``top`` largest per-feature contributions (see :mod:`._explain`)."""
    from ._explain import explain_record

    return explain_record(bundle, record, predict_proba)["contributions"][:top]


def interval_text(pred: dict) -> str | None:
    u = pred.get("uncertainty")
    if not u or not u.get("interval") or None in u["interval"]:
        return None
    lo, hi = u["interval"]
    return (f"calibrated interval {_pct(lo)}-{_pct(hi)} (observed rate in the target-test "
            f"calibration bin {u['bin'][0]:.2f}-{u['bin'][1]:.2f}, n={u.get('n')})")


_UCUM_TIME = {"seconds": "s", "minutes": "min", "hours": "h", "days": "d", "weeks": "wk",
              "months": "mo", "years": "a"}


def outcome_text(bundle) -> str:
    """What the risk is of: ``"num = 1"`` (classification) or the event (survival)."""
    if bundle.manifest.get("outcome") == "survival":
        return str(bundle.schema.get("label") or "the event")
    names = bundle.schema.get("class_names") or [str(c) for c in bundle.classes]
    return f"{bundle.schema.get('label', 'outcome')} = {names[bundle.positive_index]}"


def horizon_risks(bundle, pred: dict) -> list[tuple[float, float, str]]:
    """Survival predictions as ``(horizon, risk, time unit)``, shortest horizon first."""
    from ..bundle._outcome import horizon_key

    unit = str(bundle.model.get("time_unit", "days"))
    return sorted((float(h), float(pred["risk"][horizon_key(float(h))]), unit) for h in bundle.model["horizons"])


def contribution_text(c: dict, record: dict, specs: dict, survival: bool = False) -> str:
    v = record.get(c["feature"])
    unit = specs.get(c["feature"], {}).get("unit") or ""
    shown = "missing" if v is None else f"{v:g} {unit}".strip() if isinstance(v, float) else str(v)
    way = "raises" if c["contribution"] > 0 else "lowers"
    if survival:
        return f"{c['feature']} = {shown} {way} the hazard ({c['contribution']:+.2f} log relative hazard)"
    return f"{c['feature']} = {shown} {way} the risk ({c['contribution']:+.2f} log-odds)"


def _predictions(bundle, pred: dict) -> list[dict]:
    """RiskAssessment.prediction: the positive class, or one entry per survival horizon."""
    outcome = outcome_text(bundle)
    if "risk" not in pred:
        return [{"outcome": {"text": outcome}, "probabilityDecimal": round(float(pred["probability"]), 15)}]
    out = []
    for h, r, unit in horizon_risks(bundle, pred):
        low, high = {"value": 0.0, "unit": unit}, {"value": h, "unit": unit}
        code = _UCUM_TIME.get(unit.lower()) or _UCUM_TIME.get(unit.lower() + "s")
        if code:
            for q in (low, high):
                q.update(system=UCUM, code=code)
        out.append({"outcome": {"text": f"{outcome} within {h:g} {unit}"},
                    "probabilityDecimal": round(r, 15), "whenRange": {"low": low, "high": high}})
    return out


def risk_assessment(bundle, pred: dict, record: dict, contribs: list[dict], basis: list[dict],
                    request_id: str) -> dict:
    """A validated FHIR RiskAssessment for one prediction."""
    from fhir.resources.R4B.riskassessment import RiskAssessment

    specs = bundle.feature_specs
    survival = "risk" in pred
    subject = next((b for b in basis if b["reference"].startswith("Patient/")), None)
    notes = [{"text": f"Top contributions (occlusion to the training reference): "
                      + "; ".join(contribution_text(c, record, specs, survival) for c in contribs)}]
    iv = interval_text(pred)
    if iv:
        notes.append({"text": iv})
    flags = pred.get("flags") or {}
    if pred.get("flagged"):
        parts = [f"{k.replace('_', ' ')}: {', '.join(v)}" for k, v in flags.items() if v]
        notes.append({"text": "Check before use: " + "; ".join(parts)})
    res = {
        "resourceType": "RiskAssessment",
        "identifier": [{"system": "urn:healthtransfer:request-id", "value": request_id}],
        "status": "final",
        "subject": subject or {"display": "patient of the submitted Bundle"},
        "occurrenceDateTime": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
        .isoformat(),
        "method": {"coding": [{"system": MODEL_SYSTEM, "code": bundle.model_version,
                               "display": f"healthtransfer {bundle.training.get('method')} "
                                          f"model"}],
                   "text": f"healthtransfer model {bundle.model_version} "
                           f"(method {bundle.training.get('method')}"
                           + (f", trained on {bundle.training['dataset']})" if bundle.training.get("dataset")
                              else ")")},
        "basis": [*basis, {"display": f"model bundle {bundle.model_version}"}],
        "prediction": _predictions(bundle, pred),
        "note": notes,
    }
    ra = RiskAssessment.model_validate(res)
    return json.loads(ra.model_dump_json())


# -- the router ----------------------------------------------------------------------------------
def fhir_router(ctx: ServiceContext):
    from fastapi import APIRouter, Depends, Request
    from fastapi.responses import JSONResponse, Response

    from ._auth import ApiKey

    router = APIRouter(tags=["FHIR"])
    maps = code_maps(ctx.bundle)

    def outcome(exc: FhirInputError, rid: str) -> JSONResponse:
        return JSONResponse(operation_outcome(exc.issues), status_code=exc.status,
                            media_type=FHIR_JSON, headers={"X-Request-ID": rid})

    @router.post("/fhir/RiskAssessment/$predict",
                 responses={200: {"description": "a FHIR RiskAssessment",
                                  "content": {FHIR_JSON: {}}},
                            400: {"description": "OperationOutcome: not a FHIR resource"},
                            401: {"description": "no or invalid API key"},
                            403: {"description": "key lacks the predict scope"},
                            422: {"description": "OperationOutcome naming the missing or "
                                                 "unusable code"},
                            503: {"description": "audit log unavailable: fail closed"}})
    async def predict_fhir(request: Request, key: ApiKey = Depends(ctx.require("predict"))):
        """FHIR R4 Bundle (Patient + Observations / Conditions) in, RiskAssessment out."""
        from starlette.concurrency import run_in_threadpool

        rid = ctx.rid(request)
        if not _HAVE_FHIR:
            return outcome(FhirInputError([_issue(
                "not-supported", "FHIR input needs the fhir.resources package: pip install "
                "'healthtransfer[serve]'")], 501), rid)
        try:
            payload = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            return outcome(FhirInputError([_issue("structure", "the body is not JSON")], 400), rid)
        try:
            resources = parse_resources(payload)
            record, basis = record_from_resources(resources, maps, ctx.bundle.feature_names)
            record = validate_record(ctx, record, maps)
        except FhirInputError as exc:
            return outcome(exc, rid)

        def work():
            pred = ctx.serve([record], rid, key)[0]
            return risk_assessment(ctx.bundle, pred, record,
                                   contributions(ctx.bundle, record,
                                                 predict_proba=ctx.predict_proba), basis, rid)
        ra = await run_in_threadpool(work)
        return Response(json.dumps(ra), media_type=FHIR_JSON)

    router.code_maps = maps  # type: ignore[attr-defined]  # for the CDS Hooks router
    return router
