"""Load a bundle, after checking that it is whole, untouched and from a compatible version.

Checks, in order (any failure raises :class:`BundleError` with what and how to fix):

1. ``manifest.json`` exists, parses and names the bundle format;
2. the bundle was written by the same MAJOR.MINOR healthtransfer version;
3. the files on disk are exactly those the manifest lists (none missing, none extra), with
   the recorded sizes (a truncated file is named as such) and sha256 digests;
4. scikit-learn objects load through ``skops.io`` with an explicit list of trusted types,
   each within :data:`ALLOWED_PREFIXES`; anything else is refused, never loaded;
5. torch weights load through ``safetensors`` (tensors only, no code).

No pickle is involved anywhere.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import UserInputError

__all__ = ["Bundle", "BundleError", "load_bundle", "check_trusted_types", "ALLOWED_PREFIXES",
           "FORMAT", "FORMAT_VERSION", "MANIFEST"]

FORMAT = "healthtransfer-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"

# Module prefixes whose types skops may construct when loading. Our own estimators, and
# scikit-learn / numpy / scipy types. Everything else (os, subprocess, builtins.eval, other
# packages) is refused, as are the numpy/scipy corners that touch files or compile code.
ALLOWED_PREFIXES = ("healthtransfer.", "sklearn.", "numpy.", "scipy.sparse.", "scipy.special.")
DENIED_PREFIXES = ("numpy.load", "numpy.save", "numpy.lib.npyio", "numpy.ctypeslib",
                   "numpy.f2py", "numpy.distutils", "numpy.testing", "numpy.fromfile",
                   "numpy.memmap", "numpy.lib.format", "healthtransfer.serve", "healthtransfer.cli")


class BundleError(UserInputError):
    """A bundle that cannot be written or loaded safely."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_trusted_types(types: list[str], where: str) -> list[str]:
    """Return ``types`` if every one is allowed; otherwise raise naming the others."""
    bad = [t for t in types
           if not t.startswith(ALLOWED_PREFIXES) or t.startswith(DENIED_PREFIXES)]
    if bad:
        raise BundleError(
            f"contains types that are not on the trusted list: {sorted(bad)}",
            where=where,
            fix="only healthtransfer, scikit-learn and numpy objects can be stored in a bundle; "
                "refit with a supported model, or do not load a bundle from an untrusted source",
        )
    return list(types)


def _major_minor(v: str) -> tuple[str, ...]:
    return tuple(str(v).split(".")[:2])


def _read_json(path: Path, where: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"cannot read {path.name} ({type(exc).__name__})", where=where,
                          fix="write the bundle again with `healthtransfer run`") from None


def verify_bundle(path: str | Path) -> dict:
    """Check manifest, version and file digests; return the manifest."""
    from .. import __version__

    path = Path(path)
    where = f"bundle {path}"
    if not path.is_dir():
        raise BundleError("is not a directory", where=where,
                          fix="pass the OUT/bundle folder written by `healthtransfer run`")
    mpath = path / MANIFEST
    if not mpath.is_file():
        inner = sorted(p.parent.name for p in path.glob(f"*/{MANIFEST}"))
        raise BundleError("has no manifest.json", where=where,
                          fix=f"a study writes one bundle per target: pass one of {[str(path / t) for t in inner]}"
                          if inner else "pass the bundle folder itself, or write the bundle again")
    manifest = _read_json(mpath, where)
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
    listed = manifest["files"]
    present = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}
    present.discard(MANIFEST)
    missing = sorted(set(listed) - present)
    extra = sorted(present - set(listed))
    if missing:
        raise BundleError(f"is incomplete: missing {missing}", where=where,
                          fix="copy the whole bundle folder again, or write it again")
    if extra:
        raise BundleError(f"contains files the manifest does not list: {extra}", where=where,
                          fix="remove them, or write the bundle again; a bundle must not be "
                              "edited after it is written")
    for name, meta in listed.items():
        if "/" in name and (".." in Path(name).parts):
            raise BundleError("manifest names a path outside the bundle", where=where)
        f = path / name
        size = f.stat().st_size
        if size != meta.get("bytes"):
            kind = "truncated" if size < int(meta.get("bytes") or 0) else "changed"
            raise BundleError(f"file {name} is {kind} ({size} bytes, manifest says "
                              f"{meta.get('bytes')})", where=where,
                              fix="copy the bundle again from its origin, or write it again")
        if sha256_file(f) != meta.get("sha256"):
            raise BundleError(f"file {name} was modified after the bundle was written "
                              "(sha256 does not match the manifest)", where=where,
                              fix="copy the bundle again from its origin, or write it again")
    return manifest


def _skops_load(file: Path, where: str):
    import skops.io as sio

    data = file.read_bytes()
    try:
        untrusted = sio.get_untrusted_types(data=data)
    except Exception as exc:  # malformed archive
        raise BundleError(f"{file.name} is not a valid skops file ({type(exc).__name__})",
                          where=where) from None
    trusted = check_trusted_types(untrusted, f"{where}: {file.name}")
    return sio.loads(data, trusted=trusted)


def _restore_torch(model, path: Path, spec: dict, where: str):
    from safetensors.torch import load_file

    tensors = load_file(str(path / spec["file"]))
    for attr, meta in spec["modules"].items():
        builder = getattr(model, "_build_module", None)
        if attr != "module_" or builder is None:
            raise BundleError(f"cannot rebuild torch module {attr!r} of "
                              f"{type(model).__name__}", where=where)
        module = builder(int(meta["n_in"]), int(meta["n_classes"]))
        prefix = f"{attr}."
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        module.load_state_dict(state, strict=True)
        module.eval()
        setattr(model, attr, module)
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


def load_bundle(path: str | Path) -> Bundle:
    """Verify and load a bundle folder; raises :class:`BundleError` if it is not safe."""
    path = Path(path)
    manifest = verify_bundle(path)
    where = f"bundle {path}"
    preprocessor = _skops_load(path / "preprocessor.skops", where)
    model = _skops_load(path / "model.skops", where)
    torch_spec = manifest.get("torch")
    if torch_spec:
        model = _restore_torch(model, path, torch_spec, where)
    return Bundle(
        path=path,
        manifest=manifest,
        schema=_read_json(path / "schema.json", where),
        card=(path / "model_card.md").read_text(encoding="utf-8"),
        metrics=_read_json(path / "metrics.json", where),
        reference=_read_json(path / "reference.json", where),
        training=_read_json(path / "training.json", where),
        preprocessor=preprocessor,
        model=model,
    )
