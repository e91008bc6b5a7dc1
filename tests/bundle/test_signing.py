"""Signed bundles: `bundle keygen`, `bundle sign`, and loading with a trust store."""

import hashlib
import json
import shutil

import pytest

pytest.importorskip("cryptography")
pytest.importorskip("skops")

from hypothesis import given, settings, strategies as st  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from healthtransfer.bundle import (BundleError, TrustStore, generate_keypair, load_bundle,  # noqa: E402
                                   sign_bundle)
from _bundles import build_uci_bundle  # noqa: E402
from healthtransfer.cli import app  # noqa: E402


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    return {"a": generate_keypair(d / "site-a.key"), "b": generate_keypair(d / "site-b.key"),
            "a_priv": d / "site-a.key", "b_priv": d / "site-b.key", "dir": d}


@pytest.fixture(scope="module")
def signed(tmp_path_factory, keys):
    b = build_uci_bundle(tmp_path_factory.mktemp("s") / "bundle", "pooled_lr")
    sign_bundle(b, keys["a_priv"])
    return b


@pytest.fixture()
def copy(signed, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(signed, dst)
    return dst


def test_signed_bundle_loads_with_its_key(signed, keys):
    assert load_bundle(signed, trust=keys["a"]).model is not None
    assert (keys["a_priv"].stat().st_mode & 0o777) == 0o600  # the private key: owner only
    assert (keys["a"].stat().st_mode & 0o777) == 0o644  # the public key: readable by all
    assert not list(keys["a"].parent.glob(".*"))  # no temporary file left beside them


def test_unknown_signer_is_refused_unless_allowed(signed, keys):
    with pytest.raises(BundleError, match="not in the trust store"):
        load_bundle(signed, trust=keys["b"])
    load_bundle(signed, trust=keys["b"], allow_unsigned=True)


def test_unsigned_is_refused_unless_allowed(copy, keys):
    (copy / "signature.json").unlink()
    with pytest.raises(BundleError, match="not signed"):
        load_bundle(copy, trust=keys["a"])
    load_bundle(copy, trust=keys["a"], allow_unsigned=True)


def test_edit_with_recomputed_manifest_breaks_the_signature(copy, keys):
    """What the sha256 list alone cannot stop: edit a file, re-compute the manifest."""
    f = copy / "metrics.json"
    f.write_text(json.dumps({"overall": {"auroc": {"value": 0.99}}}))
    m = json.loads((copy / "manifest.json").read_text())
    m["files"]["metrics.json"] = {"sha256": hashlib.sha256(f.read_bytes()).hexdigest(),
                                  "bytes": f.stat().st_size}
    (copy / "manifest.json").write_text(json.dumps(m))
    load_bundle(copy)  # without a trust store the edit goes unnoticed...
    with pytest.raises(BundleError, match="changed after it was signed"):
        load_bundle(copy, trust=keys["a"])  # ...with one it cannot
    # even --allow-unsigned does not accept a known signer's broken signature
    with pytest.raises(BundleError, match="changed after it was signed"):
        load_bundle(copy, trust=keys["a"], allow_unsigned=True)


def test_trust_store_folder(keys, signed):
    store = TrustStore.load(keys["dir"])  # both *.pub.pem files
    assert len(store.key_ids) == 2
    load_bundle(signed, trust=store)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=400) | st.text(max_size=200).map(str.encode)
       | st.fixed_dictionaries({"algorithm": st.text(max_size=10), "key_id": st.text(max_size=20),
                                "signature": st.text(max_size=100)}).map(
           lambda d: json.dumps(d).encode()))
def test_any_signature_file_is_refused_cleanly(tmp_path_factory, signed, keys, data):
    from healthtransfer.bundle._sign import check_signature

    store = TrustStore.load(keys["a"])
    with pytest.raises(BundleError):
        check_signature((signed / "manifest.json").read_bytes(), data, store, "test")


def test_cli_keygen_sign_and_serve_refusals(tmp_path, signed):
    runner = CliRunner()
    key = tmp_path / "k.key"
    r = runner.invoke(app, ["bundle", "keygen", str(key)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "k.key.pub.pem").is_file()
    assert runner.invoke(app, ["bundle", "keygen", str(key)]).exit_code == 2  # never overwrite
    b = tmp_path / "bundle"
    shutil.copytree(signed, b)
    r = runner.invoke(app, ["bundle", "sign", str(b), "--key", str(key)])
    assert r.exit_code == 0 and "Signed" in r.output
    load_bundle(b, trust=tmp_path / "k.key.pub.pem")
    pytest.importorskip("uvicorn")
    r = runner.invoke(app, ["serve", "--allow-unsigned", str(b)])
    assert r.exit_code == 2 and "without API keys" in r.output
    keys_file = tmp_path / "keys.json"
    from healthtransfer.serve import keys_add

    keys_add(keys_file, "x", ["predict"])
    r = runner.invoke(app, ["serve", "--api-keys", str(keys_file), str(b)])
    assert r.exit_code == 2 and "--trust" in r.output
