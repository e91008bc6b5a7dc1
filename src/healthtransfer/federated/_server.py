"""The ServerApp logic: federated statistics, then Flower's training workflow (optionally
SecAgg+ and DP), then one evaluation round at every site."""

from __future__ import annotations

import json
import logging
import time

from flwr.common import GetPropertiesIns, Message, ndarrays_to_parameters
from flwr.common.constant import MessageTypeLegacy
from flwr.compat.common.recorddict_compat import (getpropertiesins_to_recorddict,
                                                  recorddict_to_getpropertiesres)
from flwr.server import LegacyContext, ServerConfig
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

from . import _dp
from ._models import get_weights, make_model
from ._preprocess import FederatedPreprocessor, merge_stats, stats_privacy
from ._strategy import make_strategy

__all__ = ["server_main"]

log = logging.getLogger("healthtransfer.federated")


def _wait_nodes(grid, n: int, timeout: float) -> list[int]:
    t0 = time.time()
    while True:
        ids = list(grid.get_node_ids())
        if len(ids) >= n:
            return ids
        if time.time() - t0 > timeout:
            raise RuntimeError(f"only {len(ids)} of {n} sites connected within {timeout:.0f}s")
        time.sleep(0.5)


def _query(grid, node_ids, config: dict, timeout: float) -> dict[int, dict]:
    msgs = [Message(content=getpropertiesins_to_recorddict(GetPropertiesIns(config=config)), dst_node_id=nid,
                    message_type=MessageTypeLegacy.GET_PROPERTIES) for nid in node_ids]
    out = {}
    for reply in grid.send_and_receive(msgs, timeout=timeout):
        if reply.has_error():
            log.warning("site query failed: %s", reply.error.reason)
            continue
        out[reply.metadata.src_node_id] = dict(recorddict_to_getpropertiesres(reply.content).properties)
    return out


def server_main(grid, context, cfg: dict, sites: list[str], *, fit_workflow_factory=None,
                progress_path: str | None = None) -> dict:
    """Run one federated job; returns the run report (also what `federate` returns).
    ``progress_path``: append one JSON line per finished round there (deployment mode)."""
    t_start = time.time()
    target = cfg.get("target")
    unlabelled = {target} if target and not cfg.get("target_labels", True) else set()
    node_ids = _wait_nodes(grid, len(sites), timeout=max(60.0, cfg["round_timeout"]))
    # 1. federated preprocessing statistics (aggregates only)
    replies = _query(grid, node_ids, {"phase": "stats"}, cfg["round_timeout"])
    site_of = {str(nid): str(r["site"]) for nid, r in replies.items()}
    stats = merge_stats([json.loads(r["stats"]) for r in replies.values()])
    prep = FederatedPreprocessor(stats)
    prep_json = prep.to_json()
    extra_fit = {"prep": prep_json}
    exclude = {nid for nid, s in site_of.items() if s in unlabelled}
    # 2. optional: the unlabelled target's feature moments (for federated CORAL)
    if cfg["personalise"] == "coral":
        if not target:
            raise ValueError("personalise = 'coral' needs a `target` site")
        tnodes = [int(n) for n, s in site_of.items() if s == target]
        mom = _query(grid, tnodes, {"phase": "moments", "prep": prep_json}, cfg["round_timeout"])
        if not mom:
            raise RuntimeError(f"target site '{target}' did not share its feature moments")
        extra_fit["target_moments"] = next(iter(mom.values()))["moments"]
    initial = get_weights(make_model(cfg["model"], prep.n_features, seed=cfg["seed"], hidden=cfg["hidden"]))
    eval_cfg = {"prep": prep_json,
                "finetune_epochs": cfg["finetune_epochs"] if cfg["personalise"] == "finetune" else 0}
    n_train = len([s for s in site_of.values() if s not in unlabelled])
    inner = make_strategy(cfg, n_train_sites=n_train, n_sites=len(sites), initial=initial, site_of=site_of,
                          extra_fit_config=extra_fit, eval_config=eval_cfg, exclude_nodes=exclude)
    inner.progress_path = progress_path
    strategy = inner
    priv = cfg["privacy"]
    privacy = {"mode": priv["mode"]}
    if priv["mode"] == "client-clipping":
        from flwr.server.strategy import DifferentialPrivacyClientSideFixedClipping

        sigma = priv.get("noise_multiplier")
        if sigma is None:
            sigma = _dp.noise_for_epsilon(priv["epsilon"], priv["delta"], 1.0, cfg["rounds"])
        strategy = DifferentialPrivacyClientSideFixedClipping(inner, noise_multiplier=sigma,
                                                              clipping_norm=priv["clipping_norm"],
                                                              num_sampled_clients=n_train)
        privacy.update(noise_multiplier=sigma, clipping_norm=priv["clipping_norm"], level="site",
                       epsilon=_dp.spent_epsilon(sigma, 1.0, cfg["rounds"], priv["delta"]), delta=priv["delta"])
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=cfg["rounds"],
                                                                round_timeout=cfg["round_timeout"]),
                           strategy=strategy)
    if fit_workflow_factory is not None:
        fit_wf = fit_workflow_factory()
    elif cfg["secagg"]:
        fit_wf = SecAggPlusWorkflow(num_shares=min(cfg["secagg_shares"], n_train),
                                    reconstruction_threshold=min(cfg["secagg_threshold"], n_train),
                                    timeout=cfg["round_timeout"])
    else:
        fit_wf = None
    DefaultWorkflow(fit_workflow=fit_wf)(grid, legacy)
    if priv["mode"] == "dp-sgd":
        per_site = {}
        for rnd in sorted(inner.fit_metrics):
            for site, m in inner.fit_metrics[rnd].items():
                if "epsilon" in m:
                    per_site[site] = float(m["epsilon"])
        privacy.update(level="record", delta=priv["delta"], target_epsilon=priv["epsilon"],
                       epsilon_per_site=per_site, epsilon=max(per_site.values()) if per_site else None)
    mech = stats_privacy(cfg)
    privacy["preprocessing"] = mech or {"mechanism": "none: statistics sent in the clear "
                                                     "(the run is not private)"}
    if mech is not None:  # basic composition: an upper bound on the whole run's epsilon
        privacy["epsilon_total"] = float(privacy.get("epsilon") or 0.0) + mech["epsilon"]
    sm = inner.site_metrics
    summary = {}
    for key in ("global_auroc", "global_accuracy", "finetuned_auroc", "finetuned_accuracy"):
        vals = [m[key] for m in sm.values() if key in m and m[key] == m[key]]
        if vals:
            summary[f"mean_{key}"] = float(sum(vals) / len(vals))
    return {
        "sites": sites, "site_of_node": site_of, "strategy": cfg["strategy"], "model": cfg["model"],
        "rounds": cfg["rounds"], "personalise": cfg["personalise"], "secagg": bool(cfg["secagg"]),
        "privacy": privacy, "preprocessing": {"features": prep.feature_names, "n_rows": stats["n"]},
        "per_site": sm, "summary": summary, "rounds_log": inner.round_log, "events": inner.events,
        "seconds": round(time.time() - t_start, 2),
    }
