"""A small bundle from the bundled UCI heart data, for tests and smoke checks (a test fixture: it
lives here, not in the package; ``benchmarks/serve_load.py`` loads it by path):
Cleveland (source) + ``n_target`` labelled VA rows, ten features, one baseline method.
The metrics are computed on the remaining VA rows (bootstrap CIs are left to the study
runner; here a normal-approximation CI for the AUROC keeps it fast)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from healthtransfer.data.sources import HEART_CATEGORICAL as CATEGORICAL
from healthtransfer.data.sources import HEART_FEATURES as FEATURES

__all__ = ["FEATURES", "CATEGORICAL", "build_uci_bundle", "uci_frames"]


def uci_frames(n_target: int = 20):
    from healthtransfer.data import load_dataset

    ds = load_dataset("uci_heart").with_features(FEATURES)
    f = ds.frame
    src = f[f[ds.domain] == "cleveland"]
    tgt = f[f[ds.domain] == "va"]
    train = pd.concat([src, tgt.iloc[:n_target]])
    test = tgt.iloc[n_target:]
    return ds, train, test


def _auc_ci(y, p):
    from sklearn.metrics import roc_auc_score

    auc = float(roc_auc_score(y, p))
    n1, n0 = int(np.sum(y == 1)), int(np.sum(y == 0))
    q1, q2 = auc / (2 - auc), 2 * auc ** 2 / (1 + auc)  # Hanley & McNeil (1982)
    se = np.sqrt((auc * (1 - auc) + (n1 - 1) * (q1 - auc ** 2) + (n0 - 1) * (q2 - auc ** 2))
                 / max(n1 * n0, 1))
    return {"value": auc, "ci": [max(0.0, auc - 1.96 * se), min(1.0, auc + 1.96 * se)],
            "n": int(len(y))}


def build_uci_bundle(out_dir, method: str = "pooled_lr", n_target: int = 20,
                     random_state: int = 0) -> Path:
    from healthtransfer.bundle._write import write_bundle
    from healthtransfer.data.preprocess import make_preprocessor
    from healthtransfer.methods import make_method

    ds, train, test = uci_frames(n_target)
    numeric = [c for c in FEATURES if c not in CATEGORICAL]
    pre = make_preprocessor(numeric, CATEGORICAL).fit(train[FEATURES])
    X = pre.transform(train[FEATURES])
    dom = np.where(train[ds.domain] == "cleveland", 1, -1)
    from healthtransfer.methods import baselines_registry  # baselines without importing torch/skada

    spec = next((m for m in baselines_registry.METHODS if m.name == method), None)
    est = (spec.factory(random_state=random_state) if spec is not None
           else make_method(method, random_state=random_state))
    model = est.fit(
        X, train[ds.label].to_numpy(), sample_domain=dom)
    p = model.predict_proba(pre.transform(test[FEATURES]))[:, 1]
    y = test[ds.label].to_numpy()
    metrics = {
        "target": "va",
        "overall": {"auroc": _auc_ci(y, p), "brier": float(np.mean((p - y) ** 2))},
        "subgroups": {f"sex={int(s)}": {"auroc": _auc_ci(y[m], p[m])}
                      for s in (0, 1) if (m := test["sex"].to_numpy() == s).sum() > 10
                      and len(np.unique(y[m])) == 2},
    }
    return write_bundle(out_dir, model=model, preprocessor=pre, dataset=ds, training_frame=train,
                        method=method, metrics=metrics,
                        extra={"sources": ["cleveland"], "target": "va", "n_target": n_target})
