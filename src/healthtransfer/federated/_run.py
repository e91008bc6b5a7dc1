"""Running a federated study: Flower's simulation runtime on one machine.

Flower's simulation runtime ships one backend, Ray. Here it runs with an in-process backend
(:class:`InProcessBackend`, a subclass of Flower's ``Backend``): the same SuperLink state,
message routing, ``ServerApp``/``ClientApp`` and workflows, with each ClientApp call made in
the calling process. ``backend="ray"`` keeps Flower's own Ray backend.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

__all__ = ["site_frames", "simulate", "InProcessBackend", "plan_from_study"]

log = logging.getLogger("healthtransfer.federated")


def site_frames(frame: pd.DataFrame, domain: str, label: str, sites: list[str], test_fraction: float,
                seed: int) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """Per-site stratified train/test split (each site splits its own rows)."""
    out = {}
    for s in sites:
        rows = frame[frame[domain].astype(str) == str(s)].reset_index(drop=True)
        y = rows[label]
        strat = y if y.nunique() > 1 and y.value_counts().min() > 2 else None
        tr, te = train_test_split(rows, test_size=test_fraction, random_state=seed, stratify=strat)
        out[s] = (tr.reset_index(drop=True), te.reset_index(drop=True))
    return out


def plan_from_study(study) -> tuple[dict, dict, list[str], dict]:
    """(cfg dict, spec, sites, site frames) from a validated Study with a [federated] table."""
    from ..data import load_dataset
    from ..errors import UserInputError
    from ..study.config import FederatedSection
    from ._preprocess import stats_bounds

    fed = study.federated or FederatedSection()
    d = study.data
    if d.dataset:
        ds = load_dataset(d.dataset, **({"data_dir": study.resolve(d.data_dir)} if d.data_dir else {}))
    else:
        from ..data import load_table

        ds = load_table(study.resolve(d.path), domain=d.domain, label=d.label)
    if d.features:
        ds = ds.with_features(d.features)
    sites = fed.sites or ds.domains
    missing = [s for s in sites if s not in ds.domains]
    if missing:
        raise UserInputError(f"sites {missing} are not in the data", where="[federated] sites",
                             fix=f"choose among {ds.domains}")
    cfg = fed.model_dump()
    spec = {"label": ds.label, "numeric": ds.numeric, "categorical": ds.categorical,
            **stats_bounds(ds.schema, ds.numeric, ds.categorical)}
    return cfg, spec, list(sites), site_frames(ds.frame, ds.domain, ds.label, sites, fed.test_fraction, fed.seed)


def _backend_class():
    from flwr.clientapp.client_app import LoadClientAppError
    from flwr.server.superlink.fleet.vce.backend import Backend
    from flwr.simulation.ray_transport.ray_actor import ClientAppException

    class InProcessBackend(Backend):
        """Runs each ClientApp call in this process, one at a time (deterministic, no Ray)."""

        def __init__(self, backend_config):
            super().__init__(backend_config)
            self.app_fn = None

        def build(self, app_fn):
            self.app_fn = app_fn

        @property
        def num_workers(self):
            return 1

        def is_worker_idle(self):
            return True

        def terminate(self):
            pass

        def process_message(self, message, context):
            try:
                # a transport hands each node its own copy (mods such as SecAgg+ edit it in place)
                message = copy.deepcopy(message)
                app = self.app_fn()
                out = app(message=message, context=context)
            except LoadClientAppError:
                raise
            except Exception as ex:  # reported to the server as a failed reply, like Ray's actor
                raise ClientAppException(str(ex)) from ex
            return out, context

    return InProcessBackend


InProcessBackend = None  # resolved lazily (flwr is an optional dependency)


@contextlib.contextmanager
def _inprocess_backend():
    import flwr.server.superlink.fleet.vce.backend.raybackend as rb

    global InProcessBackend
    InProcessBackend = InProcessBackend or _backend_class()
    old = rb.RayBackend
    rb.RayBackend = InProcessBackend
    try:
        yield
    finally:
        rb.RayBackend = old


def make_apps(cfg: dict, spec: dict, sites: list[str], frames: dict, *, faults: dict | None = None,
              fit_workflow_factory=None, client_hook=None, result: dict | None = None):
    """A (ServerApp, ClientApp) pair for the simulation runtime."""
    from flwr.client import ClientApp
    from flwr.client.mod import fixedclipping_mod, secaggplus_mod
    from flwr.common import Context
    from flwr.server import Grid, ServerApp

    from ._client import SiteClient
    from ._server import server_main

    result = result if result is not None else {}

    def client_fn(context: Context):
        site = str(context.node_config.get("site") or sites[int(context.node_config["partition-id"])])
        tr, te = frames[site]
        client = SiteClient(site, tr, te, spec, cfg, context=context, faults=faults)
        if client_hook:
            client_hook(client)
        return client.to_client()

    mods = []
    if cfg["secagg"] or fit_workflow_factory is not None:
        mods.append(secaggplus_mod)
    if cfg["privacy"]["mode"] == "client-clipping":
        mods.append(fixedclipping_mod)
    client_app = ClientApp(client_fn=client_fn, mods=mods)
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        result.update(server_main(grid, context, cfg, sites, fit_workflow_factory=fit_workflow_factory))

    return server_app, client_app, result


def simulate(cfg: dict, spec: dict, sites: list[str], frames: dict, *, backend: str = "inprocess",
             faults: dict | None = None, fit_workflow_factory=None, client_hook=None, verbose: bool = False) -> dict:
    """Run the job in Flower's simulation runtime; returns the run report."""
    from flwr.simulation import run_simulation

    server_app, client_app, result = make_apps(cfg, spec, sites, frames, faults=faults,
                                               fit_workflow_factory=fit_workflow_factory, client_hook=client_hook)
    ctx = _inprocess_backend() if backend == "inprocess" else contextlib.nullcontext()
    with ctx:
        run_simulation(server_app=server_app, client_app=client_app, num_supernodes=len(sites),
                       backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
                       verbose_logging=verbose)
    if not result:
        raise RuntimeError("the federated run ended without a result; see the Flower log above")
    result["mode"] = f"simulation ({backend})"
    return result


def write_result(result: dict, out: str | Path | None) -> None:
    if out:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, default=str))
