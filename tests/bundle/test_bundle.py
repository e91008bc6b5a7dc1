"""Bundle: round trip, tamper and version checks, trusted types, ONNX parity."""

import importlib.util
import json
import shutil

import numpy as np
import pytest

pytest.importorskip("skops")
pytest.importorskip("safetensors")

from healthtransfer.bundle import BundleError, inspect_bundle, load_bundle, verify_bundle  # noqa: E402
from _bundles import FEATURES, build_uci_bundle, uci_frames  # noqa: E402
from healthtransfer.bundle._load import check_trusted_types  # noqa: E402


@pytest.fixture(scope="module")
def lr_bundle(tmp_path_factory):
    return build_uci_bundle(tmp_path_factory.mktemp("b") / "bundle", "pooled_lr")


@pytest.fixture()
def copy(lr_bundle, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(lr_bundle, dst)
    return dst


def _refit_proba(method):
    from healthtransfer.data.preprocess import make_preprocessor
    from healthtransfer.methods.baselines_registry import METHODS

    ds, train, test = uci_frames()
    pre = make_preprocessor([c for c in FEATURES if c not in ("cp", "restecg")],
                            ["cp", "restecg"]).fit(train[FEATURES])
    spec = next(m for m in METHODS if m.name == method)
    model = spec.factory(random_state=0).fit(
        pre.transform(train[FEATURES]), train["disease"].to_numpy(),
        sample_domain=np.where(train["site"] == "cleveland", 1, -1))
    return test, model.predict_proba(pre.transform(test[FEATURES]))


def test_round_trip_same_probabilities(lr_bundle):
    b = load_bundle(lr_bundle)
    test, want = _refit_proba("pooled_lr")
    np.testing.assert_allclose(b.predict_proba(test), want, rtol=0, atol=1e-12)
    # list of dicts with missing and extra keys works too
    recs = test[FEATURES].head(3).to_dict("records")
    recs[0].pop("chol")
    recs[1]["site"] = "va"
    assert b.predict_proba(recs).shape == (3, 2)
    assert b.feature_names == FEATURES
    assert b.version == __import__("healthtransfer").__version__
    assert b.schema["features"][0]["unit"] == "years"


def test_bundle_files_and_no_rows(lr_bundle):
    names = {p.name for p in lr_bundle.iterdir()}
    assert {"manifest.json", "model.skops", "preprocessor.skops", "schema.json", "metrics.json",
            "reference.json", "training.json", "model_card.md"} <= names
    assert not any(n.endswith((".pkl", ".pickle", ".joblib")) for n in names)
    manifest = json.loads((lr_bundle / "manifest.json").read_text())
    assert set(manifest["files"]) == names - {"manifest.json"}
    ref = json.loads((lr_bundle / "reference.json").read_text())
    assert ref["n_rows"] == 323
    # aggregates only: numeric references hold at most ~12 numbers of bins plus summaries
    age = ref["features"]["age"]
    assert len(age["shares"]) == len(age["edges"]) + 2
    assert abs(sum(age["shares"]) - 1) < 1e-9
    card = (lr_bundle / "model_card.md").read_text()
    for section in ("## Intended use", "## Data", "## Performance", "## Limits", "auroc"):
        assert section in card


def test_inspect_prints_card_and_schema(lr_bundle):
    text = inspect_bundle(lr_bundle)
    assert "# Model card" in text and '"name": "trestbps"' in text and "mmHg" in text


def test_changed_byte_is_refused(copy):
    f = copy / "model.skops"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="modified"):
        load_bundle(copy)


def test_truncated_file_is_refused(copy):
    f = copy / "preprocessor.skops"
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(BundleError, match="truncated"):
        load_bundle(copy)


def test_missing_file_is_refused(copy):
    (copy / "reference.json").unlink()
    with pytest.raises(BundleError, match="missing"):
        load_bundle(copy)


def test_extra_file_is_refused(copy):
    (copy / "evil.py").write_text("print('hi')")
    with pytest.raises(BundleError, match="does not list"):
        load_bundle(copy)


def test_missing_manifest_is_refused(copy):
    (copy / "manifest.json").unlink()
    with pytest.raises(BundleError, match="manifest"):
        load_bundle(copy)


@pytest.mark.parametrize("version", ["0.2.0", "1.1.0"])
def test_other_minor_version_is_refused(copy, version):
    m = json.loads((copy / "manifest.json").read_text())
    m["healthtransfer_version"] = version
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match=f"written by healthtransfer {version}"):
        verify_bundle(copy)


def test_patch_version_difference_is_accepted(copy, lr_bundle):
    m = json.loads((copy / "manifest.json").read_text())
    major, minor, _ = m["healthtransfer_version"].split(".")
    m["healthtransfer_version"] = f"{major}.{minor}.99"
    (copy / "manifest.json").write_text(json.dumps(m))
    # accepted, and the model it loads is the one that was written
    test = uci_frames()[2]
    np.testing.assert_array_equal(load_bundle(copy).predict_proba(test), load_bundle(lr_bundle).predict_proba(test))


def test_untrusted_types_are_refused():
    with pytest.raises(BundleError, match="trusted"):
        check_trusted_types(["sklearn.linear_model._logistic.LogisticRegression",
                             "builtins.eval"], "test")
    with pytest.raises(BundleError, match="trusted"):
        check_trusted_types(["numpy.load"], "test")
    assert check_trusted_types(["healthtransfer.methods.baselines.Pooled", "numpy.dtype"], "t")


def test_skops_file_with_untrusted_type_is_refused(copy):
    """A bundle whose skops archive names a foreign type (manifest rewritten to match) is
    refused before anything is constructed."""
    import hashlib

    import skops.io as sio
    from sklearn.preprocessing import FunctionTransformer

    (copy / "model.skops").write_bytes(sio.dumps(FunctionTransformer(func=shutil.rmtree)))
    m = json.loads((copy / "manifest.json").read_text())
    data = (copy / "model.skops").read_bytes()
    m["files"]["model.skops"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="shutil.rmtree"):
        load_bundle(copy)


def test_write_is_atomic_on_failure(tmp_path, lr_bundle):
    """A failing write leaves an existing bundle untouched and no staging folder."""
    from healthtransfer.bundle import write_bundle

    ds, train, _ = uci_frames()
    b = load_bundle(lr_bundle)
    out = tmp_path / "bundle"
    shutil.copytree(lr_bundle, out)
    before = (out / "manifest.json").read_bytes()
    with pytest.raises(BundleError):
        write_bundle(out, model=b.model, preprocessor=b.preprocessor, dataset=ds,
                     training_frame=train.drop(columns=["chol"]), method="pooled_lr", metrics={})
    assert (out / "manifest.json").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]


def test_deep_model_round_trip_via_safetensors(tmp_path):
    torch = pytest.importorskip("torch")  # noqa: F841
    from healthtransfer.bundle import write_bundle
    from healthtransfer.data.preprocess import make_preprocessor
    from healthtransfer.methods.deep import MLPSource

    ds, train, test = uci_frames()
    pre = make_preprocessor([c for c in FEATURES if c not in ("cp", "restecg")],
                            ["cp", "restecg"]).fit(train[FEATURES])
    m = MLPSource(max_epochs=3, random_state=0).fit(pre.transform(train[FEATURES]),
                                                   train["disease"].to_numpy())
    out = write_bundle(tmp_path / "deep", model=m, preprocessor=pre, dataset=ds,
                       training_frame=train, method="mlp_source", metrics={})
    assert (out / "model.safetensors").exists()
    b = load_bundle(out)
    np.testing.assert_allclose(b.predict_proba(test),
                               m.predict_proba(pre.transform(test[FEATURES])), atol=1e-7)
    if importlib.util.find_spec("skl2onnx") is not None:
        # models without a converter are refused with their name (the export is skipped)
        from healthtransfer.bundle import export_onnx
        from healthtransfer.bundle._onnx import OnnxExportError

        with pytest.raises(OnnxExportError, match="MLPSource"):
            export_onnx(out)


def test_onnx_parity_lr(lr_bundle, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("skl2onnx")
    pytest.importorskip("onnxruntime")
    from healthtransfer.bundle import export_onnx
    from healthtransfer.bundle._onnx import onnx_predict_proba

    out = export_onnx(lr_bundle, tmp_path / "model.onnx")
    b = load_bundle(lr_bundle)  # the bundle is unchanged by the export
    _, _, test = uci_frames()
    X = b.frame(test).to_numpy(dtype=float)
    X[::7, 4] = np.nan  # some missing cholesterol values
    X[::11, 2] = np.nan  # and missing chest pain types
    got = onnx_predict_proba(out, X)
    want = b.predict_proba(b.frame(test).assign(chol=X[:, 4], cp=X[:, 2]))
    assert np.max(np.abs(got - want)) < 1e-5
