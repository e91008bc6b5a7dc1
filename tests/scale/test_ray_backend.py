"""The same study sweep on a local Ray cluster (127.0.0.1) gives the local backend's records."""

import math

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.util.joblib")

from healthtransfer.study import Study  # noqa: E402
from healthtransfer.study.run import run_study  # noqa: E402

_VOLATILE = {"fit_seconds"}


def _study():
    return Study.model_validate({
        "study": {"name": "ray"}, "data": {"dataset": "uci_heart"},
        "transfer": {"sources": ["cleveland"], "target": "va", "seeds": 2,
                     "labeled_target": [0, 10], "methods": ["source_lr", "coral_streamed"]},
    })


def _key(r):
    return (r["method"], r["seed"], r["n_labeled"])


def _same(a, b):
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


@pytest.fixture(scope="module")
def local_ray():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1", configure_logging=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_ray_backend_equals_local(local_ray):
    study = _study()
    local = run_study(study, n_jobs=1, progress=False, backend="loky")
    remote = run_study(study, n_jobs=2, progress=False, backend="ray")
    assert ray.is_initialized()  # the helper reused the test's cluster and left it running
    a = {_key(r): r for r in local.records}
    b = {_key(r): r for r in remote.records}
    assert a.keys() == b.keys() and len(a) >= 2 * 2 * 2  # 2 methods x 2 seeds x 2 budgets (+ "selected")
    for k in a:
        ra = {x: v for x, v in a[k].items() if x not in _VOLATILE}
        rb = {x: v for x, v in b[k].items() if x not in _VOLATILE}
        assert _same(ra, rb), k
