"""Load a bundle as untrusted input: it may come from another site, written by anyone.

Checks, in order (any failure raises :class:`BundleError` with what and how to fix, and
nothing of the bundle is constructed before all checks that precede it passed):

1. the folder holds only regular files with plain names (no symbolic links, subfolders,
   devices or FIFOs), each within a size bound; ``manifest.json`` parses and names the format;
2. the bundle was written by the same MAJOR.MINOR healthtransfer version;
3. the files on disk are exactly those the manifest lists (none missing, none extra, names
   without any path), with the recorded sizes and sha256 digests; each file is read once
   and the checked bytes are the ones loaded, so a file swapped after the check is not used;
4. with a trust store (``serve --trust``), ``signature.json`` must hold a valid Ed25519
   signature of ``manifest.json`` by a trusted key (see :mod:`._sign`); the manifest lists
   every file, torch weights included, so the signature covers them all;
5. scikit-learn objects load through ``skops.io`` only if every type and function the file
   names is on the exact whitelist :data:`~._types.TRUSTED_NAMES` (read from the archive's
   schema before anything is imported; archive size bounded);
6. torch weights load through ``safetensors`` (tensors only, no code) into a network whose
   shape comes from bounded integers in the manifest.

No pickle is involved anywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import UserInputError
from ._types import TRUSTED_FUNCTIONS, TRUSTED_NAMES, TRUSTED_TYPES

__all__ = ["Bundle", "BundleError", "load_bundle", "check_trusted_types", "verify_bundle",
           "TRUSTED_FUNCTIONS", "TRUSTED_NAMES", "TRUSTED_TYPES", "FORMAT", "FORMAT_VERSION",
           "MANIFEST", "SIGNATURE"]

FORMAT = "healthtransfer-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SIGNATURE = "signature.json"
TORCH_FILE = "model.safetensors"

# Size bounds: far above any bundle we write (the largest real one is a few MB), low enough
# that a crafted bundle cannot exhaust memory when it is read for checking.
MAX_MANIFEST_BYTES = 1 << 20
MAX_TEXT_BYTES = 16 << 20          # JSON and Markdown files
MAX_FILE_BYTES = 512 << 20         # skops and safetensors files
MAX_FILES = 64
MAX_TORCH_WIDTH = 100_000          # n_in / n_classes of a rebuilt network
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_SHA = re.compile(r"^[0-9a-f]{64}$")
_FIX = "copy the bundle again from its origin, or write it again with `healthtransfer run`"


class BundleError(UserInputError):
    """A bundle that cannot be written or loaded safely."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_trusted_types(types, where: str) -> list[str]:
    """Return ``types`` if every name is on the exact whitelist; otherwise raise naming the
    others. ``types``: names such as ``"sklearn.pipeline.Pipeline"`` (or a dict keyed by them)."""
    names = sorted(types)
    bad = [t for t in names if t not in TRUSTED_NAMES]
    if bad:
        raise BundleError(
            f"contains types or functions that are not on the trusted list: {bad}",
            where=where,
            fix="only the healthtransfer, scikit-learn and numpy objects our methods write can "
                "be loaded (healthtransfer.bundle.TRUSTED_TYPES); refit with a supported "
                "method, and do not load a bundle from an untrusted source",
        )
    return names


def _major_minor(v: str) -> tuple[str, ...]:
    return tuple(str(v).split(".")[:2])


def _parse_json(data: bytes, name: str, where: str) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BundleError(f"cannot read {name} ({type(exc).__name__})", where=where,
                          fix="write the bundle again with `healthtransfer run`") from None


def _read_regular(path: Path, limit: int, where: str) -> bytes:
    """The bytes of ``path`` if it is a regular file (not a link, FIFO or device) of at most
    ``limit`` bytes; read through one descriptor, so what is checked is what is read."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise BundleError(f"cannot open {path.name} ({type(exc).__name__}; a symbolic link is "
                          "refused)", where=where, fix=_FIX) from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise BundleError(f"{path.name} is not a regular file", where=where, fix=_FIX)
        if st.st_size > limit:
            raise BundleError(f"{path.name} is {st.st_size} bytes, above the limit of {limit}",
                              where=where, fix=_FIX)
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise BundleError(f"{path.name} grew above the limit of {limit} bytes while read",
                          where=where, fix=_FIX)
    return data


def _limit(name: str) -> int:
    return MAX_TEXT_BYTES if name.endswith((".json", ".md")) else MAX_FILE_BYTES


def _entries(path: Path, where: str) -> set[str]:
    """Names of the folder's entries; refuses links, subfolders and special files."""
    names = set()
    with os.scandir(path) as it:
        for e in it:
            if e.is_symlink():
                raise BundleError(f"{e.name} is a symbolic link", where=where,
                                  fix="copy the bundle with its files, not links to them")
            if not e.is_file(follow_symlinks=False):
                raise BundleError(f"{e.name} is not a regular file (a bundle has no subfolders "
                                  "or special files)", where=where, fix=_FIX)
            names.add(e.name)
            if len(names) > MAX_FILES + 2:
                raise BundleError(f"holds more than {MAX_FILES} files", where=where, fix=_FIX)
    return names


def _check_manifest(manifest: Any, where: str) -> dict:
    from .. import __version__

    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT \
            or not isinstance(manifest.get("files"), dict):
        raise BundleError("manifest.json is not a healthtransfer bundle manifest", where=where,
                          fix="write the bundle again with `healthtransfer run`")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(
            f"uses bundle format {manifest.get('format_version')!r}; this healthtransfer reads "
            f"format {FORMAT_VERSION}", where=where,
            fix="load it with the healthtransfer version that wrote it, or write it again")
    written = str(manifest.get("healthtransfer_version", "?"))
    if _major_minor(written) != _major_minor(__version__):
        raise BundleError(
            f"was written by healthtransfer {written}, which is not compatible with the "
            f"installed {__version__} (MAJOR.MINOR must match)", where=where,
            fix=f"install healthtransfer=={written} to use it, or refit and write the bundle "
                f"again with {__version__}")
    files = manifest["files"]
    if len(files) > MAX_FILES:
        raise BundleError(f"manifest lists {len(files)} files (limit {MAX_FILES})", where=where,
                          fix=_FIX)
    for name, meta in files.items():
        if not _NAME.match(name) or name in (MANIFEST, SIGNATURE):
            raise BundleError("manifest names a file outside the bundle folder or a reserved "
                              "name (a bundle file name has no path)", where=where, fix=_FIX)
        if not isinstance(meta, dict) or not isinstance(meta.get("bytes"), int) \
                or not _SHA.match(str(meta.get("sha256"))):
            raise BundleError(f"manifest entry for {name} is malformed", where=where, fix=_FIX)
    return manifest


def _verify(path: Path, trust=None, allow_unsigned: bool = False) -> tuple[dict, dict[str, bytes]]:
    where = f"bundle {path}"
    if not path.is_dir():
        raise BundleError("is not a directory", where=where,
                          fix="pass OUT/bundle/<target>, a folder written by `healthtransfer run`")
    if not (path / MANIFEST).exists():  # a study's OUT/bundle holds one bundle per target
        inner = sorted(p.parent.name for p in path.glob(f"*/{MANIFEST}") if not p.is_symlink())
        if inner:
            raise BundleError("has no manifest.json; it holds one bundle per target", where=where,
                              fix=f"pass one of {[str(path / t) for t in inner]}")
    present = _entries(path, where)
    if MANIFEST not in present:
        raise BundleError("has no manifest.json", where=where,
                          fix="pass the bundle folder itself, or write the bundle again")
    manifest_bytes = _read_regular(path / MANIFEST, MAX_MANIFEST_BYTES, where)
    manifest = _check_manifest(_parse_json(manifest_bytes, MANIFEST, where), where)
    listed = manifest["files"]
    on_disk = present - {MANIFEST, SIGNATURE}
    missing = sorted(set(listed) - on_disk)
    extra = sorted(on_disk - set(listed))
    if missing:
        raise BundleError(f"is incomplete: missing {missing}", where=where,
                          fix="copy the whole bundle folder again, or write it again")
    if extra:
        raise BundleError(f"contains files the manifest does not list: {extra}", where=where,
                          fix="remove them, or write the bundle again; a bundle must not be "
                              "edited after it is written")
    if trust is not None:
        from ._sign import check_signature

        sig = (_read_regular(path / SIGNATURE, MAX_MANIFEST_BYTES, where)
               if SIGNATURE in present else None)
        check_signature(manifest_bytes, sig, trust, where, allow_unsigned=allow_unsigned)
    contents: dict[str, bytes] = {}
    for name, meta in listed.items():
        data = _read_regular(path / name, _limit(name), where)
        if len(data) != meta["bytes"]:
            kind = "truncated" if len(data) < meta["bytes"] else "changed"
            raise BundleError(f"file {name} is {kind} ({len(data)} bytes, manifest says "
                              f"{meta['bytes']})", where=where, fix=_FIX)
        if hashlib.sha256(data).hexdigest() != meta["sha256"]:
            raise BundleError(f"file {name} was modified after the bundle was written "
                              "(sha256 does not match the manifest)", where=where, fix=_FIX)
        contents[name] = data
    return manifest, contents


def verify_bundle(path: str | Path, *, trust=None, allow_unsigned: bool = False) -> dict:
    """Check files, manifest, version, digests (and the signature when ``trust`` is given:
    a :class:`~._sign.TrustStore` or a path to public keys); return the manifest."""
    from ._sign import as_trust

    return _verify(Path(path), as_trust(trust), allow_unsigned)[0]


def _skops_load(data: bytes, name: str, where: str):
    import skops.io as sio

    from ._skops_audit import ArchiveError, skops_names

    try:
        names = skops_names(data)
    except ArchiveError as exc:
        raise BundleError(f"{name} {exc}", where=where, fix=_FIX) from None
    trusted = check_trusted_types(names, f"{where}: {name}")
    try:
        return sio.loads(data, trusted=trusted)
    except Exception as exc:  # a malformed archive of trusted types
        raise BundleError(f"{name} cannot be loaded ({type(exc).__name__})", where=where,
                          fix=_FIX) from None


def _torch_spec(spec: Any, listed: dict, where: str) -> dict:
    ok = (isinstance(spec, dict) and spec.get("file") == TORCH_FILE and TORCH_FILE in listed
          and isinstance(spec.get("modules"), dict) and set(spec["modules"]) == {"module_"})
    if ok:
        meta = spec["modules"]["module_"]
        ok = isinstance(meta, dict) and all(
            isinstance(meta.get(k), int) and not isinstance(meta.get(k), bool)
            and 1 <= meta[k] <= MAX_TORCH_WIDTH for k in ("n_in", "n_classes"))
    if not ok:
        raise BundleError(f"manifest's torch entry is not a '{TORCH_FILE}' listed in the "
                          "manifest with one bounded `module_` network", where=where, fix=_FIX)
    return spec


def _restore_torch(model, data: bytes, spec: dict, where: str):
    from safetensors.torch import load as load_tensors

    try:
        tensors = load_tensors(data)
    except Exception as exc:
        raise BundleError(f"{TORCH_FILE} is not a valid safetensors file "
                          f"({type(exc).__name__})", where=where, fix=_FIX) from None
    builder = getattr(model, "_build_module", None)
    if builder is None:
        raise BundleError(f"cannot rebuild the torch module of {type(model).__name__}",
                          where=where, fix=_FIX)
    meta = spec["modules"]["module_"]
    module = builder(int(meta["n_in"]), int(meta["n_classes"]))
    state = {k[len("module_."):]: v for k, v in tensors.items() if k.startswith("module_.")}
    try:
        module.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError) as exc:
        raise BundleError(f"{TORCH_FILE} does not fit the network the manifest describes "
                          f"({type(exc).__name__})", where=where, fix=_FIX) from None
    module.eval()
    model.module_ = module
    return model


@dataclass
class Bundle:
    """A loaded bundle: fitted preprocessing + model, and what describes them."""

    path: Path
    manifest: dict
    schema: dict
    card: str
    metrics: dict
    reference: dict
    training: dict
    preprocessor: Any = field(repr=False)
    model: Any = field(repr=False)

    @property
    def version(self) -> str:
        """healthtransfer version that wrote the bundle."""
        return str(self.manifest["healthtransfer_version"])

    @property
    def model_version(self) -> str:
        """Identifies this exact fitted model: method name + digest of its files."""
        return str(self.manifest.get("model_version"))

    @property
    def feature_names(self) -> list[str]:
        return [f["name"] for f in self.schema["features"]]

    @property
    def feature_specs(self) -> dict[str, dict]:
        return {f["name"]: f for f in self.schema["features"]}

    @property
    def classes(self) -> list:
        return list(self.schema["classes"])

    @property
    def positive_index(self) -> int:
        return int(self.schema.get("positive_index", len(self.classes) - 1))

    def frame(self, records) -> pd.DataFrame:
        """Records (DataFrame or list of dicts) as the table the preprocessor expects:
        the input features in order, missing ones as NaN, other columns dropped."""
        df = records if isinstance(records, pd.DataFrame) else pd.DataFrame.from_records(
            list(records))
        out = pd.DataFrame(index=range(len(df)))
        for f in self.schema["features"]:
            name = f["name"]
            col = df[name].reset_index(drop=True) if name in df else pd.Series(
                [np.nan] * len(df))
            if f["kind"] == "numeric" or f.get("numeric_codes", True):
                col = pd.to_numeric(col, errors="coerce").astype(float)
            else:
                col = col.astype(object).where(col.notna(), np.nan)
            out[name] = col.to_numpy()
        return out

    def transform(self, records) -> np.ndarray:
        return np.asarray(self.preprocessor.transform(self.frame(records)), dtype=float)

    def predict_proba(self, records) -> np.ndarray:
        """Class probabilities, one row per record, columns in :attr:`classes` order."""
        if isinstance(records, pd.DataFrame) and len(records) == 0 or (
                not isinstance(records, pd.DataFrame) and len(list(records)) == 0):
            return np.zeros((0, len(self.classes)))
        return np.asarray(self.model.predict_proba(self.transform(records)), dtype=float)

    def predict_risk(self, records) -> np.ndarray:
        """Probability of the positive class."""
        return self.predict_proba(records)[:, self.positive_index]


def load_bundle(path: str | Path, *, trust=None, allow_unsigned: bool = False) -> Bundle:
    """Verify and load a bundle folder; raises :class:`BundleError` if it is not safe.

    ``trust``: public keys (a :class:`~._sign.TrustStore`, or a PEM file or folder of them);
    when given, the bundle must be signed by one of them unless ``allow_unsigned``."""
    from ._sign import as_trust

    path = Path(path)
    manifest, files = _verify(path, as_trust(trust), allow_unsigned)
    where = f"bundle {path}"
    for need in ("preprocessor.skops", "model.skops", "schema.json", "metrics.json",
                 "reference.json", "training.json", "model_card.md"):
        if need not in files:
            raise BundleError(f"lacks {need}", where=where, fix=_FIX)
    torch_spec = manifest.get("torch")
    if torch_spec:
        torch_spec = _torch_spec(torch_spec, manifest["files"], where)
    preprocessor = _skops_load(files["preprocessor.skops"], "preprocessor.skops", where)
    model = _skops_load(files["model.skops"], "model.skops", where)
    if torch_spec:
        model = _restore_torch(model, files[TORCH_FILE], torch_spec, where)
    try:
        card = files["model_card.md"].decode("utf-8")
    except UnicodeDecodeError:
        raise BundleError("model_card.md is not UTF-8 text", where=where, fix=_FIX) from None
    return Bundle(
        path=path,
        manifest=manifest,
        schema=_parse_json(files["schema.json"], "schema.json", where),
        card=card,
        metrics=_parse_json(files["metrics.json"], "metrics.json", where),
        reference=_parse_json(files["reference.json"], "reference.json", where),
        training=_parse_json(files["training.json"], "training.json", where),
        preprocessor=preprocessor,
        model=model,
    )
