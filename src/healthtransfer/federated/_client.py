"""The Flower client a site runs: it holds only its own harmonised rows."""

from __future__ import annotations

import copy
import json
import logging

import numpy as np
import pandas as pd
from flwr.client import NumPyClient
from flwr.common import ConfigRecord, Context

from . import _dp
from ._preprocess import (FederatedPreprocessor, coral_map, local_moments, local_stats,
                          private_stats, stats_privacy)

__all__ = ["SiteClient"]

log = logging.getLogger("healthtransfer.federated")


# torch (``._models``) and scikit-learn are imported where used: a deployed ClientApp runs in a
# fresh process per message, and the statistics phase needs neither.


def _scores(y, p) -> dict:
    from sklearn.metrics import accuracy_score, roc_auc_score

    y = np.asarray(y).astype(int)
    auroc = float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")
    return {"auroc": auroc, "accuracy": float(accuracy_score(y, (p >= 0.5).astype(int)))}


class SiteClient(NumPyClient):
    """One site. ``spec`` = label/numeric/categorical; ``cfg`` = the [federated] settings as a dict;
    ``faults`` (tests only) = {"drop"|"nan"|"shape": {site: [rounds]}}."""

    def __init__(self, site: str, train: pd.DataFrame, test: pd.DataFrame, spec: dict, cfg: dict,
                 context: Context | None = None, faults: dict | None = None):
        self.site, self.train, self.test, self.spec, self.cfg = site, train, test, spec, cfg
        self.ctx, self.faults = context, faults or {}

    # -- helpers ----------------------------------------------------------------------------
    def _xy(self, frame, prep):
        return prep.transform(frame), frame[self.spec["label"]].to_numpy(dtype=float)

    def _state(self) -> dict:
        if self.ctx is None:
            return {}
        rec = self.ctx.state.config_records.get("ht")
        return dict(rec) if rec is not None else {}

    def _save_state(self, d: dict) -> None:
        if self.ctx is not None:
            self.ctx.state.config_records["ht"] = ConfigRecord(d)

    def _fault(self, kind: str, rnd: int) -> bool:
        return rnd in set(self.faults.get(kind, {}).get(self.site, []))

    # -- Flower API -------------------------------------------------------------------------
    def get_properties(self, config):
        phase = str(config.get("phase", "stats"))
        if phase == "stats":
            # the noise level comes from this site's own plan, never from the request
            mech = stats_privacy(self.cfg)
            if mech is None:
                st = local_stats(self.train, self.spec["numeric"], self.spec["categorical"])
            else:
                st = private_stats(self.train, self.spec["numeric"], self.spec["categorical"],
                                   bounds=self.spec.get("bounds", {}),
                                   levels=self.spec.get("levels", {}),
                                   noise_multiplier=mech["noise_multiplier"])
            return {"site": self.site, "stats": json.dumps(st)}
        if phase == "moments":
            prep = FederatedPreprocessor.from_json(str(config["prep"]))
            return {"site": self.site, "moments": json.dumps(local_moments(prep.transform(self.train)))}
        raise ValueError(f"unknown phase {phase}")

    def fit(self, parameters, config):
        from ._models import get_weights, make_model, set_weights, train_local

        rnd = int(config.get("server_round", 0))
        if self._fault("drop", rnd):
            raise RuntimeError(f"site '{self.site}' dropped out in round {rnd} (simulated)")
        cfg = self.cfg
        prep = FederatedPreprocessor.from_json(str(config["prep"]))
        X, y = self._xy(self.train, prep)
        if "target_moments" in config:
            X = coral_map(X, local_moments(X), json.loads(str(config["target_moments"])))
        model = make_model(cfg["model"], X.shape[1], seed=cfg["seed"], hidden=cfg["hidden"])
        set_weights(model, parameters)
        priv = cfg["privacy"]
        dp = None
        state = self._state()
        if priv["mode"] == "dp-sgd":
            q = min(1.0, cfg["batch_size"] / len(X))
            steps = _dp.planned_steps(len(X), cfg["batch_size"], cfg["local_epochs"], cfg["rounds"])
            sigma = _dp.noise_for_epsilon(priv["epsilon"], priv["delta"], q, steps)
            dp = {"noise_multiplier": sigma, "max_grad_norm": priv["max_grad_norm"]}
        out = train_local(model, X, y, epochs=cfg["local_epochs"], lr=cfg["learning_rate"],
                          batch_size=cfg["batch_size"], seed=cfg["seed"] * 1000 + rnd,
                          proximal_mu=float(config.get("proximal_mu", 0.0)) if cfg["strategy"] == "fedprox" else 0.0,
                          dp=dp)
        metrics = {"site": self.site, "loss": float(out["loss"])}
        if dp:
            steps_done = int(state.get("dp_steps", 0)) + out["steps"]
            state["dp_steps"] = steps_done
            metrics["epsilon"] = _dp.spent_epsilon(dp["noise_multiplier"], out["sample_rate"], steps_done, priv["delta"])
            metrics["noise_multiplier"] = dp["noise_multiplier"]
        state["rounds_done"] = int(state.get("rounds_done", 0)) + 1
        self._save_state(state)
        weights = get_weights(model)
        if self._fault("nan", rnd):
            weights[0] = np.full_like(weights[0], np.nan)
        if self._fault("shape", rnd):
            weights[0] = np.zeros((weights[0].shape[0] + 1, 3), dtype=np.float32)
        return weights, len(X), metrics

    def evaluate(self, parameters, config):
        from ._models import finetune, make_model, predict_proba, set_weights

        cfg = self.cfg
        prep = FederatedPreprocessor.from_json(str(config["prep"]))
        Xte, yte = self._xy(self.test, prep)
        model = make_model(cfg["model"], Xte.shape[1], seed=cfg["seed"], hidden=cfg["hidden"])
        set_weights(model, parameters)
        p = predict_proba(model, Xte)
        res = {"site": self.site, "n_test": int(len(yte)), **{f"global_{k}": v for k, v in _scores(yte, p).items()}}
        ft_epochs = int(config.get("finetune_epochs", 0))
        labelled = bool(config.get("labelled", True))
        if ft_epochs > 0 and labelled:
            Xtr, ytr = self._xy(self.train, prep)
            ft = copy.deepcopy(model)
            finetune(ft, Xtr, ytr, epochs=ft_epochs, lr=cfg["finetune_lr"], batch_size=cfg["batch_size"],
                     seed=cfg["seed"], anchor=cfg["finetune_anchor"])
            res.update({f"finetuned_{k}": v for k, v in _scores(yte, predict_proba(ft, Xte)).items()})
        loss = float(np.mean(-(yte * np.log(np.clip(p, 1e-7, 1)) + (1 - yte) * np.log(np.clip(1 - p, 1e-7, 1)))))
        return loss, int(len(yte)), res
