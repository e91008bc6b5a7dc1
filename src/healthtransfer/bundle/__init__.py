"""Deployable bundles: the fitted preprocessing and model with their schema, reference
statistics, metrics, model card and a manifest of sha256 digests. No pickle: scikit-learn
objects go through ``skops.io`` with an exact whitelist of types (:data:`TRUSTED_TYPES`), torch
weights through ``safetensors``, everything else is JSON or Markdown. A bundle can be signed
(Ed25519, :func:`sign_bundle`) and loaded only if a trusted key signed it.

Example
-------
>>> from healthtransfer.bundle import load_bundle  # doctest: +SKIP
>>> b = load_bundle("out/bundle")                  # doctest: +SKIP
>>> b.predict_proba([{"age": 63, "sex": 1, "cp": 1}])  # doctest: +SKIP
"""

from ._load import (TRUSTED_FUNCTIONS, TRUSTED_TYPES, Bundle, BundleError, load_bundle,
                    verify_bundle)
from ._sign import TrustStore, generate_keypair, sign_bundle
from ._write import write_bundle

__all__ = ["TRUSTED_FUNCTIONS", "TRUSTED_TYPES", "Bundle", "BundleError", "TrustStore",
           "export_onnx", "generate_keypair", "inspect_bundle", "load_bundle", "sign_bundle",
           "verify_bundle", "write_bundle"]


def export_onnx(bundle_dir, out_path=None):
    """Write ``<bundle>.onnx`` (see :mod:`healthtransfer.bundle._onnx`)."""
    from ._onnx import export_onnx as _export

    return _export(bundle_dir, out_path)


def inspect_bundle(bundle_dir) -> str:
    """The model card and the input schema of a verified bundle, as Markdown text."""
    import json

    b = load_bundle(bundle_dir)
    lines = [b.card.rstrip(), "", "## Bundle", "",
             f"- Path: {b.path}", f"- Model version: {b.model_version}",
             f"- Written by healthtransfer {b.version}", "", "## Schema (JSON)", "", "```json", "[",
             ",\n".join("  " + json.dumps(f) for f in b.schema["features"]), "]", "```", ""]
    return "\n".join(lines)
