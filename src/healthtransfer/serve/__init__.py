"""The prediction service (FastAPI + uvicorn) and the functions the CLI wires up.

``healthtransfer serve BUNDLE`` -> :func:`serve`; ``serve keys add`` -> :func:`keys_add`;
``audit export`` -> :func:`audit_export`; ``bundle inspect`` -> :func:`bundle_inspect`;
``bundle export --onnx`` -> :func:`bundle_export_onnx`. FastAPI and friends are imported only
when a function needs them (``pip install healthtransfer[serve]``).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

from ..errors import UserInputError

__all__ = ["audit_export", "bundle_export_onnx", "bundle_inspect", "create_app",
           "freeze_startup_heap", "keys_add", "make_server", "serve"]


def create_app(bundle_dir, **kw):
    """See :func:`healthtransfer.serve.app.create_app`."""
    from .app import create_app as _create

    return _create(bundle_dir, **kw)


def _is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(bundle, host: str = "127.0.0.1", port: int = 8000, api_keys=None, audit_db=None,
          max_batch: int = 1000, trust=None, allow_unsigned: bool = False, no_auth: bool = False,
          allowed_hosts=(), workers: int = 1, audit_sync: str = "normal") -> None:
    """Run the service with uvicorn (blocks). Closed by default: it needs an API key file
    unless ``no_auth`` (then it binds loopback only and serves predict only), and a trust
    store for the bundle's signature unless ``allow_unsigned``. Binds 127.0.0.1 unless told
    otherwise; a specific non-loopback ``host`` is added to the Host allow-list. ``workers``
    > 1 starts that many uvicorn worker processes sharing the audit database (see
    :mod:`._workers`). ``audit_sync``: "normal" (SQLite WAL + ``synchronous=NORMAL``, the
    default: durable against a service crash, not against an OS crash or power loss) or "full"
    (every audit commit waits for the disk); see :mod:`._audit`."""
    try:
        import uvicorn
    except ImportError:
        raise UserInputError("the service needs the serve extra",
                             fix="pip install 'healthtransfer[serve]'") from None
    if no_auth and not _is_loopback(host):
        raise UserInputError(f"refusing to serve on {host} without authentication",
                             where="serve", fix="bind 127.0.0.1, or pass --api-keys FILE "
                                                "instead of --no-auth")
    import logging

    logger = logging.getLogger("healthtransfer.serve")
    if not logger.handlers:  # request lines: ids, routes, status, timings; never bodies
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    hosts = list(allowed_hosts or ())
    if not _is_loopback(host) and host not in ("0.0.0.0", "::"):  # nosec B104 # a comparison, not a bind
        hosts.append(host)
    options = dict(api_keys_file=api_keys, audit_url=audit_db, max_batch=max_batch, no_auth=no_auth,
                   trust=trust, allow_unsigned=allow_unsigned, allowed_hosts=hosts,
                   audit_sync=audit_sync)
    if int(workers) > 1:
        from ._workers import run_workers

        # check everything (keys, signature, hosts) once here, before workers start
        create_app(bundle, **options)
        run_workers(bundle, host=host, port=int(port), workers=int(workers), **options)
        return
    app = create_app(bundle, **options)
    server = make_server(app, host, port)
    freeze_startup_heap()
    server.run()


def freeze_startup_heap() -> None:
    """Collect once, then take every object alive (libraries, bundle, app: ~350k objects) out
    of the cyclic garbage collector's view (:func:`gc.freeze`). Otherwise each full collection
    walks them all, a 250-400 ms pause that lands inside whichever request triggered it (the
    batch p95 and single-record p99 of ``benchmarks/serve_load.py``). Called by the serving
    entry points only, after the app is built; objects made later are collected as usual."""
    import gc

    gc.collect()
    gc.freeze()


def make_server(app, host: str = "127.0.0.1", port: int = 8000, **config):
    """A ``uvicorn.Server`` for ``app`` whose log cannot carry exception text or bodies."""
    import uvicorn

    from ._logging import install

    config = uvicorn.Config(app, host=host, port=int(port), **{
        "access_log": False, "log_level": "info", "server_header": False, **config})  # Config sets up uvicorn's loggers...
    install()  # ...so the redacting filter goes onto them afterwards
    return uvicorn.Server(config)


def keys_add(file, key_id: str, scopes=("predict",)) -> str:
    """Add an API key to ``file``; returns the plain key (show it once, it is not stored)."""
    from ._auth import add_key

    return add_key(Path(file), key_id, list(scopes))


def audit_export(audit_url, out_csv) -> int:
    """Write the audit log (SQLite path or SQLAlchemy URL) to CSV; returns the row count."""
    from ._audit import export_csv

    return export_csv(str(audit_url), Path(out_csv))


def bundle_inspect(bundle_dir) -> str:
    """Model card and schema of a verified bundle (Markdown text)."""
    from ..bundle import inspect_bundle

    return inspect_bundle(bundle_dir)


def bundle_export_onnx(bundle_dir, out_path=None) -> Path:
    """Write ``<bundle_dir>.onnx`` beside the bundle, checked against ONNX Runtime."""
    from ..bundle import export_onnx

    return export_onnx(bundle_dir, out_path)
