"""Ed25519 signatures of bundles: who wrote this bundle, and is it exactly what they wrote?

The manifest lists the sha256 of every file of the bundle (torch weights included), so a
signature of ``manifest.json``'s bytes covers the whole bundle. Anyone can re-compute a
manifest after editing a bundle; nobody can sign it without the site's private key.
``signature.json`` sits beside the manifest::

    {"algorithm": "ed25519", "key_id": "<16 hex of sha256(public key)>", "signature": "<base64>"}

A trust store is a PEM public key file or a folder of ``*.pem`` public keys (one per site
whose bundles you accept). Private keys are written with mode 0600 and never leave the site.

Example
-------
>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> pub = generate_keypair(d / "site-a.key")
>>> store = TrustStore.load(pub)
>>> sig = sign_bytes(b"manifest", d / "site-a.key")
>>> check_signature(b"manifest", sig, store, "test") == store.key_ids[0]
True
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

from ..errors import UserInputError
from ..reports._io import atomic_write_bytes

__all__ = ["TrustStore", "as_trust", "check_signature", "generate_keypair", "key_id",
           "sign_bundle", "sign_bytes"]

ALGORITHM = "ed25519"


def _crypto():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return serialization, ed25519


def key_id(public_key) -> str:
    """Short fingerprint of an Ed25519 public key (16 hex digits of the sha256 of its raw bytes)."""
    serialization, _ = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def generate_keypair(private_path: str | Path) -> Path:
    """Write a new Ed25519 private key (PEM, mode 0600) and its public key beside it
    (``<private>.pub.pem``); return the public key's path. Refuses to overwrite a key."""
    serialization, ed25519 = _crypto()
    private_path = Path(private_path)
    public_path = private_path.with_name(private_path.name + ".pub.pem")
    if private_path.exists() or public_path.exists():
        raise UserInputError("already exists", where=str(private_path),
                             fix="choose another file name; a signing key is never overwritten")
    key = ed25519.Ed25519PrivateKey.generate()
    atomic_write_bytes(private_path, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()), 0o600)
    atomic_write_bytes(public_path, key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo), 0o644)
    return public_path


def _load_private(path: Path):
    serialization, ed25519 = _crypto()
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise UserInputError(f"cannot read the private key ({type(exc).__name__})",
                             where=str(path),
                             fix="pass the file written by `healthtransfer bundle keygen`") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise UserInputError("is not an Ed25519 private key", where=str(path),
                             fix="create one with `healthtransfer bundle keygen`")
    return key


def sign_bytes(data: bytes, private_path: str | Path) -> bytes:
    """The ``signature.json`` content signing ``data`` with the key in ``private_path``."""
    key = _load_private(Path(private_path))
    sig = key.sign(data)
    return json.dumps({"algorithm": ALGORITHM, "key_id": key_id(key.public_key()),
                       "signature": base64.b64encode(sig).decode("ascii")}, indent=2).encode()


def sign_bundle(bundle_dir: str | Path, private_path: str | Path) -> str:
    """Verify ``bundle_dir`` (files match its manifest), then sign its manifest; returns the
    signer's key id. ``signature.json`` is written atomically and replaces an older one."""
    from ._load import MANIFEST, SIGNATURE, verify_bundle

    bundle_dir = Path(bundle_dir)
    verify_bundle(bundle_dir)
    content = sign_bytes((bundle_dir / MANIFEST).read_bytes(), private_path)
    # verify_bundle() has read the manifest; re-reading it here is safe because the signature
    # is checked against the bytes read at load time, never against this read.
    atomic_write_bytes(bundle_dir / SIGNATURE, content + b"\n", 0o644)
    return json.loads(content)["key_id"]


class TrustStore:
    """Public keys whose bundles this service accepts, by key id."""

    def __init__(self, keys: dict):
        self.keys = dict(keys)

    @property
    def key_ids(self) -> list[str]:
        return sorted(self.keys)

    @classmethod
    def load(cls, path: str | Path) -> "TrustStore":
        serialization, ed25519 = _crypto()
        path = Path(path)
        files = sorted(path.glob("*.pem")) if path.is_dir() else [path]
        if not path.exists() or not files:
            raise UserInputError("holds no public keys", where=f"trust store {path}",
                                 fix="pass a PEM public key file, or a folder of *.pem public "
                                     "keys (`healthtransfer bundle keygen` writes KEY.pub.pem)")
        keys = {}
        for f in files:
            try:
                k = serialization.load_pem_public_key(f.read_bytes())
            except (OSError, ValueError, TypeError) as exc:
                raise UserInputError(f"cannot read a public key ({type(exc).__name__})",
                                     where=str(f), fix="pass PEM public keys only") from None
            if not isinstance(k, ed25519.Ed25519PublicKey):
                raise UserInputError("is not an Ed25519 public key", where=str(f),
                                     fix="pass keys written by `healthtransfer bundle keygen`")
            keys[key_id(k)] = k
        return cls(keys)


def as_trust(trust) -> TrustStore | None:
    """``None``, a :class:`TrustStore`, or a path to load one from."""
    if trust is None or isinstance(trust, TrustStore):
        return trust
    return TrustStore.load(trust)


def check_signature(manifest_bytes: bytes, signature: bytes | None, trust: TrustStore,
                    where: str, *, allow_unsigned: bool = False) -> str | None:
    """The signer's key id if ``signature`` (``signature.json`` bytes) is a valid signature
    of ``manifest_bytes`` by a key in ``trust``. An unsigned bundle or an unknown signer is
    refused unless ``allow_unsigned`` (then None); a bad signature is always refused."""
    from ._load import BundleError

    if signature is None:
        if allow_unsigned:
            return None
        raise BundleError("is not signed, and this service only serves signed bundles",
                          where=where, fix="ask its site to run `healthtransfer bundle sign`, "
                                           "or start the service with --allow-unsigned")
    try:
        doc = json.loads(signature.decode("utf-8"))
        kid, alg = str(doc["key_id"]), doc["algorithm"]
        sig = base64.b64decode(str(doc["signature"]), validate=True)
    except (UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise BundleError("signature.json is malformed", where=where,
                          fix="sign the bundle again with `healthtransfer bundle sign`") from None
    if alg != ALGORITHM:
        raise BundleError(f"is signed with {alg!r}; only {ALGORITHM} is accepted", where=where,
                          fix="sign the bundle again with `healthtransfer bundle sign`")
    key = trust.keys.get(kid)
    if key is None:
        if allow_unsigned:
            return None
        raise BundleError(f"is signed by key {kid[:16]!r}, which is not in the trust store",
                          where=where, fix="add that site's public key to --trust if you trust "
                                           "it, or start with --allow-unsigned")
    from cryptography.exceptions import InvalidSignature

    try:
        key.verify(sig, manifest_bytes)
    except InvalidSignature:
        raise BundleError("has a signature that does not match its manifest: the bundle was "
                          "changed after it was signed", where=where,
                          fix="copy the bundle again from its origin") from None
    return kid
