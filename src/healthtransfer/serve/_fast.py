"""The service's prediction path: the compiled array form of the bundle where it exists.

:class:`Predictor` compiles the bundle once at start-up (:func:`healthtransfer.bundle._compile.
compile_bundle`, parity-checked against the scikit-learn path within 1e-9). Where a step
cannot be compiled, or parity fails, it keeps the full scikit-learn path and logs one line
with the reason; ``path`` and ``reason`` are shown by ``GET /v1/model`` under ``prediction_path``.

Example
-------
>>> predictor = Predictor(bundle)                     # doctest: +SKIP
>>> predictor.predict_proba([{"age": 61.0}]).shape    # doctest: +SKIP
(1, 2)
"""

from __future__ import annotations

import logging

import numpy as np

__all__ = ["Predictor"]

log = logging.getLogger("healthtransfer.serve")


class Predictor:
    """``predict_proba(records)`` through the compiled path, or the full one with a reason."""

    def __init__(self, bundle, *, compile: bool = True):
        from ..bundle._compile import CompileError, compile_bundle

        self.bundle = bundle
        self.compiled = None
        self.reason: str | None = "compilation disabled" if not compile else None
        if compile:
            try:
                self.compiled = compile_bundle(bundle)
            except CompileError as exc:
                self.reason = str(exc)
            except Exception as exc:  # an unexpected model layout: serve it the slow, sure way
                self.reason = f"{type(exc).__name__} while compiling"
        if self.compiled is None:
            log.warning("prediction path: full scikit-learn path (%s)", self.reason)
        else:
            log.info("prediction path: compiled (%s; parity %.1e)", self.compiled.model_path,
                     self.compiled.parity or 0.0)

    @property
    def path(self) -> str:
        return "compiled" if self.compiled is not None else "full"

    def info(self) -> dict:
        return {"path": self.path, "reason": self.reason,
                "model": self.compiled.model_path if self.compiled is not None else None,
                "parity_max_abs_diff": self.compiled.parity if self.compiled is not None else None}

    def predict_proba(self, records: list[dict]) -> np.ndarray:
        if self.compiled is not None:
            return self.compiled.predict_proba_records(records)
        return self.bundle.predict_proba(records)
