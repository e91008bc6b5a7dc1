"""A real Flower deployment on loopback: one SuperLink and one SuperNode per UCI heart hospital,
each a separate process, the run submitted with ``flwr run`` (see healthtransfer.federated._deploy)."""

import time

import pytest

from healthtransfer.federated._deploy import deploy, flower_executable

from .conftest import make_cfg

needs_flower = pytest.mark.skipif(flower_executable("flower-superlink") is None,
                                  reason="the `flower-superlink` executable is not installed (flwr's console scripts)")


def test_generated_app_is_a_valid_flower_app(tmp_path):
    import tomllib

    from flwr.common.config import validate_config

    from healthtransfer.federated._deploy import write_app

    rc = {"plan": '{"cfg": {"a": "b\\c"}}', "study": "/x/y.toml", "result-path": "/r.json"}
    conf = tomllib.loads((write_app(tmp_path / "app", rc) / "pyproject.toml").read_text())
    assert conf["tool"]["flwr"]["app"]["config"] == rc
    comps = conf["tool"]["flwr"]["app"]["components"]
    assert comps == {"serverapp": "healthtransfer.federated._apps:server_app",
                     "clientapp": "healthtransfer.federated._apps:client_app"}
    ok, errors, _ = validate_config(conf)
    assert ok, errors


def _gone(pids, wait=10.0):
    """pids that still run (zombies count as gone) after waiting up to `wait` seconds."""
    import os

    def alive(pid):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        try:
            import psutil

            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except Exception:
            return True

    deadline = time.time() + wait
    while True:
        left = [p for p in pids if alive(p)]
        if not left or time.time() > deadline:
            return left
        time.sleep(0.5)


@pytest.mark.slow
@needs_flower
def test_loopback_four_hospitals(heart, tmp_path):
    spec, sites, frames = heart
    t0 = time.time()
    r = deploy(make_cfg(rounds=2, finetune_epochs=2, personalise="finetune"), spec, sites, frames=frames,
               workdir=tmp_path, timeout=280)
    assert time.time() - t0 < 300
    assert r["mode"].startswith("deployment")
    assert set(r["per_site"]) == set(sites)
    for m in r["per_site"].values():
        assert m["n_test"] > 0 and 0.0 <= m["global_accuracy"] <= 1.0 and "finetuned_auroc" in m
    assert r["summary"]["mean_global_auroc"] > 0.6
    assert [x["round"] for x in r["rounds_log"]] == [1, 2]
    assert all(x["accepted"] == sorted(sites) for x in r["rounds_log"])
    dep = r["deployment"]
    assert dep["superlink"].startswith("127.0.0.1:") and set(dep["supernodes"]) == set(sites)
    assert dep["listening"] and all(a.startswith("127.0.0.1:") for a in dep["listening"])  # loopback only
    assert len(dep["pids"]) >= 1 + len(sites)  # SuperLink + one SuperNode per site (+ their helpers)
    assert _gone(dep["pids"]) == []


@pytest.mark.slow
@needs_flower
def test_restarted_supernode_rejoins(heart, tmp_path):
    spec, sites, frames = heart
    r = deploy(make_cfg(rounds=3, finetune_epochs=0, round_timeout=25.0), spec, sites, frames=frames,
               workdir=tmp_path, timeout=280, rejoin={"va": 1})
    dep = r["deployment"]
    assert [x["site"] for x in dep["restarts"]] == ["va"]
    log = {x["round"]: x for x in r["rounds_log"]}
    assert sorted(log) == [1, 2, 3]
    assert "va" in log[3]["accepted"]  # training went on with the restarted node
    assert any(e["kind"] == "rejoined" and e.get("site") == "va" for e in r["events"])
    assert "rejoined" in dep["run_log"]  # the run log says so
    assert set(r["per_site"]) == set(sites)
    assert _gone(dep["pids"]) == []
