"""The compiled array path equals the scikit-learn path (within 1e-9) on every bundle kind the
tests make, and falls back, with a logged reason, where a step has no array form."""

import logging

import numpy as np
import pytest

pytest.importorskip("skops")

from healthtransfer.bundle import load_bundle  # noqa: E402
from healthtransfer.bundle._compile import (PARITY_TOL, CompileError, compile_bundle,  # noqa: E402
                                            parity_records)
from _bundles import FEATURES, build_uci_bundle, uci_frames  # noqa: E402

METHODS = ["pooled_lr", "source_lr", "target_lr", "source_gbm", "pooled_gbm",
           "iw_domain_lr"]


def _real_records(n=60):
    _, train, test = uci_frames()
    rows = (test[FEATURES].head(n // 2).to_dict("records")
            + train[FEATURES].sample(n // 2, random_state=1).to_dict("records"))
    return [{k: (None if v != v else v) for k, v in r.items()} for r in rows]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    d = tmp_path_factory.mktemp("compile")
    out = {}
    for m in METHODS:
        try:
            out[m] = load_bundle(build_uci_bundle(d / m, m))
        except Exception as exc:  # a method name the registry does not have: say so
            out[m] = exc
    return out


@pytest.mark.parametrize("method", METHODS)
def test_compiled_equals_sklearn(bundles, method):
    b = bundles[method]
    if isinstance(b, Exception):
        pytest.skip(f"{method}: {b}")
    c = compile_bundle(b)
    recs = _real_records() + parity_records(b, 100, seed=3)
    want = b.predict_proba(recs)
    got = c.predict_proba_records(recs)
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) <= PARITY_TOL
    # single records (the service's common case) take other kernels than batches
    for r in recs[:10]:
        assert np.max(np.abs(c.predict_proba_records([r]) - b.predict_proba([r]))) <= PARITY_TOL


def test_linear_and_boosting_are_fully_compiled(bundles):
    assert "numpy" in compile_bundle(bundles["pooled_lr"]).model_path
    assert "boosting (numpy" in compile_bundle(bundles["source_gbm"]).model_path


def test_deep_bundle(tmp_path):
    pytest.importorskip("torch")
    b = load_bundle(build_uci_bundle(tmp_path / "mlp", "mlp_source"))
    c = compile_bundle(b)
    recs = _real_records(40)
    assert np.max(np.abs(c.predict_proba_records(recs) - b.predict_proba(recs))) <= PARITY_TOL
    for r in recs[:5]:
        assert np.max(np.abs(c.predict_proba_records([r]) - b.predict_proba([r]))) <= PARITY_TOL


def test_unsupported_step_falls_back_with_reason(bundles, caplog):
    """A preprocessor step without an array form: the service keeps the full path and logs why."""
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import RobustScaler

    from healthtransfer.serve._fast import Predictor

    b = bundles["pooled_lr"]
    _, train, _ = uci_frames()
    odd = ColumnTransformer([("num", RobustScaler(), FEATURES)]).fit(train[FEATURES])
    import copy

    b2 = copy.copy(b)
    b2.preprocessor = odd
    b2.model = copy.deepcopy(b.model).fit(odd.transform(train[FEATURES]),
                                          train["disease"].to_numpy())
    with pytest.raises(CompileError, match="RobustScaler"):
        compile_bundle(b2)
    with caplog.at_level(logging.WARNING, logger="healthtransfer.serve"):
        p = Predictor(b2)
    assert p.path == "full" and "RobustScaler" in p.reason
    assert any("full scikit-learn path" in r.getMessage() and "RobustScaler" in r.getMessage()
               for r in caplog.records)
    recs = _real_records(10)
    assert np.array_equal(p.predict_proba(recs), b2.predict_proba(recs))


def test_parity_failure_is_refused(bundles, monkeypatch):
    """A compiled form that disagrees with scikit-learn is never used."""
    import healthtransfer.bundle._compile as C

    real = C._model_fn

    def skewed(model):
        fn, name = real(model)
        return (lambda Z: fn(Z) * (1 - 1e-6)), name
    monkeypatch.setattr(C, "_model_fn", skewed)
    with pytest.raises(CompileError, match="differs"):
        compile_bundle(bundles["pooled_lr"])


@pytest.mark.parametrize("method", ["pooled_lr", "source_gbm"])
def test_explanations_on_the_compiled_path_equal_the_full_path(bundles, method):
    from healthtransfer.serve._explain import explain_record

    b = bundles[method]
    c = compile_bundle(b)
    for r in _real_records(8):
        full = {x["feature"]: x["contribution"] for x in explain_record(b, r)["contributions"]}
        fast = explain_record(b, r, c.predict_proba_records)
        assert set(fast_c := {x["feature"]: x["contribution"] for x in fast["contributions"]}) \
            == set(full)
        assert max(abs(fast_c[k] - full[k]) for k in full) <= 1e-6  # log-odds of p within 1e-9


# -- reference-score bundles: the features' preprocessing, then logit(score) as the last column --
REFERENCE_METHODS = ["ReferenceRecalibration", "ReferenceStacking", "ReferenceBoosting"]


def _score(frame):
    """A stand-in clinical score (a probability) computed from the UCI rows."""
    z = (0.04 * (frame["age"].fillna(55) - 55) - 0.02 * (frame["thalach"].fillna(140) - 140)
         + 0.5 * frame["exang"].fillna(0))
    return 1 / (1 + np.exp(-z))


def _reference_records(n=60):
    import pandas as pd

    recs = _real_records(n)
    scores = _score(pd.DataFrame.from_records(recs)).tolist()
    return [dict(r, score=float(s)) for r, s in zip(recs, scores)]


@pytest.fixture(scope="module")
def reference_bundles(tmp_path_factory):
    """Study-shaped bundles (as study/final writes them): ReferenceScoreInput + ShippedModel
    around each reference-score method, with and without a calibration map."""
    import healthtransfer.methods.model as M
    from healthtransfer.data.sources import HEART_CATEGORICAL as CATEGORICAL
    from healthtransfer.bundle._write import write_bundle
    from healthtransfer.data.preprocess import make_preprocessor
    from healthtransfer.evaluation.calibration import PriorShift
    from healthtransfer.study._shipped import ReferenceScoreInput, ShippedModel

    d = tmp_path_factory.mktemp("reference")
    ds, train, _ = uci_frames()
    train = train.assign(score=_score(train))
    pre = make_preprocessor([c for c in FEATURES if c not in CATEGORICAL],
                            CATEGORICAL).fit(train[FEATURES])
    wrapped = ReferenceScoreInput(pre, "score")
    X = wrapped.transform(train[[*FEATURES, "score"]])
    dom = np.where(train[ds.domain] == "cleveland", 1, -1)
    out = {}
    for i, name in enumerate(REFERENCE_METHODS):
        est = getattr(M, name)(random_state=0).fit(X, train[ds.label].to_numpy(), sample_domain=dom)
        cal = PriorShift([0.5, 0.5], [0.6, 0.4]) if i % 2 == 0 else None
        path = write_bundle(d / name, model=ShippedModel(est, cal), preprocessor=wrapped, dataset=ds,
                            training_frame=train, method=name, metrics={},
                            reference_input={"name": "score", "range": [0.0, 1.0],
                                             "meaning": "a stand-in clinical score"})
        out[name] = load_bundle(path, allow_unsigned=True)
    return out


@pytest.mark.parametrize("method", REFERENCE_METHODS)
def test_reference_score_bundles_are_compiled_and_equal_sklearn(reference_bundles, method):
    from healthtransfer.serve._fast import Predictor

    b = reference_bundles[method]
    p = Predictor(b)
    assert p.path == "compiled", p.reason  # not the logged fallback
    assert "logit(score)" in p.compiled.model_path
    recs = _reference_records() + parity_records(b, 100, seed=3)
    assert all(r["score"] is not None and 0 <= r["score"] <= 1 for r in recs)
    want = b.predict_proba(recs)
    got = p.predict_proba(recs)
    assert got.shape == want.shape and np.max(np.abs(got - want)) <= PARITY_TOL
    for r in recs[:10]:
        assert np.max(np.abs(p.predict_proba([r]) - b.predict_proba([r]))) <= PARITY_TOL


@pytest.mark.parametrize("bad", [None, 1.5, -0.1, "n/a"])
def test_compiled_reference_path_refuses_a_missing_score_like_the_full_path(reference_bundles, bad):
    from healthtransfer.errors import UserInputError

    b = reference_bundles["ReferenceRecalibration"]
    c = compile_bundle(b)
    rec = dict(_reference_records(2)[0], score=bad)
    for predict in (b.predict_proba, c.predict_proba_records):
        with pytest.raises(UserInputError, match="reference score 'score'"):
            predict([rec])
