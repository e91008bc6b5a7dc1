"""CDS Hooks 2.0: ``GET /cds-services`` (discovery) and ``POST /cds-services/{id}``.

Two services share the model: ``healthtransfer-risk`` on ``patient-view`` and
``healthtransfer-risk-order-select`` on ``order-select``. Discovery lists one prefetch template
per coded feature (``Observation?patient={{context.patientId}}&code=<system>|<code>&_sort=-date
&_count=1``), the Patient, and one Condition search for the coded problems, all built from the
study schema's code maps (:mod:`._fhir`).

A call is answered from its ``prefetch`` only: this service never calls the EHR's FHIR server
(``fhirServer`` / ``fhirAuthorization`` are ignored), so no FHIR access token is ever used or
stored. Cards:

- the risk (survival bundles: one per horizon), with its calibrated interval and the main contributors (``info``; ``warning``
  when an input is missing, outside the training ranges, an unseen category, or drift is
  raised), with a link to the service's page for this request;
- a separate ``warning`` card naming what lies outside the training data, or the drift alarm;
- when prefetch lacks what the model needs, one card naming each missing item and its
  prefetch key, and no risk (the specification's alternative, HTTP 412, would leave the
  clinician with nothing to read).

Every card carrying a risk is audited (same path as ``/v1/predict``). Errors in the request
itself (not JSON, no ``hook``, wrong hook for the service) are HTTP 400 with a message.

Note: no ``from __future__ import annotations`` here; FastAPI reads the endpoint annotations.
"""

import json
import uuid

from ._fhir import (_HAVE_FHIR, FhirInputError, _label, contribution_text, horizon_risks, interval_text,
                    outcome_text, parse_resources)

__all__ = ["cds_router", "discovery", "SERVICES"]

SERVICES = {"healthtransfer-risk": "patient-view",
            "healthtransfer-risk-order-select": "order-select"}


def prefetch_templates(maps: dict) -> dict:
    """Prefetch key -> FHIR query template (the feature name is the key of its observation)."""
    out = {"patient": "Patient/{{context.patientId}}"}
    conds = []
    for name, m in maps.items():
        if m.resource == "Observation":
            out[name] = (f"Observation?patient={{{{context.patientId}}}}&code={m.system}|{m.code}"
                         "&_sort=-date&_count=1")
        elif m.resource == "Condition":
            conds.append(f"{m.system}|{m.code}")
    if conds:
        out["conditions"] = "Condition?patient={{context.patientId}}&code=" + ",".join(conds)
    return out


def _prefetch_key(name: str, m) -> str:
    return {"Patient": "patient", "Condition": "conditions"}.get(m.resource, name)


def discovery(bundle, maps: dict) -> dict:
    what = outcome_text(bundle)
    if bundle.manifest.get("outcome") == "survival":
        what += " within " + ", ".join(f"{float(h):g}" for h in bundle.model["horizons"]) + " " \
            + str(bundle.model.get("time_unit", "days"))
    pre = prefetch_templates(maps)
    return {"services": [
        {"hook": hook, "id": sid,
         "title": f"healthtransfer risk of {what}",
         "description": f"Risk of {what} from model {bundle.model_version} "
                        f"({bundle.training.get('method')}), with its calibrated interval, "
                        "main contributors and data warnings.",
         "prefetch": pre, "usageRequirements": "Send every prefetch key; the service never "
                                                "queries the FHIR server."}
        for sid, hook in SERVICES.items()]}


def _resources_from_prefetch(prefetch: dict, templates: dict) -> list:
    """All resources in the prefetch values of our template keys (others are ignored)."""
    resources: list = []
    for key in templates:
        value = prefetch.get(key)
        if value is None:  # null: the EHR has no such data
            continue
        resources += parse_resources(value)
    return resources


def _card(summary: str, indicator: str, detail: str, source: dict, links=None) -> dict:
    card = {"uuid": str(uuid.uuid4()), "summary": summary[:139], "indicator": indicator,
            "detail": detail, "source": source}
    if links:
        card["links"] = links
    return card


def cds_router(ctx):
    from fastapi import APIRouter, Depends, HTTPException, Request
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    from ._auth import ApiKey
    from ._fhir import code_maps, contributions, record_from_resources, validate_record

    bundle = ctx.bundle
    maps = code_maps(bundle)
    templates = prefetch_templates(maps)
    outcome = outcome_text(bundle)
    router = APIRouter(tags=["CDS Hooks"])

    @router.get("/cds-services")
    def cds_discovery():
        """CDS Hooks discovery: the services, their hooks and prefetch templates."""
        return discovery(bundle, maps)

    @router.post("/cds-services/{service_id}",
                 responses={400: {"description": "not a CDS Hooks request for this service"},
                            401: {"description": "no or invalid API key"},
                            403: {"description": "key lacks the predict scope"},
                            404: {"description": "no such service"},
                            503: {"description": "audit log unavailable: fail closed"}})
    async def cds_call(service_id: str, request: Request,
                       key: ApiKey = Depends(ctx.require("predict"))):
        """A CDS Hooks call: cards from the prefetched Patient, Observations and Conditions."""
        hook = SERVICES.get(service_id)
        if hook is None:
            raise HTTPException(404, f"no CDS service '{service_id}'; GET /cds-services lists "
                                     "them")
        try:
            req = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            raise HTTPException(400, "the body is not JSON") from None
        if not isinstance(req, dict) or not isinstance(req.get("context"), dict) \
                or not isinstance(req.get("hookInstance"), str):
            raise HTTPException(400, "not a CDS Hooks request: expected an object with hook, "
                                     "hookInstance and context")
        if req.get("hook") != hook:
            raise HTTPException(400, f"service '{service_id}' answers the '{hook}' hook")
        prefetch = req.get("prefetch") or {}
        if not isinstance(prefetch, dict):
            raise HTTPException(400, "prefetch must be an object of prefetch key -> resource")
        rid = ctx.rid(request)
        base = str(request.base_url).rstrip("/")
        source = {"label": f"healthtransfer model {bundle.model_version}", "url": f"{base}/"}
        if not _HAVE_FHIR:
            raise HTTPException(501, "CDS Hooks needs the fhir.resources package: pip install "
                                     "'healthtransfer[serve]'")
        try:
            resources = _resources_from_prefetch(prefetch, templates)
            record, _ = record_from_resources(resources, maps, bundle.feature_names)
            record = validate_record(ctx, record, maps)
        except FhirInputError as exc:
            absent_keys = [k for k in templates if k not in prefetch]
            lines = [f"- {i['diagnostics']}" for i in exc.issues]
            for name, m in maps.items():
                k = _prefetch_key(name, m)
                if m.required and k in absent_keys:
                    lines.append(f"- prefetch '{k}' was not sent ({_label(m)})")
            detail = ("The risk was not computed because the EHR did not provide what the "
                      "model needs:\n\n" + "\n".join(dict.fromkeys(lines))
                      + "\n\nThis service never queries the FHIR server: configure the EHR to "
                        "send the prefetch listed at `GET /cds-services`.")
            return JSONResponse({"cards": [_card(
                "Risk not computed: required data missing", "warning", detail, source)]})

        return {"cards": await run_in_threadpool(cards_for, record, rid, key, base)}

    def cards_for(record: dict, rid: str, key, base: str) -> list[dict]:
        """Predict (audited) and build the cards for one validated record."""
        source = {"label": f"healthtransfer model {bundle.model_version}", "url": f"{base}/"}
        pred = ctx.serve([record], rid, key)[0]
        contribs = contributions(bundle, record, predict_proba=ctx.predict_proba)
        drift = ctx.drift.status()
        flags = pred.get("flags") or {}
        iv = interval_text(pred)
        warn = bool(pred.get("flagged") or drift.get("alarm"))
        survival = "risk" in pred
        if survival:  # one risk per horizon (no calibrated interval for survival bundles)
            hz = horizon_risks(bundle, pred)
            parts = [f"{100 * r:.0f}% within {h:g} {u}" for h, r, u in hz]
            summary = f"Risk of {outcome}: " + "; ".join(parts)
            while len(summary) > 139 and len(parts) > 1:  # cut at a horizon, never inside a number
                parts.pop()
                summary = f"Risk of {outcome}: " + "; ".join(parts) + "; …"
            head = [f"- **Probability of {outcome} within {h:g} {u}**: {100 * r:.1f}%" for h, r, u in hz]
            scale = "log relative hazard"
        else:
            p = float(pred["probability"])
            summary = f"Risk of {outcome}: {100 * p:.0f}%"
            u = pred.get("uncertainty") or {}
            if u.get("interval") and None not in u["interval"]:
                summary += f" (interval {100 * u['interval'][0]:.0f}-{100 * u['interval'][1]:.0f}%)"
            head = [f"**Probability of {outcome}**: {100 * p:.1f}%"]
            scale = "log-odds"
        specs = bundle.feature_specs
        detail = "\n".join([
            *head,
            "",
            f"**Calibrated interval**: {iv}" if iv else "**Calibrated interval**: not available "
            + ("for survival models (the study report gives observed/expected events per horizon)" if survival
               else "for this model (no target-test calibration table in the bundle)"),
            "",
            f"**Main contributors** (change in {scale} against the training reference):",
            *[f"- {contribution_text(c, record, specs, survival)}" for c in contribs],
            "",
            f"Model `{bundle.model_version}` ({bundle.training.get('method')}); request "
            f"`{rid}` is in the audit log.",
        ])
        links = [{"label": "Open this result in the risk service", "type": "absolute",
                  "url": f"{base}/?request_id={rid}"}]
        cards = [_card(summary, "warning" if warn else "info", detail, source, links)]
        problems = [f"{k.replace('_', ' ')}: {', '.join(v)}" for k, v in flags.items() if v]
        if drift.get("alarm"):
            top = [f["name"] for f in drift.get("features", []) if f.get("alarm")][:5]
            problems.append("drift alarm: recent inputs differ from the training data "
                            f"({', '.join(top)})")
        if problems:
            cards.append(_card(
                "Check inputs: " + "; ".join(problems), "warning",
                "The model was trained on data that did not look like this, so the risk may be "
                "less reliable:\n\n" + "\n".join(f"- {x}" for x in problems), source, links))
        return cards

    @router.post("/cds-services/{service_id}/preview", include_in_schema=True,
                 responses={401: {"description": "no or invalid API key"},
                            403: {"description": "key lacks the predict scope"},
                            404: {"description": "no such service"}})
    async def cds_preview(service_id: str, body: ctx.preview_model, request: Request,
                          key: ApiKey = Depends(ctx.require("predict"))):
        """The cards this service would return for one record (``{"record": {...}}``, as for
        /v1/predict): what the web page shows so a clinician sees the EHR's view. Audited."""
        if service_id not in SERVICES:
            raise HTTPException(404, f"no CDS service '{service_id}'")
        record = body.record.model_dump(by_alias=True)
        base = str(request.base_url).rstrip("/")
        return {"cards": await run_in_threadpool(cards_for, record, ctx.rid(request), key, base)}

    return router