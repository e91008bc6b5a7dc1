"""``serve --workers N``: N uvicorn worker processes behind one socket, one audit log.

uvicorn starts worker processes from an import string, so the service's arguments travel in
the environment variable ``HEALTHTRANSFER_SERVE_CONFIG`` (JSON: bundle path, key file path,
audit URL and sync level, batch limit; paths only, no secrets) and :func:`app_from_env` builds each worker's
app. Every worker appends to the same audit database: SQLite in WAL mode with a 30 s busy
timeout and ``synchronous=NORMAL`` unless ``audit_sync="full"`` (one writer at a time across
processes, each group of inserts its own transaction), or
PostgreSQL through a SQLAlchemy URL. ``tests/serve/test_workers.py`` checks that two workers
under concurrent load lose no audit record. Each worker keeps its own drift window and
``/metrics`` counters (Prometheus sums them per instance).

Example
-------
>>> run_workers("out/bundle", workers=2, audit_url="audit.sqlite")   # doctest: +SKIP
"""

from __future__ import annotations

import json
import os

__all__ = ["run_workers", "app_from_env", "ENV"]

ENV = "HEALTHTRANSFER_SERVE_CONFIG"


def app_from_env():
    """The service app described by :data:`ENV` (called once in every worker process)."""
    from ..errors import UserInputError
    from .app import create_app

    raw = os.environ.get(ENV)
    if not raw:
        raise UserInputError(f"{ENV} is not set", where="serve worker",
                             fix="start workers with `healthtransfer serve --workers N BUNDLE`")
    cfg = json.loads(raw)
    from ._logging import install

    install()  # uvicorn set up this worker's loggers before loading the app: redact them too
    app = create_app(cfg["bundle"], api_keys_file=cfg.get("api_keys_file"),
                      audit_url=cfg.get("audit_url"), max_batch=int(cfg.get("max_batch", 1000)),
                      no_auth=bool(cfg.get("no_auth")), trust=cfg.get("trust"),
                      allow_unsigned=bool(cfg.get("allow_unsigned")),
                      allowed_hosts=tuple(cfg.get("allowed_hosts") or ()),
                      audit_sync=str(cfg.get("audit_sync", "normal")))
    from . import freeze_startup_heap

    freeze_startup_heap()  # this worker's start-up objects: out of the GC's full collections
    return app


def run_workers(bundle, *, host: str, port: int, workers: int, api_keys_file=None,
                audit_url=None, max_batch: int = 1000, no_auth: bool = False, trust=None,
                allow_unsigned: bool = False, allowed_hosts=(), audit_sync: str = "normal") -> None:
    """Run ``workers`` uvicorn processes serving ``bundle`` (blocks)."""
    from pathlib import Path

    import uvicorn

    from ._audit import AuditLog, audit_url as _url

    bundle = Path(bundle).resolve()
    audit = _url(audit_url if audit_url is not None else bundle.parent / "audit.sqlite")
    AuditLog(audit, audit_sync=audit_sync).close()  # create the table (and WAL mode) once, before workers race to
    os.environ[ENV] = json.dumps({
        "bundle": str(bundle), "audit_url": audit, "max_batch": int(max_batch),
        "api_keys_file": None if api_keys_file is None else str(Path(api_keys_file).resolve()),
        "no_auth": bool(no_auth), "allow_unsigned": bool(allow_unsigned),
        "trust": None if trust is None else str(Path(trust).resolve()),
        "allowed_hosts": list(allowed_hosts or ()), "audit_sync": str(audit_sync)})
    uvicorn.run("healthtransfer.serve._workers:app_from_env", factory=True, host=host,
                port=port, workers=workers, access_log=False, log_level="info",
                server_header=False)
