"""What the registry knows about one method (kept apart from :mod:`._registry`, which imports
every family module, so that family modules can declare their specs without an import circle)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["MethodSpec"]


@dataclass(frozen=True)
class MethodSpec:
    """How to build one named method.

    ``factory(random_state=..., **params)`` returns an unfitted estimator. ``grid`` is a small
    hyper-parameter grid for model selection (a list of ``params`` dicts; empty = defaults).
    ``needs_labels`` means the method is only meaningful when n_t > 0.
    ``max_rows`` is where the method stops being practical (n x n kernels and the like).
    ``uses_reference`` means the method uses the study's external reference score (e.g. APACHE
    IV predicted mortality): the runner appends its logit as the LAST column of ``X`` (NaN
    where missing). It is never an ordinary feature for the other methods.
    """

    name: str
    family: str
    factory: Callable[..., Any]
    uses_target: str
    description: str
    needs_labels: bool = False
    deep: bool = False
    multiclass: bool = True
    max_rows: int | None = None
    grid: tuple[dict, ...] = field(default_factory=tuple)
    skada_counterpart: str | None = None
    uses_reference: bool = False
    outcome: str = "classification"  # or "survival" / "regression": the target the method takes
