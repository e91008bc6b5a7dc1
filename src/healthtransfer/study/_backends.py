"""joblib backends for study sweeps: ``"loky"`` (local processes, the default), ``"threading"``,
``"ray"`` (a Ray cluster) and ``"dask"`` (a dask.distributed cluster).

:func:`parallel_backend` is a context manager that registers the backend if it needs
registering and makes it joblib's active backend, so the same ``Parallel(...)`` call in
:func:`~healthtransfer.study.run.run_study` runs locally or on a cluster. Units of work are
pure functions of their arguments (seeded), so results do not depend on the backend.

- ``ray``: connects to ``address`` (or ``RAY_ADDRESS``) if Ray is not initialised yet; with
  neither it starts a local Ray instance (``ray.init()``), which it shuts down on exit.
- ``dask``: uses the current ``dask.distributed.Client`` or creates a local one.

Example
-------
>>> from joblib import Parallel, delayed
>>> with parallel_backend("loky", n_jobs=1):
...     Parallel()(delayed(abs)(-i) for i in range(3))
[0, 1, 2]
"""

from __future__ import annotations

import os
from contextlib import contextmanager

__all__ = ["parallel_backend", "BACKENDS"]

BACKENDS = ("loky", "threading", "multiprocessing", "sequential", "ray", "dask")


@contextmanager
def parallel_backend(name: str | None, n_jobs: int | None = None, address: str | None = None,
                     **ray_init):
    """Make ``name`` joblib's active backend for the ``with`` block.

    ``None`` / ``"local"`` / ``"loky"`` use joblib's default process pool. Raises
    ``ImportError`` with the install hint when ray or dask is not installed.
    """
    import joblib

    if name in (None, "", "local"):
        name = "loky"
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")
    if name == "ray":
        try:
            import ray
            from ray.util.joblib import register_ray
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("backend='ray' needs Ray: pip install 'healthtransfer[scale]'") from exc
        register_ray()
        started = False
        if not ray.is_initialized():
            addr = address or os.environ.get("RAY_ADDRESS")
            ray.init(address=addr, include_dashboard=False, log_to_driver=False,
                     ignore_reinit_error=True, **ray_init)
            started = True
        try:
            with joblib.parallel_backend("ray", n_jobs=n_jobs if n_jobs is not None else -1):
                yield name
        finally:
            if started:
                ray.shutdown()
        return
    if name == "dask":
        try:
            from dask.distributed import Client, get_client
        except ImportError as exc:  # pragma: no cover
            raise ImportError("backend='dask' needs dask.distributed: pip install 'dask[distributed]'") from exc
        try:
            client, own = get_client(), False
        except ValueError:
            client, own = Client(address) if address else Client(processes=True), True
        try:
            with joblib.parallel_backend("dask", n_jobs=n_jobs if n_jobs is not None else -1):
                yield name
        finally:
            if own:
                client.close()
        return
    with joblib.parallel_backend(name, n_jobs=n_jobs if n_jobs is not None else 1):
        yield name
