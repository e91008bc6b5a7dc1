"""The ServerApp and ClientApp that a real Flower deployment (SuperLink + SuperNodes) runs.

These are the components named in the generated Flower App's ``pyproject.toml``
(``healthtransfer.federated._apps:server_app`` / ``client_app``, see :mod:`._deploy`).

* Run config (sent by ``flwr run`` to every process of the run): ``plan`` = JSON of the
  ``[federated]`` settings, the feature spec and the site list; ``study`` = path of the study
  file; ``result-path`` = where the ServerApp writes its report (JSON); ``progress-path`` = a
  JSON-lines file the ServerApp appends one line to per finished round.
* Node config (set per SuperNode with ``--node-config``): ``site`` = which hospital this node
  is; ``data`` = a pickle holding only that site's train/test rows (what the loopback
  deployment gives each node), or else ``study`` = the node's own copy of the study file
  (default: the run's), from which the ClientApp loads the data and keeps its site's rows.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

from flwr.client import ClientApp
from flwr.common import Context
from flwr.server import Grid, ServerApp

__all__ = ["server_app", "client_app"]

log = logging.getLogger("healthtransfer.federated")


@functools.lru_cache(maxsize=4)
def _plan(plan_json: str) -> dict:
    return json.loads(plan_json)


@functools.lru_cache(maxsize=8)
def _site_rows(study_path: str, site: str):
    """(train, test) frames of one site, split exactly as in simulation mode."""
    from ..study.config import load_study
    from ._run import plan_from_study

    _cfg, _spec, sites, frames = plan_from_study(load_study(study_path))
    if site not in frames:
        raise ValueError(f"this SuperNode's site '{site}' is not among the study's sites {sites}")
    return frames[site]


@functools.lru_cache(maxsize=8)
def _site_file(path: str):
    import pandas as pd

    return pd.read_parquet(f"{path}/train.parquet"), pd.read_parquet(f"{path}/test.parquet")


def _client_fn(context: Context):
    from ._client import SiteClient

    plan = _plan(str(context.run_config["plan"]))
    site = str(context.node_config["site"])
    if context.node_config.get("data"):  # this node's own rows, prepared for it (loopback deployment)
        tr, te = _site_file(str(context.node_config["data"]))
    else:
        study = str(context.node_config.get("study") or context.run_config["study"])
        tr, te = _site_rows(study, site)
    return SiteClient(site, tr, te, plan["spec"], plan["cfg"], context=context).to_client()


def _plan_mods(message, context, call_next):
    """Apply SecAgg+ / client-side clipping mods according to the run's plan."""
    from flwr.client.mod import fixedclipping_mod, secaggplus_mod

    cfg = _plan(str(context.run_config["plan"]))["cfg"]
    fn = call_next
    if cfg["privacy"]["mode"] == "client-clipping":
        fn = functools.partial(lambda m, c, nxt: fixedclipping_mod(m, c, nxt), nxt=fn)
    if cfg["secagg"]:
        fn = functools.partial(lambda m, c, nxt: secaggplus_mod(m, c, nxt), nxt=fn)
    return fn(message, context)


client_app = ClientApp(client_fn=_client_fn, mods=[_plan_mods])
server_app = ServerApp()


@server_app.main()
def _server_main(grid: Grid, context: Context) -> None:
    from ._server import server_main

    if not log.handlers:  # our round/drop/rejoin messages go to the run log (`flwr log`, --stream)
        h = logging.StreamHandler()
        h.setFormatter(logging.Formatter("%(levelname)s healthtransfer: %(message)s"))
        log.addHandler(h)
        log.setLevel(logging.INFO)
    rc = context.run_config
    plan = _plan(str(rc["plan"]))
    progress = str(rc.get("progress-path", "") or "")
    result_path = Path(str(rc["result-path"]))
    try:
        result = server_main(grid, context, plan["cfg"], plan["sites"], progress_path=progress or None)
        result["mode"] = "deployment (SuperLink + SuperNodes)"
    except Exception as ex:  # reported back to `federate` through the result file
        log.exception("the federated run failed")
        result = {"error": f"{type(ex).__name__}: {ex}"}
    tmp = result_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str))
    tmp.replace(result_path)
