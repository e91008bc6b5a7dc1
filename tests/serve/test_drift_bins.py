"""The drift monitor's plain-Python bins for a few records equal the vectorised bins."""

import numpy as np
import pytest

from _bundles import FEATURES, build_uci_bundle, uci_frames  # noqa: E402
from healthtransfer.bundle._reference import bin_index
from healthtransfer.serve._drift import DriftMonitor

pytest.importorskip("skops")


@pytest.fixture(scope="module")
def monitor(tmp_path_factory):
    from healthtransfer.bundle import load_bundle

    b = load_bundle(build_uci_bundle(tmp_path_factory.mktemp("drift") / "b", "pooled_lr"))
    return DriftMonitor(b.reference, b.feature_names)


def _records():
    _, train, test = uci_frames()
    recs = [{k: (None if v != v else v) for k, v in r.items()}
            for r in train[FEATURES].to_dict("records") + test[FEATURES].to_dict("records")]
    rng = np.random.default_rng(0)
    odd = [dict(recs[i], chol=float(v), cp=c) for i, v, c in
           zip(rng.integers(0, len(recs), 30), rng.uniform(-100, 900, 30), [1, 4, 9, None, 2.0] * 6)]
    return recs + odd


def test_few_records_bins_equal_the_vector_path(monitor):
    recs = _records()
    for i in range(0, len(recs), 3):
        chunk = recs[i:i + 3]
        fast = monitor._few_bins(chunk)
        slow = np.column_stack([bin_index(monitor.ref[f], [r.get(f) for r in chunk])
                                for f in monitor.features])
        assert fast is not None and np.array_equal(fast, slow)
    # edges themselves and values beyond them
    for f, edges in monitor._numeric_edges.items():
        for v in [*edges, edges[0] - 1, edges[-1] + 1, float("nan")]:
            rec = {f: v}
            assert monitor._few_bins([rec])[0][monitor.features.index(f)] == \
                bin_index(monitor.ref[f], [v])[0]


def test_text_numbers_take_the_vector_path(monitor):
    assert monitor._few_bins([{"chol": "240"}]) is None
