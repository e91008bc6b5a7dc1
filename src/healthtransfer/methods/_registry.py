"""The catalogue of methods: one :class:`MethodSpec` per name, as listed by
``healthtransfer methods`` and selected by name in a study file.

Each family module exposes a ``METHODS`` list; this module only gathers them, so adding a
method means adding one ``MethodSpec`` next to its class.
"""

from __future__ import annotations

import functools

from ._spec import MethodSpec

__all__ = ["MethodSpec", "available_methods", "get_method", "make_method"]


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
