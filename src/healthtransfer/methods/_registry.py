"""The catalogue of methods: one :class:`MethodSpec` per name, as listed by
``healthtransfer methods`` and selected by name in a study file.

Each family module exposes a ``METHODS`` list; this module only gathers them, so adding a
method means adding one ``MethodSpec`` next to its class.
"""

from __future__ import annotations

import functools

from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["MethodSpec", "available_methods", "get_method", "make_method"]


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


@functools.lru_cache(maxsize=1)
def _all() -> dict[str, MethodSpec]:
    from . import baselines_registry, deep_registry, feature, instance, model, multisource, relation, scalable

    specs: dict[str, MethodSpec] = {}
    for mod in (baselines_registry, instance, feature, deep_registry, model, relation, multisource, scalable):
        for spec in getattr(mod, "METHODS", []):
            if spec.name in specs:
                raise RuntimeError(f"method name {spec.name!r} registered twice")
            specs[spec.name] = spec
    return specs


def available_methods() -> dict[str, MethodSpec]:
    """Every registered method by name, in family order."""
    return dict(_all())


def get_method(name: str) -> MethodSpec:
    specs = _all()
    if name not in specs:
        import difflib

        close = difflib.get_close_matches(name, specs, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        from ..errors import UserInputError

        raise UserInputError(
            f"unknown method {name!r}{hint}",
            where="methods",
            fix="run `healthtransfer methods` for the list of names",
        )
    return specs[name]


def make_method(name: str, random_state=None, **params):
    """Build the estimator registered under ``name``."""
    return get_method(name).factory(random_state=random_state, **params)
