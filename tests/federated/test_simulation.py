"""Flower simulation on the four UCI heart hospitals (a few rounds each)."""

import logging

import numpy as np
import pytest

from healthtransfer.federated._run import simulate

from .conftest import make_cfg


def _check_report(r, sites):
    assert set(r["per_site"]) == set(sites)
    for m in r["per_site"].values():
        assert 0.0 <= m["global_accuracy"] <= 1.0
    return r


def test_fedavg_logreg_finetune(heart):
    spec, sites, frames = heart
    r = _check_report(simulate(make_cfg(personalise="finetune"), spec, sites, frames), sites)
    assert r["summary"]["mean_global_auroc"] > 0.7
    assert "mean_finetuned_auroc" in r["summary"]
    assert all(len(x["accepted"]) == 4 for x in r["rounds_log"])


def test_fedprox_mlp(heart):
    spec, sites, frames = heart
    r = _check_report(simulate(make_cfg(strategy="fedprox", model="mlp", proximal_mu=0.1), spec, sites, frames),
                      sites)
    assert r["strategy"] == "fedprox" and r["model"] == "mlp"
    assert r["summary"]["mean_global_auroc"] > 0.6


def test_dp_sgd_reports_epsilon(heart):
    spec, sites, frames = heart
    r = simulate(make_cfg(privacy={"mode": "dp-sgd", "epsilon": 5.0}), spec, sites, frames)
    eps = r["privacy"]["epsilon_per_site"]
    assert set(eps) == set(sites)
    assert all(0 < e <= 5.0 * 1.05 for e in eps.values())
    assert r["privacy"]["epsilon"] == max(eps.values())
    pre = r["privacy"]["preprocessing"]  # the statistics are counted too (issue 15, defect 8)
    assert pre["mechanism"] == "gaussian" and pre["epsilon"] == pytest.approx(1.0, rel=0.05)
    assert r["privacy"]["epsilon_total"] == pytest.approx(r["privacy"]["epsilon"] + pre["epsilon"])


def test_client_clipping_dp_reports_epsilon(heart):
    spec, sites, frames = heart
    r = simulate(make_cfg(rounds=2, privacy={"mode": "client-clipping", "epsilon": 10.0}), spec, sites, frames)
    assert r["privacy"]["level"] == "site" and 0 < r["privacy"]["epsilon"] <= 10.5


def test_unlabelled_target_domain_adaptation(heart):
    spec, sites, frames = heart
    r = simulate(make_cfg(target="va", target_labels=False, personalise="coral"), spec, sites, frames)
    assert all("va" not in x["answered"] for x in r["rounds_log"])  # the target never trains
    assert "global_auroc" in r["per_site"]["va"] and "finetuned_auroc" not in r["per_site"]["va"]


def test_faults_drop_nan_shape_rejoin(heart, caplog):
    spec, sites, frames = heart
    faults = {"drop": {"va": [2]}, "nan": {"switzerland": [2]}, "shape": {"hungarian": [3]}}
    with caplog.at_level(logging.WARNING, logger="healthtransfer.federated"):
        r = simulate(make_cfg(min_fit_clients=2), spec, sites, frames, faults=faults)
    log = {x["round"]: x for x in r["rounds_log"]}
    assert log[2]["dropped"] == ["va"] and log[2]["rejected"] == ["switzerland"]
    assert log[2]["accepted"] == ["cleveland", "hungarian"]  # minimum of 2 met: the round went on
    assert "va" in log[3]["accepted"]  # the dropped client rejoined
    assert log[3]["rejected"] == ["hungarian"]
    text = caplog.text
    assert "rejected the update from site 'switzerland'" in text and "non-finite" in text
    assert "rejected the update from site 'hungarian'" in text and "shape" in text
    assert "continuing with the 3 that answered" in text
    kinds = [(e["round"], e["kind"]) for e in r["events"]]
    assert (2, "continued") in kinds and (3, "continued") in kinds
    assert np.isfinite(r["summary"]["mean_global_auroc"])


def test_too_few_valid_updates_keeps_model(heart, caplog):
    spec, sites, frames = heart
    faults = {"nan": {s: [2] for s in ["cleveland", "hungarian", "switzerland"]}}
    r = simulate(make_cfg(rounds=2, min_fit_clients=2, finetune_epochs=0), spec, sites, frames, faults=faults)
    assert any(e["kind"] == "skipped" and e["round"] == 2 for e in r["events"])
