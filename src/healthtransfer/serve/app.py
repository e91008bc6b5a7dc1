"""The prediction service: a FastAPI app serving one verified bundle.

Closed by default: every endpoint except ``/``, ``/static``, ``/healthz`` and ``/readyz`` needs an
API key (see ``_auth``); ``no_auth=True`` is a local trial mode that serves predict only and
only to loopback clients. Requests whose Host header is not on the allow-list are refused
(DNS rebinding), bodies are bounded while they stream (``_limits``) and exception text never
reaches the log (``_logging``).

Endpoints:

- ``POST /v1/predict`` (scope ``predict``): ``{"record": {...}}`` or ``{"records": [...]}`` (at
  most ``max_batch``). Returns per record the probability of the positive class, the
  predicted class, an uncertainty interval when the bundle's metrics carry a target-test
  calibration table, and flags for missing inputs and inputs outside the training range.
  Every prediction is written to the audit log before the response; if it cannot be, 503.
- ``POST /v1/explain`` (scope ``predict``): per-feature contributions (see ``_explain``); it
  returns a risk too, so it is audited and monitored for drift exactly like a prediction.
- ``GET /v1/model`` (any key): model card, schema, metrics, versions.
- ``GET /v1/drift`` and ``GET /v1/audit`` (scope ``read``).
- ``GET /metrics`` (Prometheus text), ``GET /docs``, ``GET /openapi.json`` (scope ``read``).
- ``GET /healthz``, ``GET /readyz``, ``GET /`` (web page).

Invalid input -> 422 ``{"errors": [{"loc", "type", "msg", "expected"}]}`` with no input values.
Logs carry request ids, methods, paths, status codes and timings, never bodies.

Note: this module must not use ``from __future__ import annotations``: FastAPI reads the
annotations of the endpoint closures, whose request models are built at run time.
"""

import logging
import re
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from .. import __version__
from ..bundle import load_bundle
from ..errors import UserInputError
from ..bundle._reference import category_key
from ._audit import AuditLog, AuditUnavailable, audit_url as _audit_url, input_hasher, load_secret
from ._auth import ApiKey, KeyStore
from ._drift import DriftMonitor
from ._explain import explain_record
from ._limits import BodyLimit
from ._logging import install as _install_log_filter
from ._fast import Predictor
from ._group_commit import GroupCommit
from ._schemas import request_models, safe_errors

__all__ = ["create_app"]

log = logging.getLogger("healthtransfer.serve")
STATIC = Path(__file__).parent / "static"
_REQ_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")


class _Metrics:
    """Counters for /metrics (Prometheus text exposition format)."""

    BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

    def __init__(self):
        self.lock = threading.Lock()
        self.requests: dict[tuple, int] = {}
        self.latency: dict[str, list] = {}
        self.predictions = 0
        self.audit_failures = 0
        self.flagged = 0

    def observe(self, method, route, status, seconds):
        with self.lock:
            k = (method, route, str(status))
            self.requests[k] = self.requests.get(k, 0) + 1
            h = self.latency.setdefault(route, [[0] * len(self.BUCKETS), 0.0, 0])
            for i, b in enumerate(self.BUCKETS):
                if seconds <= b:
                    h[0][i] += 1
            h[1] += seconds
            h[2] += 1

    def render(self, drift: dict, model_version: str) -> str:
        esc = lambda s: str(s).replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")  # noqa: E731
        out = ["# HELP healthtransfer_model_info Model served by this process.",
               "# TYPE healthtransfer_model_info gauge",
               f'healthtransfer_model_info{{model_version="{esc(model_version)}",'
               f'version="{esc(__version__)}"}} 1',
               "# HELP healthtransfer_http_requests_total HTTP requests by route and status.",
               "# TYPE healthtransfer_http_requests_total counter"]
        with self.lock:
            for (m, r, s), n in sorted(self.requests.items()):
                out.append(f'healthtransfer_http_requests_total{{method="{esc(m)}",'
                           f'route="{esc(r)}",status="{s}"}} {n}')
            out += ["# HELP healthtransfer_http_request_duration_seconds Request latency.",
                    "# TYPE healthtransfer_http_request_duration_seconds histogram"]
            for r, (buckets, total, count) in sorted(self.latency.items()):
                for b, c in zip(self.BUCKETS, buckets):
                    out.append(f'healthtransfer_http_request_duration_seconds_bucket'
                               f'{{route="{esc(r)}",le="{b}"}} {c}')
                out.append(f'healthtransfer_http_request_duration_seconds_bucket'
                           f'{{route="{esc(r)}",le="+Inf"}} {count}')
                out.append(f'healthtransfer_http_request_duration_seconds_sum{{route="{esc(r)}"}} {total:.6f}')
                out.append(f'healthtransfer_http_request_duration_seconds_count{{route="{esc(r)}"}} {count}')
            out += ["# HELP healthtransfer_predictions_total Predictions returned (and audited).",
                    "# TYPE healthtransfer_predictions_total counter",
                    f"healthtransfer_predictions_total {self.predictions}",
                    "# HELP healthtransfer_flagged_predictions_total Predictions with missing or "
                    "out-of-training-range inputs.",
                    "# TYPE healthtransfer_flagged_predictions_total counter",
                    f"healthtransfer_flagged_predictions_total {self.flagged}",
                    "# HELP healthtransfer_audit_failures_total Requests refused (503) because the "
                    "audit log could not be written.",
                    "# TYPE healthtransfer_audit_failures_total counter",
                    f"healthtransfer_audit_failures_total {self.audit_failures}"]
        out += ["# HELP healthtransfer_drift_alarm 1 if any feature's PSI exceeds the threshold.",
                "# TYPE healthtransfer_drift_alarm gauge",
                f"healthtransfer_drift_alarm {int(drift['alarm'])}",
                "# HELP healthtransfer_drift_window Records in the drift window.",
                "# TYPE healthtransfer_drift_window gauge",
                f"healthtransfer_drift_window {drift['window']}",
                "# HELP healthtransfer_drift_psi PSI of recent requests vs training, per feature.",
                "# TYPE healthtransfer_drift_psi gauge"]
        for f in drift["features"]:
            if f["psi"] is not None:
                out.append(f'healthtransfer_drift_psi{{feature="{esc(f["name"])}"}} {f["psi"]:.6f}')
        return "\n".join(out) + "\n"


_SECURITY_HEADERS = (
    ("x-content-type-options", "nosniff"),
    ("content-security-policy",
     "default-src 'self'; img-src 'self' data:; object-src 'none'; frame-ancestors 'none'"),
    ("cache-control", "no-store"),
)


class _RequestContext:
    """Request id (``X-Request-ID`` if well formed, else a new one) in ``request.state``,
    security headers and the id on every response, latency and status counted per route, and
    one log line per request (ids, route, status, time; never bodies). Pure ASGI: it rewrites
    the ``http.response.start`` message and passes every other message through untouched."""

    def __init__(self, app, metrics: "_Metrics"):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = ""
        for k, v in scope["headers"]:
            if k == b"x-request-id":
                rid = v.decode("latin-1")
                break
        rid = rid if _REQ_ID.match(rid) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        t0 = time.perf_counter()

        async def send_with_context(message):
            if message["type"] == "http.response.start":
                dt = time.perf_counter() - t0
                status = message["status"]
                route = getattr(scope.get("route"), "path", None) or "unmatched"
                self.metrics.observe(scope["method"], route, status, dt)
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = rid
                for name, value in _SECURITY_HEADERS:
                    headers[name] = value
                log.info("request_id=%s key_id=%s %s %s status=%s ms=%.1f", rid,
                         state.get("key_id", "-"), scope["method"], route, status, 1000 * dt)
            await send(message)

        await self.app(scope, receive, send_with_context)


def _uncertainty(metrics: dict, p: float):
    """Observed event rate (with CI) of the target-test calibration bin containing ``p``,
    when the bundle's metrics carry one (``metrics["calibration"]``: a list of
    ``{"lo", "hi", "observed", "ci": [low, high], "n"}``)."""
    table = metrics.get("calibration") if isinstance(metrics, dict) else None
    if not isinstance(table, list):
        return None
    for b in table:
        try:
            lo, hi = float(b["lo"]), float(b["hi"])
        except (KeyError, TypeError, ValueError):
            continue
        if lo <= p <= hi:
            ci = b.get("ci") or [b.get("ci_low"), b.get("ci_high")]
            return {"source": "target-test calibration bin", "bin": [lo, hi],
                    "observed_rate": b.get("observed"), "interval": ci, "n": b.get("n")}
    return None


def create_app(bundle_dir, *, api_keys_file=None, audit_url=None, max_batch: int = 1000,
               drift_window: int = 1000, drift_threshold: float = 0.25,
               drift_min_count: int = 100, no_auth: bool = False, trust=None,
               allow_unsigned: bool = False, allowed_hosts=(), audit_secret=None,
               audit_sync: str = "normal") -> FastAPI:
    """The service for the bundle in ``bundle_dir``.

    ``api_keys_file``: JSON key file (``serve keys add``), required unless ``no_auth`` (then
    predict only, loopback clients only). ``trust``: public key(s) the bundle must be signed
    by (see :mod:`healthtransfer.bundle._sign`); without it, ``allow_unsigned=True`` must say
    that serving an unchecked bundle is intended. ``allowed_hosts``: Host header values
    accepted besides the loopback names. ``audit_url``: SQLAlchemy URL or SQLite path; default
    ``audit.sqlite`` beside the bundle folder. ``audit_secret``: file with the HMAC key of the
    audit input hashes (created, mode 0600, if missing); default ``audit.secret`` beside the
    bundle folder, never inside the audit database. ``audit_sync``: "normal" (default; SQLite
    WAL with ``synchronous=NORMAL``: a committed row survives a service crash, an OS crash or
    power loss can lose the last commits) or "full" (every commit waits for the disk).

    Example
    -------
    >>> app = create_app("out/bundle", api_keys_file="keys.json",  # doctest: +SKIP
    ...                  trust="site-a.key.pub.pem")
    """
    if api_keys_file is None and not no_auth:
        raise UserInputError("refusing to start without API keys", where="serve",
                             fix="pass --api-keys FILE (create it with `healthtransfer serve keys "
                                 "add`), or --no-auth for a predict-only trial on loopback")
    if api_keys_file is not None and no_auth:
        raise UserInputError("--no-auth and --api-keys contradict each other", where="serve",
                             fix="drop one of them")
    if trust is None and not allow_unsigned:
        raise UserInputError("refusing to serve a bundle whose origin is not checked",
                             where="serve", fix="sign it (`healthtransfer bundle sign`) and pass "
                                                "--trust PUBLIC_KEY, or pass --allow-unsigned")
    _install_log_filter()
    from ..bundle._outcome import is_outcome_bundle, load_outcome_bundle

    # survival / regression bundles (issue 17) answer /v1/predict with risks or values
    outcome_bundle = is_outcome_bundle(bundle_dir)  # decided once; every branch below reads it
    loader = load_outcome_bundle if outcome_bundle else load_bundle
    bundle = loader(bundle_dir, trust=trust, allow_unsigned=allow_unsigned)
    bundle_dir = Path(bundle_dir)
    store = KeyStore.load(api_keys_file) if api_keys_file is not None else None
    if store is None:
        log.warning("NO AUTHENTICATION (--no-auth): predict only, loopback clients only; "
                    "not for patient care")
    audit = AuditLog(_audit_url(audit_url if audit_url is not None
                                else bundle_dir.parent / "audit.sqlite"), audit_sync=audit_sync)
    input_hash = input_hasher(load_secret(audit_secret if audit_secret is not None
                                          else bundle_dir.parent / "audit.secret"))
    drift = DriftMonitor(bundle.reference, bundle.feature_names, window=drift_window,
                         threshold=drift_threshold, min_count=drift_min_count)
    metrics = _Metrics()
    # compiled array path, or the full one with a logged reason (outcome bundles: their own JSON model)
    predictor = Predictor(bundle, compile=not outcome_bundle)
    audit_commit = GroupCommit(audit.append)  # concurrent requests share one commit (fsync)
    specs = bundle.feature_specs
    ref = bundle.reference["features"]
    Record, PredictRequest, ExplainRequest = request_models(bundle.schema, max_batch)
    max_body = 64 * 1024 + 4096 * max_batch

    app = FastAPI(
        title="healthtransfer prediction service",
        version=__version__,
        description=f"Serves bundle {bundle.model_version}. " + __doc__.split("\n\n")[0],
        docs_url=None, redoc_url=None, openapi_url=None,  # served below, behind a read key
    )
    app.state.bundle, app.state.audit, app.state.drift = bundle, audit, drift
    app.state.predictor = predictor

    api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)
    bearer = HTTPBearer(auto_error=False)

    def require(scope):
        # async: a few microseconds of hashing, not worth a thread-pool hand-off per request
        async def dep(request: Request, x_api_key: str | None = Depends(api_key_header),
                cred: HTTPAuthorizationCredentials | None = Depends(bearer)) -> ApiKey:
            if store is None:  # --no-auth: predict only, and only from this machine
                client = request.client.host if request.client else ""
                if client not in ("127.0.0.1", "::1"):
                    raise HTTPException(403, "this service runs without authentication and "
                                             "answers only loopback clients")
                key = ApiKey("anonymous", ("predict",))
                if scope is not None and scope not in key.scopes:
                    raise HTTPException(403, "this service runs without authentication "
                                             "(--no-auth): only prediction is available")
            else:
                token = x_api_key or (cred.credentials if cred is not None else None)
                if not token:
                    raise HTTPException(401, "missing API key (X-API-Key header or Bearer token)",
                                        headers={"WWW-Authenticate": "Bearer"})
                key = store.authenticate(token)
                if key is None:
                    raise HTTPException(401, "invalid API key",
                                        headers={"WWW-Authenticate": "Bearer"})
                if scope is not None and scope not in key.scopes:
                    raise HTTPException(403, f"this API key lacks the '{scope}' scope")
            request.state.key_id = key.id
            return key
        return dep

    # -- middleware and error handlers ------------------------------------------------------
    # a pure ASGI middleware (no BaseHTTPMiddleware: its task group and response re-wrapping
    # cost about 1 ms of CPU per request); innermost of the three, as before
    app.add_middleware(_RequestContext, metrics=metrics)

    # Outermost last: the Host check and the body limit run before anything else reads
    # the request, the body limit before any JSON parsing.
    app.add_middleware(BodyLimit, max_body=max_body)
    app.add_middleware(TrustedHostMiddleware,
                       allowed_hosts=[*LOOPBACK_HOSTS, *[str(h) for h in allowed_hosts or ()]])

    def _rid(request: Request) -> str:
        return getattr(request.state, "request_id", "-")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return JSONResponse({"errors": safe_errors(exc.errors(), specs, max_batch),
                             "request_id": _rid(request)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"detail": exc.detail, "request_id": _rid(request)},
                            status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(AuditUnavailable)
    async def _audit_down(request: Request, exc: AuditUnavailable):
        metrics.audit_failures += 1
        log.error("request_id=%s audit log unavailable (%s); prediction refused", _rid(request), exc)
        return JSONResponse({"detail": "the audit log cannot be written, so no prediction is "
                                       "returned; check the audit database (disk space, "
                                       "permissions)", "request_id": _rid(request)},
                            status_code=503, headers={"Retry-After": "30"})

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception):
        log.error("request_id=%s internal error %s", _rid(request), type(exc).__name__)
        return JSONResponse({"detail": "internal error", "request_id": _rid(request)},
                            status_code=500)

    # -- prediction -------------------------------------------------------------------------
    seen_memo: dict = {}  # (feature, type, value) -> category observed in training?

    def _seen(name, v, observed) -> bool:
        k = (name, type(v), v)
        try:
            return seen_memo[k]
        except KeyError:
            ok = category_key(v) in observed
            if len(seen_memo) < 10_000:  # validated inputs: only the schema's categories
                seen_memo[k] = ok
            return ok
        except TypeError:
            return category_key(v) in observed

    def _flags(rec: dict) -> dict:
        missing, outside, unseen = [], [], []
        for name, v in rec.items():
            if v is None:
                missing.append(name)
                continue
            r = ref.get(name, {})
            if r.get("type") == "numeric":
                lo, hi = r.get("clip_low"), r.get("clip_high")
                if (lo is not None and v < lo) or (hi is not None and v > hi):
                    outside.append(name)
            elif r.get("observed_categories") is not None:
                if not _seen(name, v, r["observed_categories"]):
                    unseen.append(name)
        return {"missing": missing, "outside_training_range": outside,
                "unseen_category": unseen}

    def _predict(items: list[dict]):
        if outcome_bundle:  # survival / regression bundle (issue 17)
            out = [{**o, "flags": _flags(rec)} for rec, o in zip(items, bundle.predict_outcome(bundle.frame(items)))]
            return items, [{**o, "flagged": any(o["flags"].values())} for o in out]
        proba = predictor.predict_proba(items)
        classes, pos = bundle.classes, bundle.positive_index
        out = []
        for rec, p, k in zip(items, proba[:, pos].tolist(), np.argmax(proba, axis=1).tolist()):
            cls = classes[k]
            flags = _flags(rec)
            flagged = any(flags.values())
            out.append({"probability": p, "class": cls, "flagged": flagged, "flags": flags,
                        "uncertainty": _uncertainty(bundle.metrics, p)})
        return items, out

    @app.post("/v1/predict", tags=["prediction"],
              responses={401: {"description": "no or invalid API key"},
                         403: {"description": "key lacks the predict scope"},
                         413: {"description": "body too large"},
                         503: {"description": "audit log unavailable: fail closed"}})
    def predict(body: PredictRequest, request: Request,
                key: ApiKey = Depends(require("predict"))):
        """Risk for one record or a batch; every prediction is audited before it is returned."""
        rid = _rid(request)
        preds = _serve(body.items(), rid, key, "predict")
        # plain JSON types already: json.dumps directly, not FastAPI's jsonable_encoder walk
        # (a third of a 1,000-record batch's time)
        return JSONResponse({"request_id": rid, "model_version": bundle.model_version,
                             "positive_class": bundle.classes[bundle.positive_index] if bundle.classes else None,
                             "predictions": preds})

    def _serve(items: list[dict], rid: str, key: ApiKey, endpoint: str = "predict") -> list[dict]:
        """Predict, audit (before anything is returned: AuditUnavailable fails closed), update
        drift and counters: the one path of every endpoint that returns a risk (/v1/predict,
        /v1/explain, FHIR, CDS Hooks)."""
        _, preds = _predict(items)
        audit_commit.append([{"request_id": rid, "key_id": key.id,
                              "model_version": bundle.model_version,
                              "input_hash": input_hash(rec),
                              "output": {**{k: p[k] for k in ("probability", "class", "risk", "prediction",
                                                               "flagged") if k in p}, "endpoint": endpoint}}
                             for rec, p in zip(items, preds)])
        drift.update(items)
        with metrics.lock:
            metrics.predictions += len(preds)
            metrics.flagged += sum(p["flagged"] for p in preds)
        return preds

    @app.post("/v1/explain", tags=["prediction"],
              responses={401: {"description": "no or invalid API key"},
                         403: {"description": "key lacks the predict scope"},
                         413: {"description": "body too large"},
                         503: {"description": "audit log unavailable: fail closed"}})
    def explain(body: ExplainRequest, request: Request,
                key: ApiKey = Depends(require("predict"))):
        """Per-feature contributions to the log-odds, largest magnitude first. It carries the
        risk, so it is audited (fail closed) like a prediction."""
        rec = body.record.model_dump(by_alias=True)
        out = explain_record(bundle, rec, predictor.predict_proba)
        rid = _rid(request)
        _serve([rec], rid, key, "explain")
        out.update(request_id=rid, model_version=bundle.model_version)
        return out

    # -- model, drift, audit ------------------------------------------------------------------
    @app.get("/v1/model", tags=["model"])
    def model_info(key: ApiKey = Depends(require(None))):
        """Model card (Markdown), input schema, metrics and versions."""
        return {
            "model_version": bundle.model_version,
            "bundle_written_by": bundle.version,
            "service_version": __version__,
            "method": bundle.training.get("method"),
            "card": bundle.card,
            "schema": bundle.schema,
            "metrics": bundle.metrics,
            "training": {k: bundle.training.get(k) for k in
                         ("dataset", "domains", "n_rows", "sources", "target", "created")},
            # clipped quantiles (never a single patient's value; see bundle._reference)
            "training_ranges": {n: [r.get("clip_low"), r.get("clip_high")] for n, r in ref.items()
                                if r.get("type") == "numeric"},
            "max_batch": max_batch,
            "auth": "none: predict only, loopback only" if store is None else "api-key",
            "prediction_path": predictor.info(),
        }

    @app.get("/v1/drift", tags=["monitoring"],
             responses={401: {"description": "no or invalid API key"},
                        403: {"description": "key lacks the read scope"}})
    def drift_status(key: ApiKey = Depends(require("read"))):
        """Per-feature PSI of recent requests against the training reference."""
        return drift.status()

    @app.get("/v1/audit", tags=["monitoring"],
             responses={401: {"description": "no or invalid API key"},
                        403: {"description": "key lacks the read scope"},
                        503: {"description": "audit database unavailable"}})
    def audit_recent(limit: int = Query(50, ge=1, le=1000),
                     key: ApiKey = Depends(require("read"))):
        """Number of audit records and the most recent ones (hashes and outputs only)."""
        try:
            return {"count": audit.count(), "records": audit.recent(limit)}
        except Exception as exc:
            raise AuditUnavailable(type(exc).__name__) from None

    # -- operations -------------------------------------------------------------------------
    @app.get("/healthz", tags=["operations"])
    def healthz():
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"], responses={503: {"description": "not ready"}})
    def readyz():
        if not audit.ready():
            return JSONResponse({"status": "not ready", "reason": "audit database unavailable"},
                                status_code=503)
        return {"status": "ready", "model_version": bundle.model_version}

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    def prometheus(key: ApiKey = Depends(require("read"))):
        return PlainTextResponse(metrics.render(drift.status(), bundle.model_version),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(key: ApiKey = Depends(require("read"))):
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    def docs(key: ApiKey = Depends(require("read"))):
        return get_swagger_ui_html(openapi_url="/openapi.json", title=app.title)

    # -- FHIR R4 and CDS Hooks 2.0 (same auth scope, same audited path) ------------------------
    from ._cds import cds_router
    from ._fhir import ServiceContext, fhir_router

    # class-probability and survival bundles (a risk per horizon); a regression bundle predicts a
    # quantity, not a risk, so it has no RiskAssessment or risk card: those endpoints are absent
    if bundle.manifest.get("outcome") != "regression":  # verified against model.json by the loader
        ctx = ServiceContext(bundle=bundle, require=require, serve=_serve, rid=_rid, drift=drift,
                             record_model=Record, preview_model=ExplainRequest,
                             predict_proba=predictor.predict_proba)
        app.include_router(fhir_router(ctx))
        app.include_router(cds_router(ctx))

    # -- web page -----------------------------------------------------------------------------
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    if store is None:  # say it on the page, not only in the log
        page = page.replace("<main>", '<main>\n<p class="warning" id="no-auth-banner" '
                            'role="alert">This service runs WITHOUT authentication '
                            '(--no-auth): prediction only, from this computer only. '
                            'Not for patient care.</p>', 1)

    @app.get("/", include_in_schema=False)
    def index():
        return HTMLResponse(page)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
