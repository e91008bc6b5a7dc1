"""Flower strategies (FedAvg, FedProx) with update validation, drop-out reporting and the
final per-site evaluation (global model, and the model fine-tuned locally at each site)."""

from __future__ import annotations

import json
import logging
import math
import time

from flwr.common import FitIns, EvaluateIns, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.strategy import FedAvg, FedProx

from ._validate import split_valid

__all__ = ["make_strategy", "ValidatingMixin"]

log = logging.getLogger("healthtransfer.federated")


class ValidatingMixin:
    """Mixed into a Flower strategy: rejects NaN / wrong-shape updates with a logged reason,
    reports dropped clients, keeps the previous model when fewer than ``min_fit_clients``
    valid updates arrive, and evaluates once, after the last round."""

    def _setup(self, *, num_rounds, site_of, extra_fit_config, eval_config, exclude_nodes, reference):
        self.num_rounds = num_rounds
        self.site_of = site_of  # node id (str) -> site
        self.extra_fit_config = extra_fit_config
        self.eval_config = eval_config
        self.exclude_nodes = set(exclude_nodes)
        self.reference = reference
        self.events: list[dict] = []
        self.round_log: list[dict] = []
        self.site_metrics: dict[str, dict] = {}
        self.fit_metrics: dict[int, dict] = {}
        self.progress_path: str | None = None
        self._absent: set[str] = set()

    def _progress(self, info: dict) -> None:
        if self.progress_path:
            with open(self.progress_path, "a") as fh:
                fh.write(json.dumps({**info, "time": time.time()}) + "\n")

    def _event(self, rnd, kind, message, **kw):
        self.events.append({"round": rnd, "kind": kind, "message": message, **kw})
        (log.warning if kind in ("rejected", "dropped", "skipped") else log.info)("round %s: %s", rnd, message)

    def configure_fit(self, server_round, parameters, client_manager):
        pairs = super().configure_fit(server_round, parameters, client_manager)
        out = []
        for proxy, ins in pairs:
            if proxy.cid in self.exclude_nodes:
                continue
            cfg = dict(ins.config)
            cfg.update(self.extra_fit_config)
            cfg["server_round"] = server_round
            out.append((proxy, FitIns(ins.parameters, cfg)))
        return out

    def aggregate_fit(self, server_round, results, failures):
        expected = sorted({self.site_of[c] for c in self.site_of if c not in self.exclude_nodes})
        arrived = []
        updates = []
        back = set()
        for proxy, res in results:
            site = str(res.metrics.get("site", self.site_of.get(proxy.cid, proxy.cid)))
            if proxy.cid not in self.site_of:  # a SuperNode that (re)connected during the run
                old = sorted(c for c, s in self.site_of.items() if s == site)
                for c in old:
                    del self.site_of[c]
                self.site_of[proxy.cid] = site
                if old:
                    back.add(site)
                    self._event(server_round, "rejoined", f"site '{site}' rejoined as node {proxy.cid} "
                                f"(was node {', '.join(old)})", site=site)
            arrived.append(site)
            updates.append((site, parameters_to_ndarrays(res.parameters), float(res.num_examples), proxy, res))
        dropped = sorted(set(expected) - set(arrived))
        for site in sorted((self._absent & set(arrived)) - back):
            self._event(server_round, "rejoined", f"site '{site}' rejoined and sent an update", site=site)
            back.add(site)
        back = sorted(back)
        self._absent = (self._absent | set(dropped)) - set(arrived)
        if failures or dropped:
            self._event(server_round, "dropped",
                        f"{len(failures)} client(s) failed or timed out ({', '.join(dropped) or 'unknown'}); "
                        f"continuing with the {len(results)} that answered")
        ok, rejected = split_valid([(s, a, w) for s, a, w, _, _ in updates], self.reference)
        for site, reason in rejected:
            self._event(server_round, "rejected", f"rejected the update from site '{site}': {reason}", site=site,
                        reason=reason)
        keep = {s for s, _, _ in ok}
        accepted = [(p, r) for s, _, _, p, r in updates if s in keep]
        self.fit_metrics[server_round] = {s: dict(r.metrics) for s, _, _, _, r in updates}
        info = {"round": server_round, "answered": sorted(arrived), "accepted": sorted(keep),
                "dropped": dropped, "rejected": [s for s, _ in rejected]}
        if back:
            info["rejoined"] = back
        self.round_log.append(info)
        self._progress(info)
        if len(accepted) < self.min_fit_clients:
            self._event(server_round, "skipped",
                        f"only {len(accepted)} valid update(s), below the minimum of {self.min_fit_clients}; "
                        "keeping the previous model")
            return None, {}
        if dropped or rejected:
            self._event(server_round, "continued",
                        f"aggregated {len(accepted)} of {len(expected)} sites (minimum {self.min_fit_clients} met)")
        params, metrics = super().aggregate_fit(server_round, accepted, [])
        if params is not None:
            self.reference = parameters_to_ndarrays(params)
        return params, metrics

    def configure_evaluate(self, server_round, parameters, client_manager):
        if server_round != self.num_rounds:
            return []
        nodes = list(client_manager.all().values())
        out = []
        for proxy in nodes:
            cfg = dict(self.eval_config)
            cfg["labelled"] = proxy.cid not in self.exclude_nodes
            out.append((proxy, EvaluateIns(parameters, cfg)))
        return out

    def aggregate_evaluate(self, server_round, results, failures):
        for _, res in results:
            m = dict(res.metrics)
            self.site_metrics[str(m.get("site"))] = m
        if failures:
            self._event(server_round, "dropped", f"{len(failures)} site(s) failed to evaluate")
        return None, {}

    def evaluate(self, server_round, parameters):
        return None


class HTFedAvg(ValidatingMixin, FedAvg):
    pass


class HTFedProx(ValidatingMixin, FedProx):
    pass


def make_strategy(cfg: dict, *, n_train_sites: int, n_sites: int, initial, site_of, extra_fit_config,
                  eval_config, exclude_nodes):
    kw = dict(fraction_fit=1.0, fraction_evaluate=1.0, min_fit_clients=min(cfg["min_fit_clients"], n_train_sites),
              min_evaluate_clients=1, min_available_clients=n_sites,
              initial_parameters=ndarrays_to_parameters(initial), accept_failures=True)
    if cfg["strategy"] == "fedprox":
        strat = HTFedProx(proximal_mu=cfg["proximal_mu"], **kw)
    else:
        strat = HTFedAvg(**kw)
    strat._setup(num_rounds=cfg["rounds"], site_of=site_of, extra_fit_config=extra_fit_config,
                 eval_config=eval_config, exclude_nodes=exclude_nodes, reference=initial)
    return strat
